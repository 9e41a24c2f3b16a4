"""Iceberg tables written by pyiceberg (SqlCatalog on SQLite) and read through Quiver.

Usage:
  iceberg_tables.py write <root>
      Creates <root>/catalog.db and <root>/warehouse/lake.db/<table> with pyiceberg:
      events (three appends), by_day (partitioned by day(ts) and bucket[4](id)),
      evolving (a column added and one renamed between appends), trimmed (a delete),
      and a table whose metadata file is corrupt.
  iceberg_tables.py check <root> <grpc-uri>
      Compares every table read through Quiver (sources `ice`: the SQL catalog,
      `icefolder`: the warehouse folder) with pyiceberg's own scan; then pruning
      (EXPLAIN lists fewer files for a day or bucket filter), time travel to a
      snapshot id and to a commit time, a commit made while the server runs,
      system.snapshots and a corrupt table failing alone.

Prints "ICEBERG OK" and exits 0 on success.
"""

import datetime
import os
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import BucketTransform, DayTransform
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType


def fail(msg: str) -> None:
    print(f"ICEBERG FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def catalog(root: str) -> SqlCatalog:
    return SqlCatalog("default", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")


def events(lo: int, hi: int) -> pa.Table:
    return pa.table({"id": pa.array(range(lo, hi), pa.int64()), "name": [f"e{i}" for i in range(lo, hi)]})


def write(root: str) -> None:
    os.makedirs(os.path.join(root, "warehouse"), exist_ok=True)
    cat = catalog(root)
    cat.create_namespace("lake")
    schema = Schema(NestedField(1, "id", LongType()), NestedField(2, "name", StringType()))
    t = cat.create_table("lake.events", schema=schema)
    for lo in (0, 10, 20):
        t.append(events(lo, lo + 10))
        # Snapshot times are milliseconds: keep commits apart for time travel.
        time.sleep(0.05)

    day_schema = Schema(NestedField(1, "id", LongType()), NestedField(2, "ts", TimestampType()),
                        NestedField(3, "amount", DoubleType()))
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="ts_day"),
                         PartitionField(source_id=1, field_id=1001, transform=BucketTransform(4), name="id_bucket"))
    by_day = cat.create_table("lake.by_day", schema=day_schema, partition_spec=spec)
    start = datetime.datetime(2026, 11, 1)
    by_day.append(pa.table({
        "id": pa.array(range(40), pa.int64()),
        "ts": pa.array([start + datetime.timedelta(hours=6 * i) for i in range(40)], pa.timestamp("us")),
        "amount": pa.array([i * 1.25 for i in range(40)]),
    }))

    evolving = cat.create_table("lake.evolving", schema=Schema(NestedField(1, "a", LongType()),
                                                                 NestedField(2, "b", StringType())))
    evolving.append(pa.table({"a": pa.array([1, 2], pa.int64()), "b": ["x", "y"]}))
    with evolving.update_schema() as u:
        u.add_column("c", DoubleType())
        u.rename_column("b", "label")
    evolving.append(pa.table({"a": pa.array([3], pa.int64()), "label": ["z"], "c": pa.array([30.5])}))

    trimmed = cat.create_table("lake.trimmed", schema=schema)
    trimmed.append(events(0, 10))
    trimmed.delete(delete_filter="id < 3")

    broken = cat.create_table("lake.broken", schema=schema)
    broken.append(events(0, 2))
    with open(broken.metadata_location.removeprefix("file://"), "w") as f:
        f.write("this is not Iceberg metadata\n")
    print(f"   wrote events, by_day, evolving, trimmed (and a broken one) under {root}")


def rows(table: pa.Table, order: list[str]) -> list[tuple]:
    table = table.sort_by([(c, "ascending") for c in order])
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(zip(*columns))


