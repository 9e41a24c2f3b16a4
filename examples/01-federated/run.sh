#!/usr/bin/env bash
# PostgreSQL + MariaDB + Parquet files on S3 in one query. See README.md.
source "$(dirname "$0")/../lib.sh"

# The two databases (scripts/services.sh: private instances on 127.0.0.1).
bash "$repo/scripts/services.sh" >/dev/null
PGPASSWORD=quiver psql -h 127.0.0.1 -p 54329 -U quiver -d quiver -qtA -v ON_ERROR_STOP=1 -c "
  DROP TABLE IF EXISTS ex_customers;
  CREATE TABLE ex_customers (id int PRIMARY KEY, name text, country text);
  INSERT INTO ex_customers VALUES (1, 'Ada', 'UK'), (2, 'Grace', 'US'), (3, 'Linus', 'FI'), (4, 'Margaret', 'US');"
MYSQL_PWD=quiver mariadb -h 127.0.0.1 -P 33069 -u quiver -D quiver -e "
  DROP TABLE IF EXISTS ex_orders;
  CREATE TABLE ex_orders (id int PRIMARY KEY, customer_id int, amount decimal(10,2));
  INSERT INTO ex_orders VALUES (10, 1, 25.00), (11, 2, 40.50), (12, 2, 9.50), (13, 4, 100.00), (14, 3, 12.00);"

# An S3-compatible server (moto, from PyPI) with Parquet click events in a bucket.
S3_PORT="$(free_port)"
"$repo/target/venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >/dev/null 2>&1 &
pids+=($!)
"$PY" - "$S3_PORT" <<'PY'
import io, sys, time, boto3, pyarrow as pa, pyarrow.parquet as pq
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
for _ in range(100):
    try:
        s3.create_bucket(Bucket="clicks"); break
    except Exception:
        time.sleep(0.1)
clicks = pa.table({"customer_id": [1, 1, 2, 3, 4, 4, 4], "page": ["a", "b", "a", "c", "a", "b", "c"]})
buf = io.BytesIO(); pq.write_table(clicks, buf)
s3.put_object(Bucket="clicks", Key="events/part-0.parquet", Body=buf.getvalue())
PY

cat >"$work/quiver.toml" <<TOML
[[source]]
name = "crm"                    # PostgreSQL: quiver.crm.<table>
kind = "postgres"
url = "postgres://quiver:\${EX_PG_PASSWORD}@127.0.0.1:54329/quiver"
remote_schema = "public"

[[source]]
name = "shop"                   # MariaDB
kind = "mysql"
url = "mysql://quiver:\${EX_MY_PASSWORD}@127.0.0.1:33069/quiver"
statement_timeout_secs = 300

[[source]]
name = "web"                    # Parquet on S3: each folder under location is a table
kind = "files"
location = "s3://clicks/"
format = "parquet"
[source.options]
endpoint = "http://127.0.0.1:$S3_PORT"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
allow_http = "true"
TOML
start_quiver "$work/quiver.toml" EX_PG_PASSWORD=quiver EX_MY_PASSWORD=quiver

query="SELECT c.country, count(DISTINCT o.id) AS orders, sum(DISTINCT o.amount) AS revenue, count(DISTINCT e.page) AS pages
FROM crm.ex_customers c
JOIN shop.ex_orders o ON o.customer_id = c.id
JOIN web.events e ON e.customer_id = c.id
GROUP BY c.country ORDER BY c.country"
echo "$query"
got="$(q "$query")"
echo "$got"
expect "one answer over three sources" "country,orders,revenue,pages
FI,1,12.00,1
UK,1,25.00,2
US,3,150.00,3" "$got"
# Each source got its own part of the work: EXPLAIN shows the statements sent to the databases.
plan="$(q "EXPLAIN $query")"
echo "$plan" | grep -q 'ex_customers' && echo "$plan" | grep -q 'ex_orders' && echo "$plan" | grep -q 'events/part-0.parquet' \
  || { echo "EXAMPLE FAILED: the plan does not read all three sources" >&2; echo "$plan" >&2; exit 1; }
echo "EXAMPLE OK"
