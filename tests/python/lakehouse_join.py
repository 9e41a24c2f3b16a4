"""A Delta table, an Iceberg table and a PostgreSQL table joined in one query.

Usage:
  lakehouse_join.py write <root> [<s3-endpoint>]
      Writes the Delta table `sales` (partitioned by day) with the deltalake package and
      the Iceberg table `items` (partitioned by bucket[4](item_id), two commits) with
      pyiceberg (SQL catalog on SQLite). Locally under <root>, or, with an endpoint,
      in the bucket `lake` of that S3-compatible server (keys `test`/`test`).
  lakehouse_join.py check <grpc-uri> <writable-delta-location> [<s3-endpoint>]
      Runs the join through Quiver and compares it with the answer computed here from
      the same rows; EXPLAIN must list only the Delta files of the day asked for and
      only the Iceberg buckets the ids can be in, and EXPLAIN ANALYZE must show both
      workers reading. Then writes into the writable Delta source `dlw` (its location
      given): CREATE TABLE AS and INSERT, whose files the workers write (EXPLAIN
      ANALYZE shows the write tasks on both), read back by the deltalake package.

Prints "LAKEHOUSE OK" and exits 0 on success.
"""

import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
ITEMS = 50


def fail(msg: str) -> None:
    print(f"LAKEHOUSE FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def sales() -> pa.Table:
    n = len(DAYS) * 250
    return pa.table({
        "sale_id": pa.array(range(n), pa.int64()),
        "item_id": pa.array([(i * 7) % ITEMS for i in range(n)], pa.int64()),
        "day": [DAYS[i % len(DAYS)] for i in range(n)],
        "amount": pa.array([float(i % 97) + 0.5 for i in range(n)]),
    })


def items(lo: int, hi: int) -> pa.Table:
    return pa.table({
        "item_id": pa.array(range(lo, hi), pa.int64()),
        "category": [f"cat{i % 5}" for i in range(lo, hi)],
    })


def region(item_id: int) -> str:
    return f"r{item_id % 3}"


def write(root: str, endpoint: str | None) -> None:
    from deltalake import write_deltalake
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import BucketTransform
    from pyiceberg.types import LongType, NestedField, StringType

    if endpoint:
        delta_at, warehouse = "s3://lake/delta/sales", "s3://lake/warehouse"
        storage = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                   "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
        io = {"s3.endpoint": endpoint, "s3.access-key-id": "test", "s3.secret-access-key": "test",
              "s3.region": "us-east-1"}
    else:
        delta_at, warehouse, storage, io = f"{root}/delta/sales", f"file://{root}/warehouse", None, {}
    write_deltalake(delta_at, sales(), partition_by=["day"], storage_options=storage)
    cat = SqlCatalog("default", uri=f"sqlite:///{root}/catalog.db", warehouse=warehouse, **io)
    cat.create_namespace("lake")
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=BucketTransform(4), name="b"))
    t = cat.create_table("lake.items", schema=Schema(NestedField(1, "item_id", LongType()),
                                                      NestedField(2, "category", StringType())),
                         partition_spec=spec)
    t.append(items(0, 25))
    t.append(items(25, ITEMS))
    print(f"   wrote Delta sales at {delta_at} and Iceberg items under {warehouse}")


QUERY = """
SELECT p.region, i.category, count(*) AS n, sum(s.amount) AS total
FROM quiver.dl.sales s
JOIN quiver.ice.items i ON s.item_id = i.item_id
JOIN quiver.pg.lake_region p ON p.item_id = i.item_id
WHERE s.day = '2026-11-02' AND i.item_id IN (3, 7, 14)
GROUP BY p.region, i.category
ORDER BY 1, 2
"""


def expected() -> list[dict]:
    got: dict[tuple, list] = {}
    s = sales().to_pylist()
    for row in s:
        if row["day"] != "2026-11-02" or row["item_id"] not in (3, 7, 14):
            continue
        key = (region(row["item_id"]), f"cat{row['item_id'] % 5}")
        acc = got.setdefault(key, [0, 0.0])
        acc[0] += 1
        acc[1] += row["amount"]
    return [{"region": k[0], "category": k[1], "n": v[0], "total": v[1]} for k, v in sorted(got.items())]


