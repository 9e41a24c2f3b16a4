"""Baselines and client side of the write benchmark (coordinator/benches/writes.rs).

usage:
  bench_writes.py duckdb-copy LINEITEM_DIR OUT_DIR ITERATIONS
      DuckDB's COPY (SELECT * FROM lineitem) TO OUT (FORMAT parquet): prints
      {"seconds": median, "bytes": size of one output}.
  bench_writes.py make-csv ROWS CSV_PATH
      writes the ingest data set (id, qty, price, ship, comment) as CSV.
  bench_writes.py adbc-ingest URI CATALOG SCHEMA TABLE CSV_PATH
      reads the CSV into Arrow, then times cursor.adbc_ingest(mode="create")
      through the ADBC Flight SQL driver: prints {"seconds": s, "rows": n}.
"""
import json
import pathlib
import shutil
import statistics
import sys
import time


def folder_bytes(p):
    return sum(f.stat().st_size for f in pathlib.Path(p).rglob("*") if f.is_file())


def duckdb_copy(lineitem, out, iterations):
    import duckdb

    con = duckdb.connect()
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    runs, size = [], 0
    for i in range(iterations + 1):
        target = pathlib.Path(out) / f"run{i}"
        shutil.rmtree(target, ignore_errors=True)
        t = time.perf_counter()
        con.execute(f"COPY (SELECT * FROM read_parquet('{lineitem}/*.parquet')) TO '{target}' (FORMAT parquet, PER_THREAD_OUTPUT true)")
        elapsed = time.perf_counter() - t
        size = folder_bytes(target)
        shutil.rmtree(target, ignore_errors=True)
        if i > 0:
            runs.append(elapsed)
    print(json.dumps({"seconds": statistics.median(runs), "bytes": size}))


def make_csv(rows, path):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    ids = pa.array(range(1, rows + 1), pa.int64())
    table = pa.table({
        "id": ids,
        "qty": pc.cast(pc.remainder(ids, 50), pa.int32()),
        "price": pc.divide(pc.cast(pc.remainder(ids, 100000), pa.float64()), 100.0),
        "ship": pc.cast(pc.cast(pc.add(pc.remainder(ids, 2000), 9131), pa.int32()), pa.date32()),
        "comment": pc.binary_join_element_wise(pa.scalar("row "), pc.cast(ids, pa.string()), ""),
    })
    pcsv.write_csv(table, path)


def adbc_ingest(uri, catalog, schema, table, csv_path):
    import adbc_driver_flightsql.dbapi as flightsql
    import pyarrow.csv as pcsv

    data = pcsv.read_csv(csv_path)
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        t = time.perf_counter()
        cur.adbc_ingest(table, data, mode="create", catalog_name=catalog, db_schema_name=schema)
        elapsed = time.perf_counter() - t
    print(json.dumps({"seconds": elapsed, "rows": data.num_rows}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "duckdb-copy":
        duckdb_copy(args[0], args[1], int(args[2]))
    elif cmd == "make-csv":
        make_csv(int(args[0]), args[1])
    elif cmd == "adbc-ingest":
        adbc_ingest(*args)
    else:
        sys.exit(f"unknown command {cmd}")
