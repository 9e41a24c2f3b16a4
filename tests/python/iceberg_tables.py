"""Iceberg tables written by pyiceberg (SqlCatalog on SQLite) and read through Quiver.

Usage:
  iceberg_tables.py write <root>
      Creates <root>/catalog.db and <root>/warehouse/lake.db/<table> with pyiceberg:
      events (three appends), by_day (partitioned by day(ts) and bucket[4](id)),
      evolving (a column added and one renamed between appends), trimmed (a delete),
      posdel and mor (merge-on-read: position and equality delete files, written
      with pyarrow and committed through pyiceberg's own snapshot producer, since
      pyiceberg itself deletes copy-on-write), and a table whose metadata file is
      corrupt.
  iceberg_tables.py check <root> <grpc-uri>
      Compares every table read through Quiver (sources `ice`: the SQL catalog,
      `icefolder`: the warehouse folder) with pyiceberg's own scan; then pruning
      (EXPLAIN lists fewer files for a day or bucket filter), time travel to a
      snapshot id and to a commit time, a commit made while the server runs,
      system.snapshots, merge-on-read deletes (position deletes equal to pyiceberg's
      scan; equality deletes by partition and sequence number, NULL equal to NULL)
      and a corrupt table failing alone.

Prints "ICEBERG OK" and exits 0 on success.
"""

import datetime
import os
import sys
import time

import uuid

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestContent, ManifestWriterV2
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _FastAppendFiles
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
from pyiceberg.typedef import Record
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType


