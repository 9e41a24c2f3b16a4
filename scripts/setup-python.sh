#!/usr/bin/env bash
# Creates target/venv with the Python clients the end-to-end tests drive
# (adbc-driver-flightsql, pyarrow). Idempotent: reinstalls only when the
# requirements change.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/venv"
req="$root/tests/python/requirements.txt"
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "python clients installed in $venv"
