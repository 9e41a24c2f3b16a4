#!/usr/bin/env bash
# Creates the Python environments the end-to-end tests drive: target/venv with the
# clients (tests/python/requirements.txt: ADBC, pyarrow, psycopg, asyncpg, ...) and
# target/dbt-venv with dbt (tests/python/requirements-dbt.txt; dbt-core pins
# protobuf below what grpcio-tools needs, so it lives apart), and
# target/superset-venv with Apache Superset (tests/python/requirements-superset.txt)
# and Quiver's engine spec for it (clients/superset-quiver). Idempotent: each is
# reinstalled only when its requirements change.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

install() {
  local venv="$1" req="$2"
  local stamp="$venv/.requirements"
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
    return 0
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
  echo "python packages of $(basename "$req") installed in $venv"
}

install "$root/target/venv" "$root/tests/python/requirements.txt"
install "$root/target/dbt-venv" "$root/tests/python/requirements-dbt.txt"
install "$root/target/superset-venv" "$root/tests/python/requirements-superset.txt"
# The engine spec, from this checkout (reinstalled each time: it is small and may change).
"$root/target/superset-venv/bin/pip" install --quiet --disable-pip-version-check \
  --no-deps --force-reinstall "$root/clients/superset-quiver"