def fail(msg: str) -> None:
    print(f"ICEBERG FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def catalog(root: str) -> SqlCatalog:
    return SqlCatalog("default", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")


def events(lo: int, hi: int) -> pa.Table:
    return pa.table({"id": pa.array(range(lo, hi), pa.int64()), "name": [f"e{i}" for i in range(lo, hi)]})


class _DeleteManifestWriter(ManifestWriterV2):
    """A manifest of delete files (pyiceberg writes only data manifests)."""

    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


class _AddDeleteFiles(_FastAppendFiles):
    """pyiceberg's fast append, writing the added files into a delete manifest."""

    def new_manifest_writer(self, spec):  # noqa: ANN001, ANN201
        return _DeleteManifestWriter(spec, self.schema(), self.new_manifest_output(), self._snapshot_id,
                                     self._compression)


def commit_deletes(table, files: list[DataFile]) -> None:  # noqa: ANN001
    with table.transaction() as tx:
        producer = _AddDeleteFiles(operation=Operation.DELETE, transaction=tx, io=table.io)
        for f in files:
            producer.append_data_file(f)
        producer.commit()


def delete_file(table, rows: pa.Table, partition: tuple, equality_ids: list[int] | None = None) -> DataFile:  # noqa: ANN001
    """Writes `rows` as a delete file of `table` and describes it for a manifest."""
    path = f"{table.location()}/data/delete-{uuid.uuid4()}.parquet"
    pq.write_table(rows, path.removeprefix("file://"))
    return DataFile.from_args(
        content=DataFileContent.EQUALITY_DELETES if equality_ids else DataFileContent.POSITION_DELETES,
        file_path=path, file_format=FileFormat.PARQUET, partition=Record(*partition),
        record_count=rows.num_rows, file_size_in_bytes=os.path.getsize(path.removeprefix("file://")),
        equality_ids=equality_ids, spec_id=table.spec().spec_id)


def position_deletes(table, where: dict[str, list[int]], partition: tuple = ()) -> DataFile:  # noqa: ANN001
    """A position delete file deleting, in each data file, the rows whose id is listed."""
    paths, positions = [], []
    for task in table.scan().plan_files():
        ids = pq.read_table(task.file.file_path.removeprefix("file://")).column("id").to_pylist()
        for pos, i in enumerate(ids):
            if i in where.get(task.file.file_path, []) or i in where.get("*", []):
                paths.append(task.file.file_path)
                positions.append(pos)
    schema = pa.schema([pa.field("file_path", pa.string(), False, {"PARQUET:field_id": "2147483546"}),
                        pa.field("pos", pa.int64(), False, {"PARQUET:field_id": "2147483545"})])
    return delete_file(table, pa.table([paths, positions], schema=schema), partition)


def write_merge_on_read(cat: SqlCatalog) -> None:
    # Position deletes only, in two data files: pyiceberg reads these, so they are compared.
    posdel = cat.create_table("lake.posdel", schema=Schema(NestedField(1, "id", LongType()),
                                                           NestedField(2, "name", StringType())))
    posdel.append(events(0, 100))
    posdel.append(events(100, 150))
    commit_deletes(posdel, [position_deletes(posdel, {"*": [0, 5, 50, 99, 103]})])
    posdel.append(events(150, 160))

    # Both kinds in a table partitioned by category: an equality delete applies only
    # within its partition and only to rows committed before it.
    schema = Schema(NestedField(1, "id", LongType()), NestedField(2, "category", StringType()),
                    NestedField(3, "name", StringType()))
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="category"))
    mor = cat.create_table("lake.mor", schema=schema, partition_spec=spec)
    mor.append(pa.table({
        "id": pa.array(range(12), pa.int64()),
        "category": ["a" if i % 2 == 0 else "b" for i in range(12)],
        "name": [None if i == 10 else f"n{i}" for i in range(12)],
    }))
    a_file = next(t.file.file_path for t in mor.scan().plan_files() if t.file.partition[0] == "a")
    id_field = pa.field("id", pa.int64(), True, {"PARQUET:field_id": "1"})
    name_field = pa.field("name", pa.string(), True, {"PARQUET:field_id": "3"})
    commit_deletes(mor, [
        position_deletes(mor, {a_file: [0, 4]}, ("a",)),
        # ids 3 (in b) and 6 (in a): only 3 goes, the delete is b's.
        delete_file(mor, pa.table([pa.array([3, 6], pa.int64())], schema=pa.schema([id_field])), ("b",), [1]),
        # name NULL (id 10, in a): NULL equals NULL for equality deletes.
        delete_file(mor, pa.table([pa.array([None], pa.string())], schema=pa.schema([name_field])), ("a",), [3]),
    ])
    # Committed after the deletes: a new id 3 stays.
    mor.append(pa.table({"id": pa.array([3, 20], pa.int64()), "category": ["b", "a"], "name": ["again", "n20"]}))


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

    write_merge_on_read(cat)

    broken = cat.create_table("lake.broken", schema=schema)
    broken.append(events(0, 2))
    with open(broken.metadata_location.removeprefix("file://"), "w") as f:
        f.write("this is not Iceberg metadata\n")
    print(f"   wrote events, by_day, evolving, trimmed, posdel, mor (and a broken one) under {root}")


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

        tables = {"events": ["id"], "by_day": ["id"], "evolving": ["a"], "trimmed": ["id"], "posdel": ["id"]}
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

        # Merge-on-read: position deletes as pyiceberg applies them (compared above), the
        # count not taken from file statistics, and equality deletes by the spec's rules.
        posdel = cat.load_table("lake.posdel")
        want = posdel.scan().to_arrow().num_rows
        got = quiver("SELECT count(*) AS n FROM quiver.ice.posdel").to_pylist()
        if got != [{"n": want}] or want != 155:
            fail(f"posdel count: {got}, pyiceberg reads {want} (want 155)")
        got = quiver("SELECT id FROM quiver.ice.posdel WHERE id >= 98 ORDER BY id LIMIT 4").column(0).to_pylist()
        if got != [98, 100, 101, 102]:
            fail(f"posdel with a filter and a limit: {got}")
        for source in ("ice", "icefolder"):
            got = quiver(f"SELECT id, category, name FROM quiver.{source}.mor ORDER BY id").to_pylist()
            want = [(1, "b", "n1"), (2, "a", "n2"), (3, "b", "again"), (5, "b", "n5"), (6, "a", "n6"),
                    (7, "b", "n7"), (8, "a", "n8"), (9, "b", "n9"), (11, "b", "n11"), (20, "a", "n20")]
            if [(r["id"], r["category"], r["name"]) for r in got] != want:
                fail(f"{source}.mor with position and equality deletes: {got}")
        # Only some columns, none of them an equality column; and a partition filter.
        got = quiver("SELECT category, count(*) AS n FROM quiver.ice.mor GROUP BY category ORDER BY 1").to_pylist()
        if got != [{"category": "a", "n": 4}, {"category": "b", "n": 6}]:
            fail(f"mor by category: {got}")
        got = quiver("SELECT count(*) AS n FROM quiver.ice.mor WHERE category = 'b'").to_pylist()
        if got != [{"n": 6}]:
            fail(f"mor in partition b: {got}")
        plan = "\n".join(str(v) for v in quiver("EXPLAIN SELECT id FROM quiver.ice.mor").column(1).to_pylist())
        if "IcebergDeletesExec" not in plan:
            fail(f"no deletes node in the plan:\n{plan}")
        print("   merge-on-read: position deletes equal pyiceberg's scan, equality deletes by partition and "
              "sequence number")

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
        if listed != ["broken", "by_day", "events", "evolving", "mor", "posdel", "trimmed"]:
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
