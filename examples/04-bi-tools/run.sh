#!/usr/bin/env bash
# The connection settings BI tools and drivers use, each tried with the real client.
# See README.md.
source "$(dirname "$0")/../lib.sh"

# The demo's data: TPC-H generated as Parquet.
"$QUIVER" gen-tpch --scale 0.01 --out "$work/tpch" >/dev/null
cat >"$work/quiver.toml" <<TOML
[server.auth]
users = { bi = "\${EX_BI_PW}" }

[[source]]
name = "tpch"
kind = "files"
location = "$work/tpch"
format = "parquet"
TOML
start_quiver "$work/quiver.toml" EX_BI_PW=bi-pw
export QUIVER_USER=bi QUIVER_PASSWORD=bi-pw
want="$(q "SELECT count(*) AS n FROM tpch.nation")"
expect "the quiver CLI (Flight SQL)" "n
25" "$want"

# psql, as a person at a terminal or a script (and Metabase, Grafana, DBeaver: the same URL).
got="$(PGPASSWORD=bi-pw psql "postgres://bi@127.0.0.1:$PG_PORT/quiver" -X -qtA -c "SELECT count(*) FROM tpch.nation")"
expect "psql on the PostgreSQL port" "25" "$got"

# SQLAlchemy, what Superset and most Python BI tools use, reflecting a table.
got="$("$PY" - "$PG_PORT" <<'PY'
import sys, sqlalchemy as sa
engine = sa.create_engine(f"postgresql+psycopg2://bi:bi-pw@127.0.0.1:{sys.argv[1]}/quiver")
columns = [c["name"] for c in sa.inspect(engine).get_columns("nation", schema="tpch")]
with engine.connect() as c:
    n = c.execute(sa.text("SELECT count(*) FROM tpch.nation WHERE n_regionkey = :r"), {"r": 1}).scalar()
print(",".join(columns), n)
PY
)"
expect "SQLAlchemy (psycopg2) reflection and a bound parameter" "n_nationkey,n_name,n_regionkey,n_comment 5" "$got"

# ADBC's Flight SQL driver (pyarrow, pandas, Polars, DuckDB's ADBC scanner).
got="$("$PY" - "$QUIVER_HOST" <<'PY'
import sys, adbc_driver_flightsql.dbapi as flightsql
with flightsql.connect(f"grpc://{sys.argv[1]}", db_kwargs={"username": "bi", "password": "bi-pw"},
                       autocommit=True) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT n_name FROM tpch.nation WHERE n_nationkey = 7")
        print(cur.fetch_arrow_table().column(0)[0].as_py())
PY
)"
expect "ADBC Flight SQL with a user and password" "GERMANY" "$got"

# HTTP, for scripts and notebooks.
got="$(curl -s -u bi:bi-pw -H 'Content-Type: application/sql' --data 'SELECT count(*) AS n FROM tpch.region' \
  "http://127.0.0.1:$HTTP_PORT/v1/sql")"
expect "POST /v1/sql" '[{"n":5}]' "$got"
echo "EXAMPLE OK"
