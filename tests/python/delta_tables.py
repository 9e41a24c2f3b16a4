#!/usr/bin/env python3
"""Delta Lake tables written by the `deltalake` package, read through Quiver.

Usage:
    python delta_tables.py write DIR
    python delta_tables.py check DIR FLIGHT_URI

write: makes tables under DIR with the `deltalake` package (1.6): `events` (three
appends), `by_region` (partitioned by region), `replaced` (written, then
overwritten), `evolving` (a column added by a later append, schema_mode="merge")
and `trimmed` (rows deleted).

check: every table read through Quiver's Flight SQL port (ADBC) equals what the
package itself reads back; a filter on the partition column, a join of two Delta
tables, time travel to a version and to a commit's time (`lake."events@v1"`,
`lake."events@<time>"`), then a commit made while the server runs is visible to
the next query (the source has refresh_secs = 0), and a table created while it
runs is listed within seconds. system.snapshots agrees with the package on each
table's version and files; a table with a corrupt log fails alone, naming itself.

Prints "DELTA OK" and exits 0 on success.
"""

import os
import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake


def fail(msg: str) -> None:
    print(f"DELTA FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def write(root: str) -> None:
    events = lambda lo, hi: pa.table({"id": pa.array(range(lo, hi), pa.int64()),
                                       "name": [f"e{i}" for i in range(lo, hi)]})
    for lo in (0, 10, 20):
        write_deltalake(os.path.join(root, "events"), events(lo, lo + 10), mode="append")
    regions = pa.table({"id": pa.array(range(12), pa.int64()),
                        "region": ["eu", "us", "asia"] * 4,
                        "amount": pa.array([float(i) * 1.5 for i in range(12)])})
    write_deltalake(os.path.join(root, "by_region"), regions, partition_by=["region"])
    write_deltalake(os.path.join(root, "replaced"), events(0, 5))
    write_deltalake(os.path.join(root, "replaced"), events(100, 103), mode="overwrite")
    write_deltalake(os.path.join(root, "evolving"), pa.table({"a": pa.array([1, 2], pa.int64()), "b": ["x", "y"]}))
    write_deltalake(os.path.join(root, "evolving"),
                    pa.table({"a": pa.array([3], pa.int64()), "b": ["z"], "c": pa.array([30.5])}),
                    mode="append", schema_mode="merge")
    write_deltalake(os.path.join(root, "trimmed"), events(0, 10))
    DeltaTable(os.path.join(root, "trimmed")).delete("id < 3")
    # A table whose log is not JSON: it fails alone.
    os.makedirs(os.path.join(root, "broken", "_delta_log"))
    with open(os.path.join(root, "broken", "_delta_log", "00000000000000000000.json"), "w") as f:
        f.write("this is not a Delta log\n")
    print(f"   wrote events, by_region, replaced, evolving, trimmed (and a broken one) under {root}")


def rows(table: pa.Table, order: list[str]) -> list[tuple]:
    table = table.sort_by([(c, "ascending") for c in order])
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(zip(*columns))


def check(root: str, uri: str) -> None:
    with flightsql.connect(uri, autocommit=True) as conn:
        def quiver(sql: str) -> pa.Table:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetch_arrow_table()

        tables = {"events": ["id"], "by_region": ["id"], "replaced": ["id"], "evolving": ["a"], "trimmed": ["id"]}  # noqa: E501
        for name, order in tables.items():
            own = DeltaTable(os.path.join(root, name)).to_pyarrow_table()
            columns = ", ".join(f'"{c}"' for c in own.column_names)
            got = quiver(f"SELECT {columns} FROM quiver.lake.{name}")
            if rows(got, order) != rows(own, order):
                fail(f"{name}: Quiver reads {rows(got, order)[:5]}…, deltalake {rows(own, order)[:5]}…")
            print(f"   {name}: {own.num_rows} rows equal deltalake's")
        evolving = rows(quiver("SELECT a, c FROM quiver.lake.evolving"), ["a"])
        if evolving != [(1, None), (2, None), (3, 30.5)]:
            fail(f"a column added later reads NULL from older files: {evolving}")
        eu = quiver("SELECT count(*) AS n, sum(amount) AS s FROM quiver.lake.by_region WHERE region = 'eu'").to_pylist()
        if eu != [{"n": 4, "s": 0 + 4.5 + 9.0 + 13.5}]:
            fail(f"partition filter: {eu}")
        joined = quiver("SELECT count(*) AS n FROM quiver.lake.events e JOIN quiver.lake.by_region r ON e.id = r.id").to_pylist()
        if joined != [{"n": 12}]:
            fail(f"join of two Delta tables: {joined}")
        # Time travel: a version, and the time of a commit.
        v0 = quiver('SELECT count(*) AS n FROM quiver.lake."events@v0"').to_pylist()
        v1 = quiver('SELECT count(*) AS n FROM quiver.lake."events@v1"').to_pylist()
        if v0 != [{"n": 10}] or v1 != [{"n": 20}]:
            fail(f"events at versions 0 and 1: {v0} {v1}")
        history = {h["version"]: h["timestamp"] for h in DeltaTable(os.path.join(root, "events")).history()}
        import datetime
        at = datetime.datetime.fromtimestamp(history[1] / 1000, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        by_time = quiver(f'SELECT count(*) AS n FROM quiver.lake."events@{at}"').to_pylist()
        if by_time != [{"n": 20}]:
            fail(f"events at {at} (version 1's commit): {by_time}")
        replaced_before = rows(quiver('SELECT id FROM quiver.lake."replaced@v0"'), ["id"])
        if replaced_before != [(i,) for i in range(5)]:
            fail(f"replaced before its overwrite: {replaced_before}")
        try:
            quiver('SELECT * FROM quiver.lake."events@yesterday"')
            fail("a bad time-travel suffix was accepted")
        except Exception as e:
            if "neither a version" not in str(e):
                fail(f"a bad time-travel suffix: {e}")
        print(f"   time travel: versions 0 and 1, {at}, and an overwritten table's first version")
        # A commit while the server runs: the next query sees it.
        write_deltalake(os.path.join(root, "events"),
                        pa.table({"id": pa.array([99], pa.int64()), "name": ["late"]}), mode="append")
        late = quiver("SELECT count(*) AS n, max(id) AS m FROM quiver.lake.events").to_pylist()
        if late != [{"n": 31, "m": 99}]:
            fail(f"a new commit is not visible: {late}")
        # system.snapshots: each table's version, files and bytes, as the package sees them.
        snaps = {r["table"]: r for r in quiver(
            "SELECT \"table\", version, files, bytes, committed_at, error FROM quiver.system.snapshots").to_pylist()}
        for name in ("events", "replaced", "trimmed"):
            own = DeltaTable(os.path.join(root, name))
            want = (own.version(), len(own.file_uris()))
            got = (snaps.get(name, {}).get("version"), snaps.get(name, {}).get("files"))
            if got != want or not snaps[name]["bytes"] or snaps[name]["committed_at"] is None:
                fail(f"system.snapshots for {name}: {snaps.get(name)}, deltalake says version and files {want}")
        if not snaps.get("broken", {}).get("error") or "broken" not in snaps["broken"]["error"]:
            fail(f"system.snapshots for the broken table: {snaps.get('broken')}")
        # The broken table fails alone, naming itself; the listing and other tables still work.
        try:
            quiver("SELECT * FROM quiver.lake.broken")
            fail("a table with a corrupt log was read")
        except Exception as e:
            if "broken" not in str(e):
                fail(f"the error does not name the table: {e}")
        listed = quiver("SELECT table_name FROM information_schema.tables WHERE table_schema = 'lake' ORDER BY 1").column(0).to_pylist()
        if "events" not in listed or "broken" not in listed:
            fail(f"listing with a broken table: {listed}")
        print(f"   system.snapshots: {snaps['events']['version']=}, {snaps['events']['files']=}; the broken table fails alone")
        # A table created while the server runs is listed within seconds.
        write_deltalake(os.path.join(root, "newcomer"), pa.table({"x": pa.array([1, 2, 3], pa.int64())}))
        import time
        deadline = time.time() + 30
        while True:
            try:
                n = quiver("SELECT count(*) AS n FROM quiver.lake.newcomer").to_pylist()
                if n == [{"n": 3}]:
                    break
                fail(f"newcomer: {n}")
            except Exception as e:
                if time.time() > deadline:
                    fail(f"a table created while the server runs is not listed: {e}")
                time.sleep(0.5)
        print("   partition filter, join, a commit and a new table made while the server runs all read right")
    print("DELTA OK")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
