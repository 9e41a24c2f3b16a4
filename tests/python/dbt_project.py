#!/usr/bin/env python3
"""dbt (dbt-core 1.11 with dbt-postgres) builds a project into Quiver over the
PostgreSQL port, unmodified.

Usage:
    python dbt_project.py HOST PORT

The project (written to a temporary folder) has a `table` model joining two TPC-H
tables, a `view` model, an `incremental` model, and not_null/unique tests. `dbt
debug`, `dbt run`, `dbt run --full-refresh` (which replaces every relation through
dbt's rename-and-drop dance) and `dbt test` must pass; the built relations must
hold what the same SQL returns when run directly (read with psycopg2, which
dbt-postgres brings). Run with target/dbt-venv's Python.

Prints "DBT OK" and exits 0 on success.
"""

import os
import subprocess
import sys
import tempfile

import psycopg2

MODELS = {
    "nation_regions.sql": "{{ config(materialized='table') }}\n"
    "select n_nationkey, n_name, r_name from tpch.nation join tpch.region on n_regionkey = r_regionkey",
    "regions_v.sql": "{{ config(materialized='view') }}\nselect r_regionkey, r_name from tpch.region",
    "early_orders.sql": "{{ config(materialized='incremental') }}\n"
    "select o_orderkey, o_totalprice from tpch.orders where o_orderdate < DATE '1992-02-01'",
}

SCHEMA_YML = """version: 2
models:
  - name: nation_regions
    columns:
      - name: n_nationkey
        tests: [not_null, unique]
  - name: regions_v
    columns:
      - name: r_regionkey
        tests: [not_null, unique]
"""


def fail(msg: str) -> None:
    print(f"DBT FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def dbt(project: str, *args: str) -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "dbt")
    out = subprocess.run([exe, *args, "--profiles-dir", project, "--project-dir", project],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        fail(f"dbt {' '.join(args)} exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}")
    print(f"   dbt {' '.join(args)}: {out.stdout.strip().splitlines()[-1]}")
    return out.stdout


def main(host: str, port: str) -> None:
    with tempfile.TemporaryDirectory() as project:
        os.makedirs(os.path.join(project, "models"))
        with open(os.path.join(project, "dbt_project.yml"), "w") as f:
            f.write("name: quiver_test\nversion: '1.0'\nprofile: quiver\n")
        with open(os.path.join(project, "profiles.yml"), "w") as f:
            f.write(f"""quiver:
  target: dev
  outputs:
    dev:
      type: postgres
      host: {host}
      port: {port}
      user: quiver
      password: unused
      dbname: quiver
      schema: lake
      threads: 2
""")
        for name, sql in MODELS.items():
            with open(os.path.join(project, "models", name), "w") as f:
                f.write(sql)
        with open(os.path.join(project, "models", "schema.yml"), "w") as f:
            f.write(SCHEMA_YML)

        dbt(project, "debug")
        # The second run replaces what the first built (--full-refresh also rebuilds
        # the incremental model; its incremental run needs temporary tables).
        for args in (["run"], ["run", "--full-refresh"]):
            out = dbt(project, *args)
            if "PASS=3" not in out:
                fail(f"dbt {' '.join(args)} did not build 3 models:\n{out}")
        out = dbt(project, "test")
        if "PASS=4" not in out:
            fail(f"dbt test:\n{out}")

    url = f"postgres://quiver@{host}:{port}/quiver"
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()

    def one(sql):
        cur.execute(sql)
        return cur.fetchone()

    try:
        built = one("SELECT count(*), sum(n_nationkey) FROM lake.nation_regions")
        direct = one("SELECT count(*), sum(n_nationkey) FROM tpch.nation JOIN tpch.region ON n_regionkey = r_regionkey")
        if built != direct or built[0] != 25:
            fail(f"nation_regions holds {built}, the query gives {direct}")
        if one("SELECT count(*) FROM lake.regions_v")[0] != 5:
            fail("regions_v")
        built = one("SELECT count(*), sum(o_totalprice) FROM lake.early_orders")
        direct = one("SELECT count(*), sum(o_totalprice) FROM tpch.orders WHERE o_orderdate < DATE '1992-02-01'")
        if built != direct or built[0] == 0:
            fail(f"early_orders holds {built}, the query gives {direct}")
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'lake' AND table_name LIKE '%dbt%'")
        leftovers = [r[0] for r in cur.fetchall()]
        if leftovers:
            fail(f"dbt's temporary relations are left: {leftovers}")
        print(f"   nation_regions {built}, regions_v 5 rows, no leftovers")
    finally:
        conn.close()
    print("DBT OK")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2])
