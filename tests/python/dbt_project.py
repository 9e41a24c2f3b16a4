#!/usr/bin/env python3
"""dbt (dbt-core 1.11 with dbt-postgres) builds, tests and documents a project
into Quiver over the PostgreSQL port, unmodified.

Usage:
    python dbt_project.py HOST PORT TPCH_DIR

The project (written to a temporary folder) reads TPC-H through dbt sources and
has a seed, a `table` model joining two tables, a `table` model aggregating it, a
`view` model and an
`incremental` model, with not_null/unique/relationships tests. In order: `dbt
debug`, `dbt seed`, `dbt run`, a second `dbt run` whose incremental run must add
only the new rows (it stages them in a session's temporary table), `dbt seed`
again (which truncates and reloads), `dbt run --full-refresh` (dbt's
rename-and-drop dance for every relation), `dbt test` and `dbt docs generate`
(its catalog must list every model with its columns). What the relations hold
is compared with DuckDB running the same SQL over the TPC-H Parquet files
(TPCH_DIR). Run with target/dbt-venv's Python.

Prints "DBT OK" and exits 0 on success.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile

import duckdb
import psycopg2

MODELS = {
    "nation_regions.sql": "{{ config(materialized='table') }}\n"
    "select n_nationkey, n_name, r_name from {{ source('tpch', 'nation') }}\n"
    "join {{ source('tpch', 'region') }} on n_regionkey = r_regionkey",
    "nations_per_region.sql": "{{ config(materialized='table') }}\n"
    "select r_name, count(*) as nations, sum(n_nationkey) as keys from {{ ref('nation_regions') }} group by r_name",
    "regions_v.sql": "{{ config(materialized='view') }}\n"
    "select r_regionkey, r_name from {{ source('tpch', 'region') }}",
    # Orders up to a cutoff the run is given; an incremental run adds the later days only.
    "early_orders.sql": "{{ config(materialized='incremental') }}\n"
    "select o_orderkey, o_orderdate, o_totalprice from {{ source('tpch', 'orders') }}\n"
    "where o_orderdate < DATE '{{ var(\"cutoff\") }}'\n"
    "{% if is_incremental() %}and o_orderdate > (select max(o_orderdate) from {{ this }}){% endif %}",
}

SEED = "n_nationkey,note\n0,first\n1,second\n7,seventh\n24,last\n"

SCHEMA_YML = """version: 2
sources:
  - name: tpch
    schema: tpch
    tables: [{name: nation}, {name: region}, {name: orders}]
models:
  - name: nation_regions
    columns:
      - name: n_nationkey
        tests: [not_null, unique]
  - name: regions_v
    columns:
      - name: r_regionkey
        tests: [not_null, unique]
  - name: early_orders
    columns:
      - name: o_orderkey
        tests: [unique]
seeds:
  - name: nation_notes
    columns:
      - name: n_nationkey
        tests:
          - relationships: {to: ref('nation_regions'), field: n_nationkey}
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
    lines = out.stdout.strip().splitlines() or [""]
    done = [l for l in lines if "Done." in l or "All checks passed" in l or "Catalog written" in l]
    print(f"   dbt {' '.join(args)}: {(done or lines)[-1]}")
    return out.stdout


