#!/usr/bin/env python3
"""Apache Superset 6.1, unmodified, over both of Quiver's SQL doors.

Usage:
    python superset_e2e.py PG_ADDR FLIGHT_ADDR TPCH_DIR OUT_DIR

Sets up a Superset of its own (SQLite metadata in a temporary folder: `superset
db upgrade`, `fab create-admin`, `init`), starts its web server, and through its
REST API, as the UI does, for each door:

- the PostgreSQL port with Superset's own PostgreSQL engine spec
  (`postgresql+psycopg2://`), and
- the Flight SQL port with flightsql-dbapi's `datafusion://` dialect and
  Quiver's engine spec (clients/superset-quiver, found by Superset's own loader):

adds the database, lists its schemas and tables, creates a dataset on
tpch.orders (Superset reflects its columns, keys and indexes), checks the
column types it recorded, runs a chart query for each time grain with a
time-range filter and compares the groups with DuckDB over the same Parquet
files, then saves a chart and runs it from its saved query context.

Run with target/superset-venv's Python. Prints "SUPERSET OK" and exits 0 on success.
"""

import datetime
import decimal
import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import duckdb
import requests

GRAINS = {
    "P1D": "day",
    "P1W": "week",
    "P1M": "month",
    "P3M": "quarter",
    "P1Y": "year",
}
RANGE = ("1994-11-15", "1996-02-10")


LOADER = """
from superset.app import create_app
app = create_app()
with app.app_context():
    from superset.db_engine_specs import get_engine_spec, load_engine_specs
    assert "Quiver (Flight SQL)" in [s.engine_name for s in load_engine_specs()]
    print(get_engine_spec("datafusion", "flightsql").__name__)
"""


