#!/usr/bin/env python3
"""Bulk ingest into Quiver through the unmodified ADBC Flight SQL driver.

Usage:
    python adbc_ingest.py URI CATALOG SCHEMA TABLE

For the table CATALOG.SCHEMA.TABLE (which must not exist yet):
  1. adbc_ingest(mode="create") of 1,000 rows (id, name, amount);
  2. mode="create" again fails: the table exists;
  3. mode="append" of 500 more rows;
  4. counts and sums read back through Quiver match what was sent;
  5. mode="replace" with 10 rows leaves exactly those;
  6. cursor.execute("INSERT INTO ... VALUES ...") through the driver adds a row;
  7. execute_update (CommandStatementUpdate) of an INSERT reports the 2 rows it wrote.

Prints "INGEST OK" and exits 0 on success; non-zero with a message otherwise.
"""

import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa


def fail(msg):
    print(f"INGEST FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def rows(start, n):
    ids = list(range(start, start + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "name": pa.array([f"n{i}" for i in ids], pa.string()),
        "amount": pa.array([i * 0.5 for i in ids], pa.float64()),
    })


def scalar(cur, sql):
    cur.execute(sql)
    return cur.fetchone()


def main():
    uri, catalog, schema, table = sys.argv[1:5]
    name = f"{catalog}.{schema}.{table}"
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        n = cur.adbc_ingest(table, rows(0, 1000), mode="create", catalog_name=catalog, db_schema_name=schema)
        if n not in (1000, -1):
            fail(f"create reported {n} rows")
        try:
            cur.adbc_ingest(table, rows(0, 5), mode="create", catalog_name=catalog, db_schema_name=schema)
            fail("create into an existing table succeeded")
        except flightsql.Error as e:
            if "already exists" not in str(e):
                fail(f"create into an existing table: unexpected error {e}")
        cur.adbc_ingest(table, rows(1000, 500), mode="append", catalog_name=catalog, db_schema_name=schema)
        count, total, amount = scalar(cur, f"SELECT count(*), sum(id), sum(amount) FROM {name}")
        if (count, total, amount) != (1500, sum(range(1500)), sum(i * 0.5 for i in range(1500))):
            fail(f"after append: {(count, total, amount)}")
        cur.adbc_ingest(table, rows(5000, 10), mode="replace", catalog_name=catalog, db_schema_name=schema)
        count, low = scalar(cur, f"SELECT count(*), min(id) FROM {name}")
        if (count, low) != (10, 5000):
            fail(f"after replace: {(count, low)}")
        cur.execute(f"INSERT INTO {name} VALUES (1, 'one', 1.5)")
        cur.fetchall()
        count = scalar(cur, f"SELECT count(*) FROM {name}")[0]
        if count != 11:
            fail(f"after INSERT: {count}")
        # execute_update: Flight SQL's CommandStatementUpdate, answered with the rows written.
        with conn.cursor() as fresh:
            stmt = fresh.adbc_statement
            stmt.set_sql_query(f"INSERT INTO {name} VALUES (2, 'two', 2.5), (3, 'three', 3.5)")
            affected = stmt.execute_update()
        if affected != 2:
            fail(f"execute_update reported {affected} rows, expected 2")
        count = scalar(cur, f"SELECT count(*) FROM {name}")[0]
        if count != 13:
            fail(f"after execute_update: {count}")
    print("INGEST OK")


if __name__ == "__main__":
    main()