def check(root: str, uri: str) -> None:
    cat = catalog(root)
    with flightsql.connect(uri, autocommit=True) as conn:
        def quiver(sql: str) -> pa.Table:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetch_arrow_table()

        def files_scanned(sql: str) -> int:
            plan = "\n".join(str(v) for v in quiver(f"EXPLAIN {sql}").column(1).to_pylist())
            return plan.count(".parquet")

        tables = {"events": ["id"], "by_day": ["id"], "evolving": ["a"], "trimmed": ["id"]}
        for source in ("ice", "icefolder"):
            for name, order in tables.items():
                own = cat.load_table(f"lake.{name}").scan().to_arrow()
                columns = ", ".join(f'"{c}"' for c in own.column_names)
                got = quiver(f"SELECT {columns} FROM quiver.{source}.{name}")
                if rows(got, order) != rows(own, order):
                    fail(f"{source}.{name}: quiver {rows(got, order)} != pyiceberg {rows(own, order)}")
        print(f"   {len(tables)} tables through the SQL catalog and the warehouse folder equal pyiceberg's scans")
        ev = quiver("SELECT a, label, c FROM quiver.ice.evolving ORDER BY a").to_pylist()
        if ev != [{"a": 1, "label": "x", "c": None}, {"a": 2, "label": "y", "c": None},
                  {"a": 3, "label": "z", "c": 30.5}]:
            fail(f"renamed and added columns: {ev}")

        # Pruning: a day filter and a bucket filter each scan fewer files than the whole table.
        by_day = cat.load_table("lake.by_day")
        all_files = len(list(by_day.scan().plan_files()))
        one_day = "SELECT count(*) AS n, sum(amount) AS s FROM quiver.ice.by_day " \
                  "WHERE ts >= TIMESTAMP '2026-11-03 00:00:00' AND ts < TIMESTAMP '2026-11-04 00:00:00'"
        got = quiver(one_day).to_pylist()
        own = by_day.scan(row_filter="ts >= '2026-11-03T00:00:00' and ts < '2026-11-04T00:00:00'").to_arrow()
        if got != [{"n": own.num_rows, "s": sum(own.column("amount").to_pylist())}] or own.num_rows != 4:
            fail(f"day filter: {got}, pyiceberg reads {own.num_rows} rows")
        # Quiver keeps no more files than pyiceberg's own planning does.
        day_files = files_scanned(one_day)
        theirs = len(list(by_day.scan(row_filter="ts >= '2026-11-03T00:00:00' and ts < '2026-11-04T00:00:00'")
                          .plan_files()))
        if not 0 < day_files <= theirs < all_files:
            fail(f"day pruning: {day_files} files for one day (pyiceberg plans {theirs}), {all_files} in all")
        one_id = "SELECT id, amount FROM quiver.ice.by_day WHERE id = 7"
        if quiver(one_id).to_pylist() != [{"id": 7, "amount": 8.75}]:
            fail(f"bucket filter: {quiver(one_id).to_pylist()}")
        id_files = files_scanned(one_id)
        theirs_id = len(list(by_day.scan(row_filter="id = 7").plan_files()))
        if not 0 < id_files <= theirs_id < all_files:
            fail(f"bucket pruning: {id_files} files for id = 7 (pyiceberg plans {theirs_id}), {all_files} in all")
        print(f"   pruning: {day_files} of {all_files} files for one day, {id_files} for one id (pyiceberg: {theirs}, {theirs_id})")

        # Time travel: a snapshot id, and the time of a commit.
        ev_table = cat.load_table("lake.events")
        snaps = sorted(ev_table.snapshots(), key=lambda s: s.timestamp_ms)
        first = quiver(f'SELECT count(*) AS n FROM quiver.ice."events@v{snaps[0].snapshot_id}"').to_pylist()
        if first != [{"n": 10}] or ev_table.scan(snapshot_id=snaps[0].snapshot_id).to_arrow().num_rows != 10:
            fail(f"events at its first snapshot: {first}")
        at_ms = snaps[1].timestamp_ms + 1
        at = datetime.datetime.fromtimestamp(at_ms / 1000, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        by_time = quiver(f'SELECT count(*) AS n FROM quiver.ice."events@{at}"').to_pylist()
        if by_time != [{"n": 20}]:
            fail(f"events at {at} (the second snapshot's commit): {by_time}")
        try:
            quiver('SELECT * FROM quiver.ice."events@v12345"')
            fail("a snapshot that does not exist was read")
        except Exception as e:
            if "no snapshot 12345" not in str(e):
                fail(f"a missing snapshot: {e}")
        print(f"   time travel: snapshot {snaps[0].snapshot_id}, {at}")

        # A commit while the server runs: the next query sees it.
        ev_table.append(events(99, 100))
        late = quiver("SELECT count(*) AS n, max(id) AS m FROM quiver.ice.events").to_pylist()
        if late != [{"n": 31, "m": 99}]:
            fail(f"a new commit is not visible: {late}")

        # system.snapshots: each table's snapshot id, files and bytes, as pyiceberg sees them.
        snapshots = {(r["schema"], r["table"]): r for r in quiver(
            "SELECT \"schema\", \"table\", format, version, files, bytes, committed_at, error "
            "FROM quiver.system.snapshots").to_pylist()}
        for name in ("events", "by_day", "trimmed"):
            own = cat.load_table(f"lake.{name}")
            want = (own.current_snapshot().snapshot_id, len(list(own.scan().plan_files())), "iceberg")
            r = snapshots.get(("ice", name), {})
            if (r.get("version"), r.get("files"), r.get("format")) != want or not r["bytes"] or r["committed_at"] is None:
                fail(f"system.snapshots for {name}: {r}, pyiceberg says {want}")
        broken = snapshots.get(("ice", "broken"), {})
        if not broken.get("error") or "broken" not in broken["error"]:
            fail(f"system.snapshots for the broken table: {broken}")
        try:
            quiver("SELECT * FROM quiver.ice.broken")
            fail("a table with corrupt metadata was read")
        except Exception as e:
            if "broken" not in str(e):
                fail(f"the error does not name the table: {e}")
        listed = quiver("SELECT table_name FROM information_schema.tables WHERE table_schema = 'ice' "
                        "ORDER BY 1").column(0).to_pylist()
        if listed != ["broken", "by_day", "events", "evolving", "trimmed"]:
            fail(f"listing: {listed}")
        print("   a new commit is visible at once; system.snapshots agrees with pyiceberg; the broken table fails alone")

        # Columns on the catalog doors, a view over an Iceberg table, and an accelerated copy of one.
        cols = quiver("SELECT column_name, data_type FROM information_schema.columns "
                      "WHERE table_schema = 'ice' AND table_name = 'evolving' ORDER BY ordinal_position").to_pylist()
        if [c["column_name"] for c in cols] != ["a", "label", "c"]:
            fail(f"information_schema.columns of evolving: {cols}")
        quiver("CREATE VIEW quiver.ice.late_events AS SELECT id FROM quiver.ice.events WHERE id >= 20")
        if quiver("SELECT count(*) AS n FROM quiver.ice.late_events").to_pylist() != [{"n": 11}]:
            fail("a view over an Iceberg table")
        quiver("ALTER TABLE quiver.ice.by_day SET (accelerated = true)")
        copy = quiver("SELECT count(*) AS n, sum(amount) AS s FROM quiver.ice.by_day").to_pylist()
        own = cat.load_table("lake.by_day").scan().to_arrow()
        state = quiver("SELECT state, \"rows\" FROM quiver.system.accelerations "
                       "WHERE dataset = 'quiver.ice.by_day'").to_pylist()
        if copy != [{"n": own.num_rows, "s": sum(own.column("amount").to_pylist())}] or state != [{"state": "ready", "rows": 40}]:
            fail(f"accelerated copy of an Iceberg table: {copy}, {state}")
        print("   columns listed, a view and an accelerated copy over Iceberg tables read right")
    print("ICEBERG OK")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        fail(f"usage: {sys.argv[0]} write <root> | check <root> <grpc-uri>")