def main(host: str, port: str, tpch: str) -> None:
    duck = duckdb.connect()
    for table in ("nation", "region", "orders"):
        files = glob.glob(os.path.join(tpch, table, "**", "*.parquet"), recursive=True) or glob.glob(
            os.path.join(tpch, f"{table}.parquet"))
        if not files:
            fail(f"no Parquet files for {table} under {tpch}")
        duck.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({files!r})")

    conn = psycopg2.connect(f"postgres://quiver@{host}:{port}/quiver")
    conn.autocommit = True
    cur = conn.cursor()

    def rows(sql):
        cur.execute(sql)
        return sorted(cur.fetchall())

    def duck_rows(sql):
        return sorted(duck.execute(sql).fetchall())

    def early(cutoff):
        return duck_rows(f"SELECT o_orderkey, o_orderdate, o_totalprice FROM orders WHERE o_orderdate < DATE '{cutoff}'")

    with tempfile.TemporaryDirectory() as project:
        for d in ("models", "seeds"):
            os.makedirs(os.path.join(project, d))
        with open(os.path.join(project, "dbt_project.yml"), "w") as f:
            f.write("name: quiver_test\nversion: '1.0'\nprofile: quiver\nvars: {cutoff: '1992-02-01'}\n")
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
        with open(os.path.join(project, "seeds", "nation_notes.csv"), "w") as f:
            f.write(SEED)

        dbt(project, "debug")
        out = dbt(project, "seed")
        if "PASS=1" not in out:
            fail(f"dbt seed:\n{out}")
        if rows("SELECT n_nationkey, note FROM lake.nation_notes") != [(0, "first"), (1, "second"), (7, "seventh"), (24, "last")]:
            fail(f"the seed holds {rows('SELECT * FROM lake.nation_notes')}")
        out = dbt(project, "run")
        if "PASS=4" not in out:
            fail(f"dbt run did not build 4 models:\n{out}")
        first = rows("SELECT o_orderkey, o_orderdate, o_totalprice FROM lake.early_orders")
        if not first or first != early("1992-02-01"):
            fail(f"early_orders holds {len(first)} rows after the first run, DuckDB {len(early('1992-02-01'))}")
        # The incremental run stages the later days in a temporary table and appends them.
        out = dbt(project, "run", "--select", "early_orders", "--vars", "{cutoff: '1992-03-01'}")
        second = rows("SELECT o_orderkey, o_orderdate, o_totalprice FROM lake.early_orders")
        if second != early("1992-03-01") or len(second) <= len(first):
            fail(f"early_orders holds {len(second)} rows after the incremental run, DuckDB {len(early('1992-03-01'))}")
        print(f"   incremental: {len(first)} rows, then {len(second)}")
        dbt(project, "seed")
        if len(rows("SELECT * FROM lake.nation_notes")) != 4:
            fail(f"a second dbt seed left {rows('SELECT * FROM lake.nation_notes')}")
        out = dbt(project, "run", "--full-refresh")
        if "PASS=4" not in out:
            fail(f"dbt run --full-refresh did not build 4 models:\n{out}")
        out = dbt(project, "test")
        if "PASS=6" not in out:
            fail(f"dbt test:\n{out}")
        dbt(project, "docs", "generate")
        with open(os.path.join(project, "target", "catalog.json")) as f:
            catalog = json.load(f)
        for model in ("nation_regions", "nations_per_region", "regions_v", "early_orders"):
            node = catalog["nodes"].get(f"model.quiver_test.{model}")
            if not node or not node["columns"]:
                fail(f"dbt docs generate's catalog has no columns for {model}: {list(catalog['nodes'])}")
        if catalog["nodes"]["model.quiver_test.regions_v"]["metadata"]["type"] != "VIEW":
            fail(f"regions_v is documented as {catalog['nodes']['model.quiver_test.regions_v']['metadata']}")
        if catalog["errors"]:
            fail(f"catalog errors: {catalog['errors']}")
        print(f"   docs: {len(catalog['nodes'])} nodes, {len(catalog['sources'])} sources")

    try:
        built = rows("SELECT n_nationkey, n_name, r_name FROM lake.nation_regions")
        direct = duck_rows("SELECT n_nationkey, n_name, r_name FROM nation JOIN region ON n_regionkey = r_regionkey")
        if built != direct or len(built) != 25:
            fail(f"nation_regions holds {built[:3]}…, DuckDB {direct[:3]}…")
        per_region = rows("SELECT r_name, nations, keys FROM lake.nations_per_region")
        if per_region != duck_rows("SELECT r_name, count(*), sum(n_nationkey) FROM nation JOIN region ON n_regionkey = r_regionkey GROUP BY r_name"):
            fail(f"nations_per_region holds {per_region}")
        if rows("SELECT r_regionkey, r_name FROM lake.regions_v") != duck_rows("SELECT r_regionkey, r_name FROM region"):
            fail("regions_v differs from DuckDB")
        if rows("SELECT o_orderkey, o_orderdate, o_totalprice FROM lake.early_orders") != early("1992-02-01"):
            fail("early_orders after --full-refresh differs from DuckDB")
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_name LIKE '%dbt%'")
        leftovers = [r[0] for r in cur.fetchall()]
        if leftovers:
            fail(f"dbt's intermediate relations are left: {leftovers}")
        print("   nation_regions, nations_per_region, regions_v and early_orders equal DuckDB's answers; no leftovers")
    finally:
        conn.close()
    print("DBT OK")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2], sys.argv[3])
