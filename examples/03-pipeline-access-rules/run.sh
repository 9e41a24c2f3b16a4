#!/usr/bin/env bash
# A pipeline (CREATE TABLE AS, INSERT, COPY to Parquet) run by an admin, read by an
# analyst under access rules. See README.md.
source "$(dirname "$0")/../lib.sh"

bash "$repo/scripts/services.sh" >/dev/null
PGPASSWORD=quiver psql -h 127.0.0.1 -p 54329 -U quiver -d quiver -qtA -v ON_ERROR_STOP=1 -c "
  SET client_min_messages = warning;
  DROP TABLE IF EXISTS ex_signups;
  CREATE TABLE ex_signups (id int PRIMARY KEY, email text, country text, day date);
  INSERT INTO ex_signups SELECT i, 'user' || i || '@example.com', (ARRAY['DE','FR','US'])[i % 3 + 1],
    DATE '2026-11-01' + (i % 10) FROM generate_series(1, 90) i;"
mkdir -p "$work/lake"

cat >"$work/quiver.toml" <<TOML
[server.auth]                     # passwords from the environment; use \`quiver passwd\` hashes in production
users = { etl = { password = "\${EX_ETL_PW}", roles = ["admin"] }, ana = { password = "\${EX_ANA_PW}", roles = ["analyst"] } }

[[access.rule]]                   # analysts: EU rows of the curated table, e-mails masked
roles = ["analyst"]
schema = "lake"
table = "signups_daily"
row_filter = "country IN ('DE', 'FR')"
masks = { email = "'***'" }

[[source]]
name = "crm"
kind = "postgres"
url = "postgres://quiver:\${EX_PG_PASSWORD}@127.0.0.1:54329/quiver"
remote_schema = "public"

[[source]]
name = "lake"                     # a writable folder of Parquet tables
kind = "files"
location = "$work/lake"
format = "parquet"
writable = true
TOML
start_quiver "$work/quiver.toml" EX_PG_PASSWORD=quiver EX_ETL_PW=etl-pw EX_ANA_PW=ana-pw

as() { local user="$1" pw="$2"; shift 2; QUIVER_USER="$user" QUIVER_PASSWORD="$pw" q "$1"; }
etl() { as etl etl-pw "$1"; }
ana() { as ana ana-pw "$1"; }

# The pipeline: a table from PostgreSQL, more rows later, an export for another team.
expect "CREATE TABLE AS" "count
63" "$(etl "CREATE TABLE lake.signups_daily AS SELECT * FROM crm.ex_signups WHERE day < DATE '2026-11-08'")"
expect "INSERT" "count
27" "$(etl "INSERT INTO lake.signups_daily SELECT * FROM crm.ex_signups WHERE day >= DATE '2026-11-08'")"
expect "COPY TO Parquet" "count
3" "$(etl "COPY (SELECT country, count(*) AS signups FROM lake.signups_daily GROUP BY country) TO '$work/lake/by_country/' (FORMAT parquet)")"
"$PY" - "$work/lake/by_country" <<'PY'
import sys, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet").to_table().sort_by("country")
assert t.to_pylist() == [{"country": "DE", "signups": 30}, {"country": "FR", "signups": 30},
                         {"country": "US", "signups": 30}], t.to_pylist()
print("ok: the export reads back with pyarrow")
PY

# The analyst sees EU rows only, e-mails masked; other tables and writes are refused.
expect "the analyst's view" "country,n,emails
DE,30,***
FR,30,***" "$(ana "SELECT country, count(*) AS n, min(email) AS emails FROM lake.signups_daily GROUP BY country ORDER BY country")"
if ana "SELECT * FROM crm.ex_signups" >/dev/null 2>"$work/denied.txt"; then
  echo "EXAMPLE FAILED: the analyst read a table no rule grants" >&2; exit 1
fi
grep -q "ex_signups" "$work/denied.txt" && echo "ok: $(head -n 1 "$work/denied.txt")"
if ana "INSERT INTO lake.signups_daily SELECT * FROM lake.signups_daily" >/dev/null 2>"$work/denied.txt"; then
  echo "EXAMPLE FAILED: the analyst wrote" >&2; exit 1
fi
echo "ok: the analyst cannot write: $(head -n 1 "$work/denied.txt")"
echo "EXAMPLE OK"
