#!/usr/bin/env bash
# Installs (when missing) and starts the database servers the tests use: PostgreSQL and
# MariaDB from Debian's packages, each as a private instance of this checkout, listening
# on 127.0.0.1 only, with its data under target/services. Safe to run any number of times.
#
#   PostgreSQL: 127.0.0.1:${QUIVER_PG_PORT:-54329}, database quiver, user quiver / password quiver,
#               TLS with a certificate signed by target/services/pg/ca.crt
#   MariaDB:    127.0.0.1:${QUIVER_MYSQL_PORT:-33069}, database quiver, user quiver / password quiver
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="$root/target/services"
pg_port="${QUIVER_PG_PORT:-54329}"
my_port="${QUIVER_MYSQL_PORT:-33069}"
mkdir -p "$state"
action="${1:-start}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
missing=()
[ -n "$(pg_bin)" ] || missing+=(postgresql)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- PostgreSQL -------------------------------------------------------------
pg="$(pg_bin)"
pgdata="$state/pg"
# The server refuses to run as root: run it as the postgres user when we are root.
pg_run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# `services.sh stop-postgres` stops the test instance (the fault tests use it).
if [ "$action" = stop-postgres ]; then
  pg_run "$pg/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null
  exit 0
fi
if [ ! -f "$pgdata/PG_VERSION" ]; then
  mkdir -p "$pgdata"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pgdata"
  pg_run "$pg/initdb" -D "$pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
fi
# TLS: a test CA (ca.crt, which the TLS tests trust) and a server certificate it signed
# for localhost and 127.0.0.1.
certs_made=0
if [ ! -f "$pgdata/ca.crt" ]; then
  tls_tmp="$(mktemp -d)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Quiver test CA" \
    -keyout "$tls_tmp/ca.key" -out "$tls_tmp/ca.crt" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls_tmp/server.key" -out "$tls_tmp/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$tls_tmp/ext"
  openssl x509 -req -in "$tls_tmp/server.csr" -CA "$tls_tmp/ca.crt" -CAkey "$tls_tmp/ca.key" -CAcreateserial \
    -days 3650 -extfile "$tls_tmp/ext" -out "$tls_tmp/server.crt" >/dev/null 2>&1
  cp "$tls_tmp/server.crt" "$tls_tmp/server.key" "$pgdata/"
  chmod 600 "$pgdata/server.key"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pgdata/server.key" "$pgdata/server.crt"
  cp "$tls_tmp/ca.crt" "$pgdata/ca.crt"
  rm -rf "$tls_tmp"
  certs_made=1
fi
pg_opts="-p $pg_port -c listen_addresses=127.0.0.1 -k $pgdata -c log_statement=all -c logging_collector=off"
pg_opts="$pg_opts -c ssl=on -c ssl_cert_file=$pgdata/server.crt -c ssl_key_file=$pgdata/server.key"
# Logical replication: accelerated copies kept live from the change stream (docs/datasets.md).
pg_opts="$pg_opts -c wal_level=logical -c max_replication_slots=32 -c max_wal_senders=32"
if ! pg_run "$pg/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  pg_run "$pg/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w start -o "$pg_opts" >/dev/null
elif [ "$certs_made" = 1 ]; then
  pg_run "$pg/pg_ctl" -D "$pgdata" reload >/dev/null   # new certificates
fi
psql_su() { pg_run psql -h "$pgdata" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_su -c "select 1 from pg_roles where rolname = 'quiver'")" != 1 ]; then
  psql_su -c "create role quiver login password 'quiver'"
fi
if [ "$(psql_su -c "select 1 from pg_database where datname = 'quiver'")" != 1 ]; then
  psql_su -c "create database quiver owner quiver"
fi
# The role reads the change stream (replication connections, slots).
if [ "$(psql_su -c "select rolreplication from pg_roles where rolname = 'quiver'")" != t ]; then
  psql_su -c "alter role quiver replication"
fi
# An instance started by an older version of this script runs without TLS or
# logical replication: restart it.
if [ "$(psql_su -c 'show ssl')" != on ] || [ "$(psql_su -c 'show wal_level')" != logical ]; then
  pg_run "$pg/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -m fast -w restart -o "$pg_opts" >/dev/null
fi
echo "postgresql ready on 127.0.0.1:$pg_port (log: $pgdata/server.log)"

# --- MariaDB ----------------------------------------------------------------
mydata="$state/mariadb"
mysock="$mydata/mysqld.sock"
mariadbd_bin="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
my_user_args=()
[ "$(id -u)" = 0 ] && my_user_args=(--user=mysql)
if [ ! -d "$mydata/mysql" ]; then
  mkdir -p "$mydata"
  [ "$(id -u)" = 0 ] && chown mysql:mysql "$mydata"
  mariadb-install-db --datadir="$mydata" "${my_user_args[@]}" --auth-root-authentication-method=socket \
    --skip-test-db >/dev/null
fi
if ! mariadb-admin --socket="$mysock" ping >/dev/null 2>&1; then
  nohup "$mariadbd_bin" --no-defaults --datadir="$mydata" "${my_user_args[@]}" --port="$my_port" \
    --bind-address=127.0.0.1 --socket="$mysock" --pid-file="$mydata/mariadbd.pid" \
    --general-log=1 --general-log-file="$mydata/general.log" --log-error="$mydata/error.log" >/dev/null 2>&1 &
  for _ in $(seq 1 100); do
    mariadb-admin --socket="$mysock" ping >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
mariadb --socket="$mysock" -u root -e "
  CREATE DATABASE IF NOT EXISTS quiver;
  CREATE USER IF NOT EXISTS 'quiver'@'127.0.0.1' IDENTIFIED BY 'quiver';
  CREATE USER IF NOT EXISTS 'quiver'@'localhost' IDENTIFIED BY 'quiver';
  GRANT ALL ON quiver.* TO 'quiver'@'127.0.0.1';
  GRANT ALL ON quiver.* TO 'quiver'@'localhost';"
echo "mariadb ready on 127.0.0.1:$my_port (log: $mydata/general.log)"
