# Shared by the examples' run.sh scripts (source it): find the binary, start and
# stop Quiver on free loopback ports, run SQL, check answers.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The quiver binary: $QUIVER_BIN, else a release build (made if missing).
quiver_bin() {
  if [ -n "${QUIVER_BIN:-}" ]; then echo "$QUIVER_BIN"; return; fi
  [ -x "$repo/target/dist/quiver" ] || (cd "$repo" && cargo build --profile dist --bin quiver >&2)
  echo "$repo/target/dist/quiver"
}
QUIVER="$(quiver_bin)"
PY="$repo/target/venv/bin/python"   # scripts/setup-python.sh makes it

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_quiver CONFIG_FILE [ENV=VALUE ...]: serves it; sets QUIVER_HOST, PG_PORT, HTTP_PORT.
start_quiver() {
  local config="$1"; shift
  local log="$work/quiver.log"
  PG_PORT="$(free_port)"; HTTP_PORT="$(free_port)"
  env "$@" "$QUIVER" serve --config "$config" --listen 127.0.0.1:0 \
    --postgres-listen "127.0.0.1:$PG_PORT" --http-listen "127.0.0.1:$HTTP_PORT" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    QUIVER_HOST="$(sed -n 's|^quiver: Flight SQL listening on grpc://||p' "$log" | head -n 1)"
    [ -n "$QUIVER_HOST" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$log" >&2; echo "quiver did not start" >&2; exit 1; }
    sleep 0.2
  done
  cat "$log" >&2; echo "quiver did not start within 60 s" >&2; exit 1
}

# q SQL: runs it, prints CSV (header line first).
q() { "$QUIVER" sql --host "$QUIVER_HOST" -f csv -q "$1"; }

# expect NAME WANT GOT: stops the example when an answer is not the one it should be.
expect() {
  if [ "$2" != "$3" ]; then
    printf 'EXAMPLE FAILED: %s\n  want: %s\n  got:  %s\n' "$1" "$2" "$3" >&2
    exit 1
  fi
  echo "ok: $1"
}
