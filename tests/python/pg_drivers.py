#!/usr/bin/env python3
"""What drivers do beyond plain queries, through unmodified clients on Quiver's
PostgreSQL port.

Usage:
    python pg_drivers.py MODE URL

Modes:
  session   psycopg: SET search_path moves unqualified names and current_schema()
            agrees; SHOW after SET; RESET and RESET ALL; current_setting() and
            set_config(); current_user is the logged-in user; SELECT 1/0 is 22012.
  copy      psycopg's cursor.copy() and psycopg2's copy_expert: COPY (query) TO
            STDOUT in text, CSV with a header, and binary; an empty result.
  params    psycopg: NULL and typed parameters in the select list (`SELECT %s`
            returns the bound type).
  asyncpg   asyncpg: text[], bigint[], date[] and numeric[] results (asyncpg
            introspects their types with its own catalog query), typed and array
            parameters, a decimal sum.
  timegrains  every time grain of Superset's PostgreSQL engine spec, with its
            TO_DATE and TO_TIMESTAMP time-range filters, grouped counts equal to
            Python's own truncation of the raw dates; to_char with a PostgreSQL pattern.

Prints "<MODE> OK" and exits 0 on success.
"""

import sys


def fail(msg: str) -> None:
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def run_session(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        default = conn.execute("SELECT current_schema()").fetchone()[0]
        check(default == "tpch", f"current_schema() before SET: {default!r}")
        conn.execute('SET search_path = "system"')
        check(conn.execute("SELECT current_schema()").fetchone()[0] == "system", "current_schema() after SET")
        check(conn.execute("SHOW search_path").fetchone()[0] == '"system"', "SHOW search_path")
        # `queries` is system.queries now; `nation` is no longer found unqualified.
        n = conn.execute("SELECT count(*) FROM queries").fetchone()[0]
        check(n >= 1, f"system.queries unqualified: {n}")
        try:
            conn.execute("SELECT count(*) FROM nation")
            fail("nation resolved under search_path = system")
        except psycopg.errors.UndefinedTable:
            pass
        conn.execute("SET search_path TO tpch, public")
        check(conn.execute("SELECT count(*) FROM nation").fetchone()[0] == 25, "nation after SET back")

        conn.execute("SET application_name = 'quiver-test'")
        check(conn.execute("SHOW application_name").fetchone()[0] == "quiver-test", "SHOW application_name")
        check(conn.execute("SELECT current_setting('application_name')").fetchone()[0] == "quiver-test",
              "current_setting(application_name)")
        check(conn.execute("SELECT set_config('statement_timeout', '5s', false)").fetchone()[0] == "5s", "set_config")
        check(conn.execute("SHOW statement_timeout").fetchone()[0] == "5s", "SHOW after set_config")
        check(conn.execute("SELECT current_setting('no.such.setting', true)").fetchone()[0] is None, "missing_ok")
        try:
            conn.execute("SHOW no_such_setting")
            fail("SHOW of an unknown setting did not fail")
        except psycopg.errors.UndefinedObject:
            pass
        conn.execute("RESET application_name")
        check(conn.execute("SHOW application_name").fetchone()[0] == "", "RESET application_name")
        conn.execute('SET search_path = "system"')
        conn.execute("RESET ALL")
        check(conn.execute("SELECT current_schema()").fetchone()[0] == "tpch", "RESET ALL")

        user = conn.execute("SELECT current_user, session_user").fetchone()
        check(user == ("ann", "ann"), f"current_user, session_user: {user!r}")

        try:
            conn.execute("SELECT 1/0")
            fail("1/0 did not fail")
        except psycopg.errors.DivisionByZero as e:
            print(f"   1/0: {e.sqlstate}")
        try:
            conn.execute("SELECT CAST('abc' AS INT)")
            fail("'abc'::int did not fail")
        except psycopg.errors.InvalidTextRepresentation as e:
            print(f"   'abc'::int: {e.sqlstate}")
        for sql, kind in [
            ("SELECT CAST(100000 AS SMALLINT)", psycopg.errors.NumericValueOutOfRange),
            ("SELECT CAST('2020-13-45' AS DATE)", psycopg.errors.InvalidDatetimeFormat),
            ("SELECT n_nationkey FROM nation a, nation b", psycopg.errors.AmbiguousColumn),
            ("SELECT * FROM nation WHERE 1", psycopg.errors.DatatypeMismatch),
            ("SELECT abs('x')", psycopg.errors.UndefinedFunction),
            ("SELECT n_name + 1 FROM nation", psycopg.errors.UndefinedFunction),
            ("SELECT no_such_column FROM nation", psycopg.errors.UndefinedColumn),
        ]:
            try:
                conn.execute(sql)
                fail(f"{sql} did not fail")
            except kind as e:
                print(f"   {sql}: {e.sqlstate}")
            except psycopg.Error as e:
                fail(f"{sql}: {e.sqlstate} {type(e).__name__}, not {kind.__name__}: {e}")
        check(conn.execute("SELECT 1").fetchone()[0] == 1, "after errors")


def run_copy(url: str) -> None:
    import psycopg
    import psycopg2

    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        text = b""
        with cur.copy("COPY (SELECT n_nationkey, n_name FROM nation WHERE n_nationkey < 3 ORDER BY 1) TO STDOUT") as copy:
            for data in copy:
                text += bytes(data)
        check(text == b"0\tALGERIA\n1\tARGENTINA\n2\tBRAZIL\n", f"COPY text: {text!r}")

        csv = b""
        with cur.copy("COPY (SELECT n_nationkey AS k, n_name AS \"the, name\" FROM nation WHERE n_nationkey IN (7, 24) "
                      "ORDER BY 1) TO STDOUT (FORMAT csv, HEADER)") as copy:
            for data in copy:
                csv += bytes(data)
        check(csv == b'k,"the, name"\n7,GERMANY\n24,UNITED STATES\n', f"COPY csv: {csv!r}")

        empty = b""
        with cur.copy("COPY (SELECT n_name FROM nation WHERE false) TO STDOUT WITH CSV HEADER") as copy:
            for data in copy:
                empty += bytes(data)
        check(empty == b"n_name\n", f"COPY of no rows: {empty!r}")

        with cur.copy("COPY (SELECT n_nationkey, n_name FROM nation ORDER BY 1) TO STDOUT (FORMAT binary)") as copy:
            copy.set_types(["int8", "text"])
            rows = list(copy.rows())
        check(len(rows) == 25 and rows[7] == (7, "GERMANY"), f"COPY binary: {rows[:8]!r}")

        whole = b""
        with cur.copy("COPY region TO STDOUT") as copy:
            for data in copy:
                whole += bytes(data)
        check(whole.count(b"\n") == 5 and b"EUROPE" in whole, f"COPY region: {whole!r}")

    conn2 = psycopg2.connect(url)
    try:
        import io
        buf = io.StringIO()
        conn2.cursor().copy_expert("COPY (SELECT r_regionkey, r_name FROM region ORDER BY 1) TO STDOUT WITH CSV", buf)
        check(buf.getvalue().splitlines()[0] == "0,AFRICA", f"psycopg2 copy_expert: {buf.getvalue()!r}")
    finally:
        conn2.close()


def run_params(url: str) -> None:
    import datetime
    import decimal

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT %s AS a, %s AS b", (None, 5), prepare=True).fetchone()
        check(row == (None, 5), f"NULL and int in the select list: {row!r}")
        for value in (42, 2.5, "text", True, datetime.date(1995, 3, 15), decimal.Decimal("12.34")):
            got = conn.execute("SELECT %s AS v", (value,), prepare=True).fetchone()[0]
            check(got == value and type(got) is type(value), f"SELECT %s with {value!r}: {got!r}")
        n = conn.execute("SELECT count(*) FROM orders WHERE o_orderdate < %s AND o_comment IS DISTINCT FROM %s",
                         (datetime.date(1993, 1, 1), None)).fetchone()[0]
        check(n > 0, f"date and NULL parameters in a filter: {n}")


def run_asyncpg(url: str) -> None:
    import asyncio

    import asyncpg

    async def main():
        conn = await asyncpg.connect(url)
        try:
            names = await conn.fetchval("SELECT array_agg(n_name ORDER BY n_name) FROM nation WHERE n_regionkey = $1", 3)
            check(list(names)[:2] == ["FRANCE", "GERMANY"], f"array result: {names!r}")
            rows = await conn.fetch("SELECT n_nationkey, n_name FROM nation WHERE n_regionkey = $1 AND n_name > $2 ORDER BY 1",
                                    3, "G")
            check([r["n_name"] for r in rows] == ["GERMANY", "ROMANIA", "RUSSIA", "UNITED KINGDOM"], f"typed parameters: {rows!r}")
            total = await conn.fetchval("SELECT sum(o_totalprice) FROM orders WHERE o_custkey = $1", 1)
            check(total is not None and total > 0, f"decimal sum: {total!r}")
            echo = await conn.fetchval("SELECT $1::int + 1", 41)
            check(echo == 42, f"typed parameter: {echo!r}")
            # Arrays of other types make asyncpg introspect them (its own catalog query).
            keys = await conn.fetchval("SELECT array_agg(n_nationkey ORDER BY n_nationkey) FROM nation WHERE n_regionkey = $1", 1)
            check(list(keys) == [1, 2, 3, 17, 24], f"bigint[] result: {keys!r}")
            days = await conn.fetchval("SELECT array_agg(o_orderdate ORDER BY o_orderkey) FROM orders WHERE o_orderkey < 4")
            check([d.isoformat() for d in days] == ["1996-01-02", "1996-12-01", "1993-10-14"], f"date[] result: {days!r}")
            prices = await conn.fetchval("SELECT ARRAY[1.5, 2.25]")
            check([float(p) for p in prices] == [1.5, 2.25], f"numeric array: {prices!r}")
            back = await conn.fetchval("SELECT $1::bigint[]", [7, 8, None])
            check(list(back) == [7, 8, None], f"bigint[] parameter: {back!r}")
        finally:
            await conn.close()

    asyncio.run(main())


# Superset's PostgreSQL engine spec: its time-grain expressions and how it writes a
# time-range filter (superset/db_engine_specs/postgres.py, Superset 6).
SUPERSET_GRAINS = {
    "PT1S": "DATE_TRUNC('second', {col})",
    "PT5S": "DATE_TRUNC('minute', {col}) + INTERVAL '5 seconds' * FLOOR(EXTRACT(SECOND FROM {col}) / 5)",
    "PT30S": "DATE_TRUNC('minute', {col}) + INTERVAL '30 seconds' * FLOOR(EXTRACT(SECOND FROM {col}) / 30)",
    "PT1M": "DATE_TRUNC('minute', {col})",
    "PT5M": "DATE_TRUNC('hour', {col}) + INTERVAL '5 minutes' * FLOOR(EXTRACT(MINUTE FROM {col}) / 5)",
    "PT10M": "DATE_TRUNC('hour', {col}) + INTERVAL '10 minutes' * FLOOR(EXTRACT(MINUTE FROM {col}) / 10)",
    "PT15M": "DATE_TRUNC('hour', {col}) + INTERVAL '15 minutes' * FLOOR(EXTRACT(MINUTE FROM {col}) / 15)",
    "PT30M": "DATE_TRUNC('hour', {col}) + INTERVAL '30 minutes' * FLOOR(EXTRACT(MINUTE FROM {col}) / 30)",
    "PT1H": "DATE_TRUNC('hour', {col})",
    "P1D": "DATE_TRUNC('day', {col})",
    "P1W": "DATE_TRUNC('week', {col})",
    "P1M": "DATE_TRUNC('month', {col})",
    "P3M": "DATE_TRUNC('quarter', {col})",
    "P1Y": "DATE_TRUNC('year', {col})",
}


def run_timegrains(url: str) -> None:
    """Each grain over o_orderdate with Superset's two filter spellings; the groups and
    counts equal what Python computes from the raw dates."""
    import collections
    import datetime

    import psycopg

    start, end = datetime.date(1995, 1, 1), datetime.date(1995, 7, 1)
    filters = [
        f"o_orderdate >= TO_DATE('{start.isoformat()}', 'YYYY-MM-DD') AND o_orderdate < TO_DATE('{end.isoformat()}', 'YYYY-MM-DD')",
        f"o_orderdate >= TO_TIMESTAMP('{start.isoformat()} 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') "
        f"AND o_orderdate < TO_TIMESTAMP('{end.isoformat()} 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')",
    ]

    def truncate(d: datetime.date, grain: str) -> datetime.date:
        if grain == "P1W":
            return d - datetime.timedelta(days=d.weekday())
        if grain == "P1M":
            return d.replace(day=1)
        if grain == "P3M":
            return d.replace(month=(d.month - 1) // 3 * 3 + 1, day=1)
        if grain == "P1Y":
            return d.replace(month=1, day=1)
        return d

    with psycopg.connect(url, autocommit=True) as conn:
        dates = [r[0] for r in conn.execute(
            "SELECT o_orderdate FROM orders WHERE o_orderdate >= %s AND o_orderdate < %s", (start, end)).fetchall()]
        check(len(dates) > 1000, f"orders in the range: {len(dates)}")
        for where in filters:
            for grain, template in SUPERSET_GRAINS.items():
                expr = template.format(col="o_orderdate")
                sql = (f"SELECT {expr} AS __timestamp, COUNT(*) AS count FROM orders WHERE {where} "
                       f"GROUP BY {expr} ORDER BY __timestamp LIMIT 10000")
                try:
                    rows = conn.execute(sql).fetchall()
                except Exception as e:
                    fail(f"{grain}: {e}\n{sql}")
                expected = collections.Counter(truncate(d, grain) for d in dates)
                got = {(r[0].date() if isinstance(r[0], datetime.datetime) else r[0]): r[1] for r in rows}
                check(got == dict(expected), f"{grain}: {sorted(got.items())[:3]} != {sorted(expected.items())[:3]}")
            print(f"   {len(SUPERSET_GRAINS)} grains agree with filter {where[:40]}...")
        # to_char with PostgreSQL's patterns, on the same door.
        label = conn.execute("SELECT to_char(DATE '1995-03-05', 'YYYY-MM-DD')").fetchone()[0]
        check(label == "1995-03-05", f"to_char: {label!r}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mode, url = sys.argv[1], sys.argv[2]
    modes = {"session": run_session, "copy": run_copy, "params": run_params, "asyncpg": run_asyncpg,
             "timegrains": run_timegrains}
    modes[mode](url)
    print(f"{mode.upper()} OK")
