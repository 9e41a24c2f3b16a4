#!/usr/bin/env python3
"""End-to-end check of Quiver's Flight SQL endpoint through the ADBC Flight SQL driver.

Usage:
    python adbc_client.py URI [USERNAME PASSWORD]

    e.g. python adbc_client.py grpc://127.0.0.1:50051
         python adbc_client.py grpc://127.0.0.1:50051 alice secret

Checks, in order:
  1. connect (optionally with username/password);
  2. adbc_get_objects(depth="all") lists catalog "quiver" / schema "tpch" /
     table "nation" with column n_name; adbc_get_table_schema("nation") has n_name;
  3. SELECT count(*) FROM quiver.tpch.nation returns 25;
  4. a prepared statement with a $1 parameter, executed twice with
     different bound values (7 -> GERMANY, 24 -> UNITED STATES);
  5. the same with `?` parameters, as JDBC, ODBC and BI tools write them:
     `SELECT count(*) FROM lineitem WHERE l_quantity < ?` equals the literal query;
  6. a query against a missing table raises an error mentioning the table,
     and the connection still serves a good query afterwards.

Prints "ADBC OK" and exits 0 on success; exits non-zero with a message otherwise.
"""

import sys
import traceback

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa

CATALOG = "quiver"
SCHEMA = "tpch"
TABLE = "nation"
COLUMN = "n_name"
RPC_TIMEOUT_SECONDS = "60"


