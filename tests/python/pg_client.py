#!/usr/bin/env python3
"""Quiver's PostgreSQL port through unmodified third-party clients.

Usage:
    python pg_client.py psycopg URL
    python pg_client.py sqlalchemy URL
    python pg_client.py sqlalchemy-psycopg2 URL

psycopg: a parameterized query (server-side binding, the extended protocol) with
an int and a text parameter, equal to the literal query; a missing table raises
UndefinedTable (SQLSTATE 42P01) and the connection serves the next query.

sqlalchemy: the PostgreSQL dialect's inspector lists the schemas (without pg_catalog),
the tables of schema tpch, the columns of lineitem with their types, views apart from
tables with their text, keys, indexes and constraints, MetaData.reflect(), and a query
through the ORM-free Core API returns rows. With SQLAlchemy 2 it drives psycopg (or
psycopg2, mode sqlalchemy-psycopg2); with SQLAlchemy 1.4 (Superset's, run with
target/superset-venv's Python) psycopg2.

Prints "<MODE> OK" and exits 0 on success.
"""

import sys


def fail(msg: str) -> None:
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def run_psycopg(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        literal = conn.execute(
            "SELECT count(*) FROM lineitem WHERE l_quantity < 10 AND l_returnflag = 'R'"
        ).fetchone()[0]
        bound = conn.execute(
            "SELECT count(*) FROM lineitem WHERE l_quantity < %s AND l_returnflag = %s",
            (10, "R"),
            prepare=True,
        ).fetchone()[0]
        if bound != literal or literal <= 0:
            fail(f"bound query gave {bound!r}, literal {literal!r}")
        print(f"   count with parameters = {bound}")
        names = [r[0].rstrip() for r in conn.execute(
            "SELECT n_name FROM nation WHERE n_regionkey = %s ORDER BY n_name", (3,)).fetchall()]
        if names[:2] != ["FRANCE", "GERMANY"]:
            fail(f"nations of region 3: {names!r}")
        try:
            conn.execute("SELECT * FROM no_such_table")
            fail("a missing table did not raise")
        except psycopg.errors.UndefinedTable as e:
            print(f"   missing table: {e.sqlstate} {str(e).splitlines()[0]}")
        n = conn.execute("SELECT count(*) FROM region").fetchone()[0]
        if n != 5:
            fail(f"after the error: {n!r}")


def run_sqlalchemy(url: str, driver2: bool = False) -> None:
    import sqlalchemy as sa

    # SQLAlchemy 2 with psycopg (3) in target/venv; 1.4 (Superset's) with psycopg2 in target/superset-venv.
    driver = "psycopg" if sa.__version__.startswith("2.") and not driver2 else "psycopg2"
    engine = sa.create_engine(url.replace("postgres://", f"postgresql+{driver}://", 1))
    print(f"   SQLAlchemy {sa.__version__} with {driver}")
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE OR REPLACE VIEW quiver.reports.nation_names AS SELECT n_name FROM tpch.nation"))
    inspector = sa.inspect(engine)
    tables = inspector.get_table_names(schema="tpch")
    for t in ("lineitem", "nation", "orders"):
        if t not in tables:
            fail(f"table {t!r} not in {tables!r}")
    columns = [c["name"] for c in inspector.get_columns("lineitem", schema="tpch")]
    if "l_orderkey" not in columns or "l_comment" not in columns:
        fail(f"lineitem columns: {columns!r}")
    # SQLAlchemy 2 lists schemas with `nspname NOT LIKE 'pg!_%' ESCAPE '!'`.
    schemas = inspector.get_schema_names()
    if "tpch" not in schemas or any(s.startswith("pg_") for s in schemas):
        fail(f"schemas: {schemas!r}")
    print(f"   schemas: {sorted(schemas)!r}")
    # What Superset's dataset editor and MetaData.reflect() ask for every table: the
    # catalog's array columns (indkey, conkey) must be arrays for these to run.
    pk = inspector.get_pk_constraint("nation", schema="tpch")
    indexes = inspector.get_indexes("nation", schema="tpch")
    uniques = inspector.get_unique_constraints("nation", schema="tpch")
    fks = inspector.get_foreign_keys("nation", schema="tpch")
    if pk.get("constrained_columns") or indexes or uniques or fks:
        fail(f"nation has no keys or indexes: {pk!r} {indexes!r} {uniques!r} {fks!r}")
    meta = sa.MetaData()
    meta.reflect(engine, schema="tpch", only=["nation", "region"])
    if sorted(meta.tables) != ["tpch.nation", "tpch.region"] or "n_name" not in meta.tables["tpch.nation"].c:
        fail(f"reflected: {sorted(meta.tables)!r}")
    print(f"   reflected {sorted(meta.tables)!r} with keys, indexes and constraints")
    print(f"   tables: {sorted(tables)!r}")
    print(f"   lineitem has {len(columns)} columns")
    kinds = {c["name"]: type(c["type"]).__name__ for c in inspector.get_columns("lineitem", schema="tpch")}
    want = {"l_orderkey": "BIGINT", "l_comment": ("TEXT", "VARCHAR"), "l_shipdate": "DATE", "l_extendedprice": "NUMERIC"}
    for column, expected in want.items():
        if kinds.get(column) not in ((expected,) if isinstance(expected, str) else expected):
            fail(f"lineitem.{column} reflects as {kinds.get(column)}, not {expected}: {kinds}")
    # Views apart from tables, with their text.
    views = inspector.get_view_names(schema="reports")
    if views != ["nation_names"] or inspector.get_table_names(schema="reports"):
        fail(f"views of reports: {views!r}, tables: {inspector.get_table_names(schema='reports')!r}")
    if "nation" not in (inspector.get_view_definition("nation_names", schema="reports") or ""):
        fail(f"view definition: {inspector.get_view_definition('nation_names', schema='reports')!r}")
    if "nation_names" in inspector.get_view_names(schema="tpch") or "nation" in inspector.get_view_names(schema="tpch"):
        fail("tpch's tables listed as views")
    print(f"   views: {views!r} with their definition; column types {kinds['l_orderkey']}, {kinds['l_shipdate']}, ...")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT r_name FROM region WHERE r_regionkey < :k ORDER BY r_regionkey"), {"k": 2}
        ).fetchall()
    names = [r[0].rstrip() for r in rows]
    if names != ["AFRICA", "AMERICA"]:
        fail(f"regions: {names!r}")
    print(f"   regions: {names!r}")


def main(argv: list[str]) -> int:
    modes = {"psycopg": run_psycopg, "sqlalchemy": run_sqlalchemy,
             "sqlalchemy-psycopg2": lambda url: run_sqlalchemy(url, driver2=True)}
    if len(argv) != 3 or argv[1] not in modes:
        print(f"usage: {argv[0]} {'|'.join(modes)} URL", file=sys.stderr)
        return 2
    modes[argv[1]](argv[2])
    print(f"{argv[1].upper()} OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
