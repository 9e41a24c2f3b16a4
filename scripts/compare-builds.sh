#!/usr/bin/env bash
# TPC-H through two `quiver` binaries in one run: what a build setting (a profile,
# per-package opt-levels) costs at run time. Each binary serves the demo (2 embedded
# workers) over the same generated TPC-H data; scripts/compare_builds.py times the
# 22 queries through ADBC, alternating between the servers round by round.
#
#   scripts/compare-builds.sh BASE_BINARY NEW_BINARY [SCALE=1] [ROUNDS=3]
#
# Needs target/venv (scripts/setup-python.sh). Prints a Markdown table.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base="$1" new="$2" scale="${3:-1}" rounds="${4:-3}"
data="$root/target/bench-data/builds"
mkdir -p "$data"
"$base" gen-tpch --scale "$scale" --out "$data/tpch-sf$scale" >&2
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
serve() { # binary port
  # Each server its own data dir (metadata store), the same TPC-H files.
  mkdir -p "$data/$2" && ln -sfn "$data/tpch-sf$scale" "$data/$2/tpch-sf$scale"
  "$1" serve --scale "$scale" --data-dir "$data/$2" --listen "127.0.0.1:$2" \
    --http-listen "127.0.0.1:$(($2 + 1))" --postgres-listen "127.0.0.1:$(($2 + 2))" \
    >"$data/serve-$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do
    grep -q 'Flight SQL listening' "$data/serve-$2.log" && return 0
    sleep 0.5
  done
  echo "$1 did not start; its log: $data/serve-$2.log" >&2
  exit 1
}
serve "$base" 50151
serve "$new" 50161
"$root/target/venv/bin/python" "$root/scripts/compare_builds.py" "$rounds" \
  "base=127.0.0.1:50151" "new=127.0.0.1:50161"