def check(uri: str, delta_w: str, endpoint: str | None) -> None:
    with flightsql.connect(uri, autocommit=True) as conn:
        def quiver(sql: str) -> pa.Table:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetch_arrow_table()

        got = quiver(QUERY).to_pylist()
        want = expected()
        if not want:
            fail("the expected answer is empty, so the comparison proves nothing")
        if got != want:
            fail(f"join: {got} != {want}")
        print(f"   the three-way join returns {len(got)} groups, equal to the answer computed from the rows")
        plan = "\n".join(str(v) for v in quiver(f"EXPLAIN {QUERY}").column(1).to_pylist())
        delta_files = [d for d in DAYS if f"day={d}" in plan]
        if delta_files != ["2026-11-02"]:
            fail(f"Delta pruning: the plan reads the days {delta_files}:\n{plan}")
        ice_files = plan.count("/items/data/")
        if not 0 < ice_files < 8:
            fail(f"Iceberg bucket pruning: {ice_files} of 8 files in the plan:\n{plan}")
        analyzed = "\n".join(str(v) for v in quiver(f"EXPLAIN ANALYZE {QUERY}").column(1).to_pylist())
        # Fragments or stages: each worker ran something that returned rows.
        if "@worker-1 rows=" not in analyzed or "@worker-2 rows=" not in analyzed:
            fail(f"both workers did not take part:\n{analyzed}")
        print(f"   EXPLAIN: one Delta day of {len(DAYS)}, {ice_files} of 8 Iceberg files; both workers read")
        write_through_workers(quiver, delta_w, endpoint)
    print("LAKEHOUSE OK")


def write_through_workers(quiver, location: str, endpoint: str | None) -> None:  # noqa: ANN001
    """CTAS and INSERT into a writable Delta source: write tasks on the workers, one commit each."""
    from deltalake import DeltaTable

    rows = sales().num_rows
    got = quiver("CREATE TABLE quiver.dlw.copied AS SELECT * FROM quiver.dl.sales").to_pylist()
    if got != [{"count": rows}]:
        fail(f"CREATE TABLE AS into Delta: {got}, want {rows} rows")
    # One write task per scan partition, placed on the workers (under a fragment or stage).
    insert = "INSERT INTO quiver.dlw.copied SELECT * FROM quiver.dl.sales"
    analyzed = "\n".join(str(v) for v in quiver(f"EXPLAIN ANALYZE {insert}").column(1).to_pylist())
    lines = analyzed.splitlines()
    at = next((i for i, line in enumerate(lines) if "DeltaWriteExec" in line), 0)
    remote = [line for line in lines[:at] if any(k in line for k in ("RemoteFragmentExec", "StageExec"))]
    if not remote or "DeltaCommitExec" not in analyzed or "@worker-1" not in remote[-1] \
            or "@worker-2" not in remote[-1]:
        fail(f"the write tasks did not run on both workers:\n{analyzed}")
    storage = None
    if endpoint:
        storage = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                   "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    table = DeltaTable(f"{location.rstrip('/')}/copied", storage_options=storage)
    theirs = table.to_pyarrow_table()
    if table.version() != 1 or theirs.num_rows != 2 * rows:
        fail(f"deltalake reads version {table.version()} with {theirs.num_rows} rows, want 1 and {2 * rows}")
    if sorted(theirs.column("item_id").to_pylist()) != sorted(sales().column("item_id").to_pylist() * 2):
        fail("the rows deltalake reads are not the rows written")
    mine = quiver("SELECT count(*) AS n FROM quiver.dlw.copied").to_pylist()
    if mine != [{"n": 2 * rows}]:
        fail(f"Quiver reads {mine} after its own writes")
    print(f"   CREATE TABLE AS and INSERT into Delta: write tasks on both workers, one commit each, "
          f"{2 * rows} rows as deltalake reads them")


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else None)
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) == 5 else None)
    else:
        fail(f"usage: {sys.argv[0]} write <root> [<s3-endpoint>] | "
             "check <grpc-uri> <writable-delta-location> [<s3-endpoint>]")
