"""DuckDB baseline for the TPC-H benchmark: times tests/tpch/q*.sql over the same
Parquet folders and prints the median seconds per query as a JSON list.

usage: bench_duckdb.py DATA_DIR ITERATIONS
"""
import json
import pathlib
import statistics
import sys
import time

import duckdb

data, iterations = pathlib.Path(sys.argv[1]), int(sys.argv[2])
queries = pathlib.Path(__file__).resolve().parent.parent / "tests" / "tpch"
con = duckdb.connect()
for table in ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]:
    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{data / table}/*.parquet')")
times = []
for n in range(1, 23):
    sql = (queries / f"q{n}.sql").read_text()
    con.sql(sql).to_arrow_table()  # warm-up
    runs = []
    for _ in range(iterations):
        t = time.perf_counter()
        con.sql(sql).to_arrow_table()
        runs.append(time.perf_counter() - t)
    times.append(statistics.median(runs))
print(json.dumps(times))
