#!/usr/bin/env bash
# A view across PostgreSQL and Parquet, and an accelerated copy of it. See README.md.
source "$(dirname "$0")/../lib.sh"

bash "$repo/scripts/services.sh" >/dev/null
PGPASSWORD=quiver psql -h 127.0.0.1 -p 54329 -U quiver -d quiver -qtA -v ON_ERROR_STOP=1 -c "
  SET client_min_messages = warning;
  DROP TABLE IF EXISTS ex_accounts;
  CREATE TABLE ex_accounts (id int PRIMARY KEY, owner text, region text);
  INSERT INTO ex_accounts SELECT i, 'owner' || i, CASE WHEN i % 3 = 0 THEN 'emea' ELSE 'amer' END
    FROM generate_series(1, 300) i;"
# Payments as Parquet files on local disk.
mkdir -p "$work/lake/payments"
"$PY" - "$work/lake/payments" <<'PY'
import sys, pyarrow as pa, pyarrow.parquet as pq
n = 3000
pq.write_table(pa.table({"account_id": [i % 300 + 1 for i in range(n)],
                         "amount": [float(i % 50) for i in range(n)]}), f"{sys.argv[1]}/part-0.parquet")
PY

cat >"$work/quiver.toml" <<TOML
[server]
data_dir = "$work/data"          # views and accelerated copies live here

[[source]]
name = "crm"
kind = "postgres"
url = "postgres://quiver:\${EX_PG_PASSWORD}@127.0.0.1:54329/quiver"
remote_schema = "public"

[[source]]
name = "lake"
kind = "files"
location = "$work/lake"
format = "parquet"
TOML
start_quiver "$work/quiver.toml" EX_PG_PASSWORD=quiver

q "CREATE VIEW quiver.reports.revenue_by_region AS
   SELECT a.region, count(*) AS payments, sum(p.amount) AS revenue
   FROM crm.ex_accounts a JOIN lake.payments p ON p.account_id = a.id
   GROUP BY a.region" >/dev/null
got="$(q "SELECT * FROM quiver.reports.revenue_by_region ORDER BY region")"
echo "$got"
expect "the view joins PostgreSQL and Parquet" "region,payments,revenue
amer,2000,49000.0
emea,1000,24500.0" "$got"

# An accelerated copy: Parquet files that every worker reads, refreshed on demand.
q "ALTER TABLE quiver.reports.revenue_by_region SET (accelerated = true)" >/dev/null
state="$(q "SELECT state, \"rows\" FROM quiver.system.accelerations WHERE dataset = 'quiver.reports.revenue_by_region'")"
expect "the copy is ready" "state,rows
ready,2" "$state"
plan="$(q "EXPLAIN SELECT * FROM quiver.reports.revenue_by_region")"
echo "$plan" | grep -q "file_type=parquet" && ! echo "$plan" | grep -q "ex_accounts" \
  || { echo "EXAMPLE FAILED: the query does not read the copy" >&2; echo "$plan" >&2; exit 1; }
echo "ok: queries read the copy, not PostgreSQL"

# The source changes; the copy keeps its answer until it is refreshed.
PGPASSWORD=quiver psql -h 127.0.0.1 -p 54329 -U quiver -d quiver -qtA -c "UPDATE ex_accounts SET region = 'emea'" >/dev/null
expect "the copy answers as of its refresh" "$got" "$(q "SELECT * FROM quiver.reports.revenue_by_region ORDER BY region")"
q "REFRESH ACCELERATION quiver.reports.revenue_by_region" >/dev/null
expect "after REFRESH ACCELERATION" "region,payments,revenue
emea,3000,73500.0" "$(q "SELECT * FROM quiver.reports.revenue_by_region ORDER BY region")"
echo "EXAMPLE OK"