def fail(msg: str) -> None:
    print(f"SUPERSET FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Superset:
    def __init__(self, home: str, out_dir: str):
        self.home = home
        config = os.path.join(home, "superset_config.py")
        with open(config, "w") as f:
            f.write(
                "SECRET_KEY = 'quiver-superset-test-0123456789abcdef'\n"
                f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{home}/superset.db'\n"
                "WTF_CSRF_ENABLED = False\n"
                "TALISMAN_ENABLED = False\n"
            )
        self.env = dict(os.environ, SUPERSET_CONFIG_PATH=config, SUPERSET_HOME=home)
        self.exe = os.path.join(os.path.dirname(sys.executable), "superset")
        self.log = open(os.path.join(out_dir, "superset.log"), "w")
        self.server = None
        self.base = ""
        self.http = requests.Session()

    def cli(self, *args: str) -> None:
        out = subprocess.run([self.exe, *args], env=self.env, capture_output=True, text=True, timeout=600)
        self.log.write(out.stdout + out.stderr)
        if out.returncode != 0:
            fail(f"superset {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")

    def start(self) -> None:
        self.cli("db", "upgrade")
        self.cli("fab", "create-admin", "--username", "admin", "--firstname", "A", "--lastname", "D",
                 "--email", "admin@example.com", "--password", "admin")
        self.cli("init")
        port = free_port()
        self.server = subprocess.Popen(
            [self.exe, "run", "-h", "127.0.0.1", "-p", str(port), "--with-threads"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if requests.get(f"{self.base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.server.poll() is not None:
                fail("superset run exited; see superset.log")
            time.sleep(0.5)
        else:
            fail("Superset did not answer /health within 120 s")
        r = self.http.post(f"{self.base}/api/v1/security/login",
                           json={"username": "admin", "password": "admin", "provider": "db", "refresh": True})
        if r.status_code != 200:
            fail(f"login: {r.status_code} {r.text}")
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def stop(self) -> None:
        if self.server:
            self.server.terminate()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()

    def call(self, method: str, path: str, **kwargs):
        r = self.http.request(method, f"{self.base}{path}", timeout=120, **kwargs)
        if r.status_code >= 300:
            fail(f"{method} {path}: {r.status_code} {r.text[:3000]}")
        return r.json()


def query_context(dataset: int, grain: str) -> dict:
    """What Superset's time-series chart sends: a time axis at `grain`, a sum, a time range."""
    return {
        "datasource": {"id": dataset, "type": "table"},
        "force": True,
        "queries": [{
            "columns": [{"timeGrain": grain, "columnType": "BASE_AXIS", "sqlExpression": "o_orderdate",
                         "label": "o_orderdate", "expressionType": "SQL"}],
            "metrics": [{"expressionType": "SIMPLE", "column": {"column_name": "o_totalprice"},
                         "aggregate": "SUM", "label": "revenue"},
                        {"expressionType": "SQL", "sqlExpression": "COUNT(*)", "label": "orders"}],
            "filters": [{"col": "o_orderdate", "op": "TEMPORAL_RANGE", "val": f"{RANGE[0]} : {RANGE[1]}"}],
            "orderby": [[{"expressionType": "SQL", "sqlExpression": "o_orderdate", "label": "o_orderdate"}, True]],
            "row_limit": 10000,
        }],
        "result_format": "json",
        "result_type": "full",
    }


def as_day(value) -> str:
    """A time-axis value as Superset returns it (epoch ms or ISO text) or DuckDB does, as a date."""
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value / 1000, datetime.timezone.utc).date().isoformat()
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()[:10]
    return str(value)[:10]


def check_door(ss: Superset, duck, name: str, uri: str, out_dir: str) -> None:
    db = ss.call("POST", "/api/v1/database/", json={"database_name": name, "sqlalchemy_uri": uri,
                                                     "expose_in_sqllab": True})["id"]
    schemas = ss.call("GET", f"/api/v1/database/{db}/schemas/")["result"]
    if "tpch" not in schemas:
        fail(f"{name}: schemas {schemas}")
    tables = ss.call("GET", f"/api/v1/database/{db}/tables/?q=(force:!t,schema_name:tpch)")["result"]
    if "orders" not in [t["value"] for t in tables]:
        fail(f"{name}: tables {tables}")
    dataset = ss.call("POST", "/api/v1/dataset/", json={"database": db, "schema": "tpch", "table_name": "orders"})["id"]
    columns = {c["column_name"]: c for c in ss.call("GET", f"/api/v1/dataset/{dataset}")["result"]["columns"]}
    if not columns.get("o_orderdate", {}).get("is_dttm"):
        fail(f"{name}: o_orderdate is not a time column: {columns.get('o_orderdate')}")
    kinds = {c: (columns[c].get("type") or "").upper() for c in ("o_comment", "o_totalprice", "o_orderkey")}
    if any(k in ("", "BLOB", "BINARY", "NULL") for k in kinds.values()) or "CHAR" not in kinds["o_comment"] and "TEXT" not in kinds["o_comment"] and "STRING" not in kinds["o_comment"]:
        fail(f"{name}: column types {kinds}")
    print(f"   {name}: dataset {dataset} with {len(columns)} columns ({kinds})")

    for grain, unit in GRAINS.items():
        result = ss.call("POST", "/api/v1/chart/data", json=query_context(dataset, grain))["result"][0]
        got = [(as_day(r["o_orderdate"]), decimal.Decimal(str(r["revenue"])).quantize(decimal.Decimal("0.01")), r["orders"])
               for r in result["data"]]
        want = [(as_day(d), decimal.Decimal(str(s)).quantize(decimal.Decimal("0.01")), n) for d, s, n in duck.execute(
            f"SELECT date_trunc('{unit}', o_orderdate) AS d, sum(o_totalprice), count(*) FROM orders "
            f"WHERE o_orderdate >= DATE '{RANGE[0]}' AND o_orderdate < DATE '{RANGE[1]}' GROUP BY d ORDER BY d").fetchall()]
        if got != want:
            fail(f"{name}: grain {grain}: Superset shows {got[:4]}… ({len(got)} groups), DuckDB {want[:4]}… ({len(want)})\n"
                 f"SQL: {result.get('query')}")
    print(f"   {name}: {len(GRAINS)} time grains with a time-range filter equal DuckDB's groups")

    context = query_context(dataset, "P1M")
    params = {"viz_type": "echarts_timeseries_line", "x_axis": "o_orderdate", "time_grain_sqla": "P1M",
              "metrics": context["queries"][0]["metrics"], "time_range": f"{RANGE[0]} : {RANGE[1]}"}
    chart = ss.call("POST", "/api/v1/chart/", json={
        "slice_name": f"revenue by month ({name})", "viz_type": "echarts_timeseries_line",
        "datasource_id": dataset, "datasource_type": "table",
        "params": json.dumps(params), "query_context": json.dumps(context)})["id"]
    data = ss.call("GET", f"/api/v1/chart/{chart}/data/?format=json&force=true")["result"][0]
    if data.get("rowcount", 0) < 12:
        fail(f"{name}: the saved chart returned {data.get('rowcount')} rows")
    with open(os.path.join(out_dir, f"superset-{name}-chart.json"), "w") as f:
        json.dump(data["data"], f, default=str)
    print(f"   {name}: saved chart {chart} runs ({data['rowcount']} months)")
    # Superset's SQLite metadata holds one dataset per table name: make room for the next door's.
    ss.call("DELETE", f"/api/v1/chart/{chart}")
    ss.call("DELETE", f"/api/v1/dataset/{dataset}")


def main(pg: str, flight: str, tpch: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    duck = duckdb.connect()
    files = glob.glob(os.path.join(tpch, "orders", "**", "*.parquet"), recursive=True) or glob.glob(
        os.path.join(tpch, "orders.parquet"))
    if not files:
        fail(f"no Parquet files for orders under {tpch}")
    duck.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet({files!r})")

    with tempfile.TemporaryDirectory() as home:
        ss = Superset(home, out_dir)
        try:
            ss.start()
            # Superset's own loader finds the engine spec and picks it for the dialect.
            found = subprocess.run([sys.executable, "-c", LOADER], env=ss.env, capture_output=True, text=True)
            if found.returncode != 0 or found.stdout.strip().splitlines()[-1:] != ["QuiverFlightSqlEngineSpec"]:
                fail(f"Superset's loader does not pick Quiver's engine spec: {found.stdout[-500:]} {found.stderr[-2000:]}")
            print("   Superset is up (db upgrade, create-admin, init, run)")
            check_door(ss, duck, "quiver_postgres", f"postgresql+psycopg2://quiver:unused@{pg}/quiver", out_dir)
            check_door(ss, duck, "quiver_flightsql", f"datafusion://{flight}?insecure=true", out_dir)
        finally:
            ss.stop()
    print("SUPERSET OK")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(*sys.argv[1:])
