#!/usr/bin/env bash
# Installs (when missing) the third-party clients the end-to-end tests drive, from
# Debian's packages: headless Chromium (the web console test), psql and PostgreSQL's
# JDBC driver with a JDK (the PostgreSQL front end tests), curl (the HTTP SQL API
# test) and script (the terminal test of `quiver sql`). Safe to run any number of times.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
