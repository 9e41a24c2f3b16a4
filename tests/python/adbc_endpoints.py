#!/usr/bin/env python3
"""Reads one query through the ADBC Flight SQL driver, unmodified, and prints what
arrived: when the server hands the result out as endpoints on its workers
(workers.client_endpoints), the driver fetches each from the location it names.

Usage: python adbc_endpoints.py URI SQL    (prints "rows N", exits non-zero on error)
"""

import sys

import adbc_driver_flightsql.dbapi as flightsql


def main() -> None:
    uri, sql = sys.argv[1], sys.argv[2]
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    print(f"rows {table.num_rows}")
    print(f"schema {table.schema}")


if __name__ == "__main__":
    main()
