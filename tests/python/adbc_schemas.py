#!/usr/bin/env python3
"""Flight SQL metadata agrees with results, as the unmodified ADBC driver checks it.

Usage:
    python adbc_schemas.py URI

The ADBC Flight SQL driver (Go) refuses a stream whose schema differs from the one
the FlightInfo announced ("endpoint 0 returned inconsistent schema"). This runs a
corpus of the query shapes BI tools generate (distinct aggregates over decimals,
unions, window functions, casts, constants, empty results), both as plain and as
prepared statements, and reads every result through the driver. Then, for each
TPC-H table, the schema GetTables announces (adbc_get_table_schema) must equal the
schema of `SELECT *` on it, and GetObjects must give every column an XDBC type name.
Strings are `utf8`, unless the client sends the `x-quiver-string-views: true` call
header: then results and GetTables both use string views.

Prints "SCHEMAS OK" and exits 0 on success.
"""

import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa

CORPUS = [
    "SELECT count(DISTINCT o_custkey), sum(o_totalprice) FROM orders",
    "SELECT o_orderstatus, count(DISTINCT o_custkey) AS customers, sum(o_totalprice) AS total, "
    "avg(o_totalprice) AS mean FROM orders GROUP BY o_orderstatus ORDER BY 1",
    "SELECT sum(DISTINCT l_quantity), avg(l_extendedprice), min(l_shipdate), max(l_comment) "
    "FROM lineitem WHERE l_orderkey < 100",
    "SELECT n_name FROM nation UNION ALL SELECT r_name FROM region",
    "SELECT n_nationkey AS k FROM nation UNION SELECT o_totalprice FROM orders WHERE o_orderkey < 10",
    "SELECT n_name, rank() OVER (PARTITION BY n_regionkey ORDER BY n_name) AS r, "
    "sum(n_nationkey) OVER (PARTITION BY n_regionkey) AS s FROM nation",
    "SELECT CAST(o_totalprice AS DOUBLE) AS d, CAST(o_orderdate AS VARCHAR) AS t, o_totalprice * 2 AS twice, "
    "o_totalprice / 3 AS third, CAST(o_orderkey AS DECIMAL(20, 0)) AS k FROM orders LIMIT 5",
    "SELECT 1 AS one, 'a' AS letter, NULL AS nothing, DATE '2020-01-01' AS day, 1.5 AS half",
    "SELECT count(*), sum(o_totalprice) FROM orders WHERE o_orderkey < 0",
    "SELECT array_agg(n_name) AS names FROM nation",
    "WITH t AS (SELECT o_custkey, sum(o_totalprice) AS s FROM orders GROUP BY 1) "
    "SELECT CASE WHEN s > 500000 THEN 'big' ELSE 'small' END AS size, count(*) FROM t GROUP BY 1",
    "SELECT date_trunc('month', o_orderdate) AS month, count(DISTINCT o_custkey) AS n "
    "FROM orders GROUP BY 1 ORDER BY 1 LIMIT 3",
]

TABLES = ["nation", "region", "orders", "lineitem", "customer"]


def fail(msg: str) -> None:
    print(f"SCHEMAS FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def main(uri: str) -> None:
    db_kwargs = {adbc_driver_flightsql.DatabaseOptions.TIMEOUT_QUERY.value: "60"}
    with flightsql.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn:
        for sql in CORPUS:
            for prepared in (False, True):
                with conn.cursor() as cur:
                    try:
                        if prepared:
                            cur.adbc_prepare(sql)
                        cur.execute(sql)
                        table = cur.fetch_arrow_table()
                    except Exception as e:  # the driver's own schema check raises here
                        fail(f"{'prepared' if prepared else 'plain'} {sql!r}: {e}")
                    print(f"   ok ({'prepared' if prepared else 'plain'}, {table.num_rows} rows): "
                          f"{table.schema.types} <- {sql[:60]}")

        for name in TABLES:
            announced = conn.adbc_get_table_schema(name, catalog_filter="quiver", db_schema_filter="tpch")
            with conn.cursor() as cur:
                cur.execute(f"SELECT * FROM quiver.tpch.{name} LIMIT 1")
                result = cur.fetch_arrow_table().schema
            for a, r in zip(announced, result):
                if a.name != r.name or a.type != r.type or a.nullable != r.nullable:
                    fail(f"{name}.{a.name}: GetTables says {a.type} nullable={a.nullable}, "
                         f"the result has {r.name} {r.type} nullable={r.nullable}")
            if len(announced) != len(result):
                fail(f"{name}: {len(announced)} columns announced, {len(result)} in the result")
            for field in announced:
                if pa.types.is_string_view(field.type) or pa.types.is_large_string(field.type):
                    fail(f"{name}.{field.name} announced as {field.type}, not utf8")
            print(f"   {name}: GetTables schema equals the result's ({len(result)} columns)")

        objects = conn.adbc_get_objects(depth="columns", catalog_filter="quiver", db_schema_filter="tpch",
                                        table_name_filter="orders").read_all().to_pylist()
        columns = [c for cat in objects for s in (cat["catalog_db_schemas"] or [])
                   for t in (s["db_schema_tables"] or []) for c in (t["table_columns"] or [])]
        if not columns:
            fail("GetObjects listed no columns for orders")
        names = {c["column_name"]: c.get("xdbc_type_name") for c in columns}
        if names.get("o_totalprice") != "DECIMAL" or names.get("o_comment") != "VARCHAR":
            fail(f"XDBC type names of orders: {names}")
        print(f"   GetObjects type names: {names}")

    # A client that asks for string views (a call header) gets them, announced and
    # streamed alike, in results and in GetTables.
    db_kwargs["adbc.flight.sql.rpc.call_header.x-quiver-string-views"] = "true"
    with flightsql.connect(uri, db_kwargs=db_kwargs, autocommit=True) as conn:
        for prepared in (False, True):
            with conn.cursor() as cur:
                sql = "SELECT n_name, n_comment, n_nationkey FROM nation ORDER BY n_nationkey"
                try:
                    if prepared:
                        cur.adbc_prepare(sql)
                    cur.execute(sql)
                    table = cur.fetch_arrow_table()
                except Exception as e:
                    fail(f"string views ({'prepared' if prepared else 'plain'}): {e}")
                if not pa.types.is_string_view(table.schema.field("n_name").type) or table.num_rows != 25:
                    fail(f"asked for string views, got {table.schema}")
                if table.column("n_name")[0].as_py() != "ALGERIA":
                    fail(f"string views: {table.column('n_name')[0]}")
        announced = conn.adbc_get_table_schema("nation", catalog_filter="quiver", db_schema_filter="tpch")
        if not pa.types.is_string_view(announced.field("n_name").type):
            fail(f"GetTables with string views asked: {announced}")
        print("   string views on request: results and GetTables agree")
    print("SCHEMAS OK")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
