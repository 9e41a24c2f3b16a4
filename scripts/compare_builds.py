"""TPC-H through two (or more) running Quiver servers, alternating between them
round by round so that drift on the machine hits each alike; prints each server's
total (median of the rounds) and its ratio to the first. scripts/compare-builds.sh
starts the servers; this script only times them.

usage: compare_builds.py ROUNDS LABEL=HOST:PORT [LABEL=HOST:PORT ...]
"""
import pathlib
import statistics
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql

rounds = int(sys.argv[1])
servers = [arg.split("=", 1) for arg in sys.argv[2:]]
queries = pathlib.Path(__file__).resolve().parent.parent / "tests" / "tpch"
texts = [(queries / f"q{n}.sql").read_text() for n in range(1, 23)]
conns = {label: flightsql.connect(f"grpc://{addr}") for label, addr in servers}


def run_all(conn):
    """Seconds per query, each query run to its last batch."""
    times = []
    for sql in texts:
        cur = conn.cursor()
        t = time.perf_counter()
        cur.execute(sql)
        cur.fetch_arrow_table()
        times.append(time.perf_counter() - t)
        cur.close()
    return times


for label, _ in servers:  # warm-up: file metadata, caches, worker threads
    run_all(conns[label])
totals = {label: [] for label, _ in servers}
per_query = {label: [] for label, _ in servers}
for r in range(rounds):
    for label, _ in servers:
        times = run_all(conns[label])
        totals[label].append(sum(times))
        per_query[label].append(times)
        print(f"round {r + 1} {label}: {sum(times):.2f} s", file=sys.stderr)

first = statistics.median(totals[servers[0][0]])
print("| build | TPC-H total (median of %d) | ratio |" % rounds)
print("|---|---:|---:|")
for label, _ in servers:
    m = statistics.median(totals[label])
    print(f"| {label} | {m:.2f} s | {m / first:.3f}× |")
print()
print("| query | " + " | ".join(label for label, _ in servers) + " |")
print("|---|" + "---:|" * len(servers))
for q in range(22):
    cells = [statistics.median(rounds_[q] for rounds_ in per_query[label]) for label, _ in servers]
    print(f"| q{q + 1} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
