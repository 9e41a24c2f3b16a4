#!/usr/bin/env python3
"""Delta Lake tables written by the `deltalake` package, read through Quiver.

Usage:
    python delta_tables.py write DIR
    python delta_tables.py check DIR FLIGHT_URI

write: makes tables under DIR with the `deltalake` package (1.6): `events` (three
appends), `by_region` (partitioned by region), `replaced` (written, then
overwritten), `evolving` (a column added by a later append, schema_mode="merge"),
`trimmed` (rows deleted) and `mapped` (column mapping by name, a column with a
space in its name).

check: every table read through Quiver's Flight SQL port (ADBC) equals what the
package itself reads back; a filter on the partition column, a join of two Delta
tables, which scan each table gets (a plain Parquet scan, or deltalake's own for
the column-mapped one), time travel to a version and to a commit's time (`lake."events@v1"`,
`lake."events@<time>"`), then a commit made while the server runs is visible to
the next query (the source has refresh_secs = 0), and a table created while it
runs is listed within seconds. system.snapshots agrees with the package on each
table's version and files; a table with a corrupt log fails alone, naming itself.

Prints "DELTA OK" and exits 0 on success.
"""

import datetime
import os
import sys
import time

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
        # Time travel by timestamp goes by the commit file's modification time, which
        # follows the commit's own timestamp by a few milliseconds: keep commits apart.
        time.sleep(0.2)
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
    # Files whose columns have physical names: read through deltalake's own scan.
    write_deltalake(os.path.join(root, "mapped"),
                    pa.table({"id": pa.array([1, 2, 3], pa.int64()), "my col": ["a", "b", "c"]}),
                    configuration={"delta.columnMapping.mode": "name", "delta.minReaderVersion": "2",
                                   "delta.minWriterVersion": "5"})
    # A table whose log is not JSON: it fails alone.
    os.makedirs(os.path.join(root, "broken", "_delta_log"))
    with open(os.path.join(root, "broken", "_delta_log", "00000000000000000000.json"), "w") as f:
        f.write("this is not a Delta log\n")
    print(f"   wrote events, by_region, replaced, evolving, trimmed, mapped (and a broken one) under {root}")


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

        tables = {"events": ["id"], "by_region": ["id"], "replaced": ["id"], "evolving": ["a"], "trimmed": ["id"]}
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
        # Which scan: plain Parquet (one partition's files left), or deltalake's for column mapping.
        def plan(sql: str) -> str:
            return "\n".join(str(v) for v in quiver(f"EXPLAIN {sql}").column(1).to_pylist())
        eu_plan = plan("SELECT sum(amount) FROM quiver.lake.by_region WHERE region = 'eu'")
        if "DeltaScanExec" in eu_plan or "DataSourceExec" not in eu_plan or "region=eu" not in eu_plan \
                or "region=us" in eu_plan:
            fail(f"a plain partitioned table is not one pruned Parquet scan:\n{eu_plan}")
        if "DeltaScanExec" not in plan("SELECT * FROM quiver.lake.mapped"):
            fail("the column-mapped table is not read by deltalake's scan")
        # deltalake 1.6's own pyarrow read-back of a column-mapped table gives NULLs,
        # so the rows it was written with are the reference.
        mapped = rows(quiver('SELECT id, "my col" FROM quiver.lake.mapped'), ["id"])
        if mapped != [(1, "a"), (2, "b"), (3, "c")]:
            fail(f"the column-mapped table: {mapped}")
        print("   plain tables are Parquet scans pruned by partition; the column-mapped one uses deltalake's scan")
        joined = quiver("SELECT count(*) AS n FROM quiver.lake.events e JOIN quiver.lake.by_region r ON e.id = r.id").to_pylist()
        if joined != [{"n": 12}]:
            fail(f"join of two Delta tables: {joined}")
        # Time travel: a version, and the time of a commit.
        v0 = quiver('SELECT count(*) AS n FROM quiver.lake."events@v0"').to_pylist()
        v1 = quiver('SELECT count(*) AS n FROM quiver.lake."events@v1"').to_pylist()
        if v0 != [{"n": 10}] or v1 != [{"n": 20}]:
            fail(f"events at versions 0 and 1: {v0} {v1}")
        history = {h["version"]: h["timestamp"] for h in DeltaTable(os.path.join(root, "events")).history()}
        # 100 ms after version 1's commit, well before version 2's.
        at_ms = history[1] + 100
        at = datetime.datetime.fromtimestamp(at_ms / 1000, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        by_time = quiver(f'SELECT count(*) AS n FROM quiver.lake."events@{at}"').to_pylist()
        theirs = DeltaTable(os.path.join(root, "events"))
        theirs.load_as_version(datetime.datetime.fromtimestamp(at_ms / 1000, datetime.timezone.utc))
        if by_time != [{"n": 20}] or theirs.version() != 1:
            fail(f"events at {at} (version 1's commit): {by_time}, deltalake reads version {theirs.version()}")
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
            "SELECT \"table\", version, files, bytes, committed_at, error FROM quiver.system.snapshots "
            "WHERE \"schema\" = 'lake'").to_pylist()}
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
        writes(root, quiver)
        cached_answers(root, quiver)
    print("DELTA OK")