def fail(msg: str) -> None:
    print(f"ADBC FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def step(msg: str) -> None:
    print(f"-- {msg}", flush=True)


def _get(d, key, default=None):
    """dict.get that tolerates None values (nullable nested fields)."""
    if d is None:
        return default
    v = d.get(key, default)
    return default if v is None else v


def connect(uri: str, username: str | None, password: str | None):
    db_kwargs = {
        adbc_driver_flightsql.DatabaseOptions.TIMEOUT_QUERY.value: RPC_TIMEOUT_SECONDS,
        adbc_driver_flightsql.DatabaseOptions.TIMEOUT_FETCH.value: RPC_TIMEOUT_SECONDS,
        adbc_driver_flightsql.DatabaseOptions.TIMEOUT_UPDATE.value: RPC_TIMEOUT_SECONDS,
    }
    if username is not None:
        db_kwargs[adbc_driver_manager.DatabaseOptions.USERNAME.value] = username
        db_kwargs[adbc_driver_manager.DatabaseOptions.PASSWORD.value] = password or ""
    # autocommit=True: Quiver is read-only and need not implement transactions.
    return flightsql.connect(uri, db_kwargs=db_kwargs, autocommit=True)


def check_metadata(conn) -> None:
    step("adbc_get_objects(depth='all')")
    objects = conn.adbc_get_objects(depth="all").read_all()
    assert isinstance(objects, pa.Table), f"adbc_get_objects returned {type(objects)!r}"
    rows = objects.to_pylist()
    catalogs = [_get(r, "catalog_name") for r in rows]
    cat = next((r for r in rows if _get(r, "catalog_name") == CATALOG), None)
    assert cat is not None, f"catalog {CATALOG!r} not in get_objects catalogs {catalogs!r}"

    schemas = _get(cat, "catalog_db_schemas", [])
    sch = next((s for s in schemas if _get(s, "db_schema_name") == SCHEMA), None)
    assert sch is not None, (
        f"db schema {SCHEMA!r} not in catalog {CATALOG!r}; "
        f"found {[_get(s, 'db_schema_name') for s in schemas]!r}"
    )

    tables = _get(sch, "db_schema_tables", [])
    tbl = next((t for t in tables if _get(t, "table_name") == TABLE), None)
    assert tbl is not None, (
        f"table {TABLE!r} not in {CATALOG}.{SCHEMA}; "
        f"found {[_get(t, 'table_name') for t in tables]!r}"
    )

    columns = [_get(c, "column_name") for c in _get(tbl, "table_columns", [])]
    assert COLUMN in columns, (
        f"column {COLUMN!r} not in {CATALOG}.{SCHEMA}.{TABLE} columns {columns!r}"
    )
    print(f"   found {CATALOG}.{SCHEMA}.{TABLE} "
          f"(type {_get(tbl, 'table_type')!r}) with columns {columns!r}")

    step("adbc_get_table_schema('nation')")
    schema = conn.adbc_get_table_schema(
        TABLE, catalog_filter=CATALOG, db_schema_filter=SCHEMA
    )
    assert isinstance(schema, pa.Schema), f"adbc_get_table_schema returned {type(schema)!r}"
    assert COLUMN in schema.names, (
        f"field {COLUMN!r} not in adbc_get_table_schema result: {schema}"
    )
    print(f"   schema: {schema.names!r}")


def check_count(conn) -> None:
    step("SELECT count(*) FROM quiver.tpch.nation")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS c FROM quiver.tpch.nation")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 1, f"count query returned {table.num_rows} rows: {table}"
    assert table.num_columns == 1, f"count query returned {table.num_columns} columns: {table}"
    value = table.column(0)[0].as_py()
    assert value == 25, f"expected 25 nations, got {value!r}"
    print(f"   count = {value}")


def check_prepared(conn) -> None:
    sql = "SELECT n_name FROM quiver.tpch.nation WHERE n_nationkey = $1"
    with conn.cursor() as cur:
        for key, expected in ((7, "GERMANY"), (24, "UNITED STATES")):
            step(f"prepared: {sql} with $1 = {key}")
            cur.execute(sql, parameters=(key,))
            table = cur.fetch_arrow_table()
            assert table.num_rows == 1, (
                f"parameter {key}: expected 1 row, got {table.num_rows}: {table.to_pylist()!r}"
            )
            assert table.num_columns == 1, (
                f"parameter {key}: expected 1 column, got {table.column_names!r}"
            )
            value = table.column(0)[0].as_py()
            if isinstance(value, str):
                value = value.rstrip()  # tolerate CHAR(25) padding
            assert value == expected, (
                f"parameter {key}: expected {expected!r}, got {value!r}"
            )
            print(f"   -> {value!r}")


def check_question_marks(conn) -> None:
    sql = "SELECT count(*) FROM quiver.tpch.lineitem WHERE l_quantity < ?"
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM quiver.tpch.lineitem WHERE l_quantity < 10")
        expected = cur.fetch_arrow_table().column(0)[0].as_py()
        step(f"prepared: {sql} with ? = 10")
        cur.execute(sql, parameters=(10,))
        got = cur.fetch_arrow_table().column(0)[0].as_py()
        assert got == expected and expected > 0, f"? parameter: expected {expected!r}, got {got!r}"
        print(f"   -> {got!r}")
        two = "SELECT n_name FROM quiver.tpch.nation WHERE n_nationkey = ? AND n_regionkey = ?"
        step(f"prepared: {two} with (7, 3)")
        cur.execute(two, parameters=(7, 3))
        names = [v.rstrip() for v in cur.fetch_arrow_table().column(0).to_pylist()]
        assert names == ["GERMANY"], f"two ? parameters: got {names!r}"
        print(f"   -> {names!r}")


def check_error_then_recover(conn) -> None:
    bad = "SELECT * FROM quiver.tpch.no_such_table"
    step(f"bad query: {bad}")
    error = None
    with conn.cursor() as cur:
        try:
            cur.execute(bad)
            # Some servers defer the error to the fetch.
            cur.fetch_arrow_table()
        except Exception as e:  # noqa: BLE001 - any driver error type is fine
            error = e
    assert error is not None, f"query against a missing table did not raise: {bad}"
    message = str(error)
    assert "no_such_table" in message, (
        f"error for missing table does not mention no_such_table: "
        f"{type(error).__name__}: {message}"
    )
    print(f"   raised {type(error).__name__}: {message.splitlines()[0] if message else ''}")

    step("good query on the same connection after the error")
    with conn.cursor() as cur:
        cur.execute("SELECT n_name FROM quiver.tpch.nation WHERE n_nationkey = 0")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 1, f"expected 1 row after error, got {table.num_rows}"
    value = table.column(0)[0].as_py()
    if isinstance(value, str):
        value = value.rstrip()
    assert value == "ALGERIA", f"expected 'ALGERIA' after error, got {value!r}"
    print(f"   -> {value!r}")


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3, 4):
        print(f"usage: {argv[0]} URI [USERNAME [PASSWORD]]", file=sys.stderr)
        return 2
    uri = argv[1]
    username = argv[2] if len(argv) >= 3 else None
    password = argv[3] if len(argv) >= 4 else None

    step(f"connect to {uri}" + (f" as {username!r}" if username is not None else ""))
    try:
        conn = connect(uri, username, password)
    except Exception as e:  # noqa: BLE001
        fail(f"could not connect to {uri}: {type(e).__name__}: {e}")

    try:
        check_metadata(conn)
        check_count(conn)
        check_prepared(conn)
        check_question_marks(conn)
        check_error_then_recover(conn)
    except AssertionError as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        fail(f"unexpected {type(e).__name__}: {e}")
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass

    print("ADBC OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