def writes(root: str, quiver) -> None:
    """Quiver's commits (source `lakew`: writable, refresh_secs = 6), read back by deltalake."""
    made = os.path.join(root, "made")
    n = quiver("CREATE TABLE quiver.lakew.made AS SELECT id, name FROM quiver.lakew.events WHERE id < 5").to_pylist()
    own = DeltaTable(made)
    if n != [{"count": 5}] or own.version() != 0 or rows(own.to_pyarrow_table(), ["id"]) != [(i, f"e{i}") for i in range(5)]:
        fail(f"CREATE TABLE AS: {n}, deltalake reads version {own.version()}: {own.to_pyarrow_table().to_pylist()}")
    if quiver("SELECT count(*) AS n FROM quiver.lakew.made").to_pylist() != [{"n": 5}]:
        fail("the created table is not readable at once")
    quiver("INSERT INTO quiver.lakew.made VALUES (100, 'x'), (101, 'y')")
    own = DeltaTable(made)
    # refresh_secs = 6, yet the writer's next query sees its own commit.
    got = quiver("SELECT count(*) AS n FROM quiver.lakew.made").to_pylist()
    if own.version() != 1 or own.to_pyarrow_table().num_rows != 7 or got != [{"n": 7}]:
        fail(f"INSERT: deltalake version {own.version()}, {own.to_pyarrow_table().num_rows} rows; quiver {got}")
    quiver("INSERT OVERWRITE quiver.lakew.made SELECT id, name FROM quiver.lakew.events WHERE id >= 98")
    own = DeltaTable(made)
    if own.version() != 2 or rows(own.to_pyarrow_table(), ["id"]) != [(99, "late")]:
        fail(f"INSERT OVERWRITE: version {own.version()}: {own.to_pyarrow_table().to_pylist()}")
    try:
        quiver("INSERT INTO quiver.lakew.made SELECT CAST('not a number' AS BIGINT), 'z'")
        fail("a failing INSERT succeeded")
    except Exception as e:
        if "not a number" not in str(e) and "Cast" not in str(e) and "cast" not in str(e):
            fail(f"a failing INSERT: {e}")
    if DeltaTable(made).version() != 2:
        fail(f"a failed INSERT committed: version {DeltaTable(made).version()}")
    try:
        quiver("INSERT INTO quiver.lake.made VALUES (1, 'a')")
        fail("a write to a read-only Delta source succeeded")
    except Exception as e:
        if "read-only" not in str(e):
            fail(f"a write to a read-only Delta source: {e}")
    print("   CREATE TABLE AS, INSERT, INSERT OVERWRITE committed one version each; a failed INSERT committed nothing")


def cached_answers(root: str, quiver) -> None:
    """The results cache is on: a commit made elsewhere drops the answers that read the table."""
    ask = "SELECT count(*) AS n FROM quiver.lakew.events"
    first = quiver(ask).to_pylist()
    if quiver(ask).to_pylist() != first:
        fail("a repeated query changed without a commit")
    write_deltalake(os.path.join(root, "events"), events_rows(200, 203), mode="append")
    deadline = time.time() + 30
    while quiver(ask).to_pylist() == first:
        if time.time() > deadline:
            fail(f"a cached answer outlived a new commit: still {first}")
        time.sleep(0.5)
    # A source with refresh_secs = 0 is never answered from the cache.
    live = "SELECT count(*) AS n FROM quiver.lake.events"
    before = quiver(live).to_pylist()
    write_deltalake(os.path.join(root, "events"), events_rows(300, 301), mode="append")
    after = quiver(live).to_pylist()
    if after[0]["n"] != before[0]["n"] + 1:
        fail(f"refresh_secs = 0 served a stale answer: {before} then {after}")
    print("   results cache: a new commit drops cached answers (at once with refresh_secs = 0)")


def events_rows(lo: int, hi: int) -> pa.Table:
    return pa.table({"id": pa.array(range(lo, hi), pa.int64()), "name": [f"e{i}" for i in range(lo, hi)]})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
