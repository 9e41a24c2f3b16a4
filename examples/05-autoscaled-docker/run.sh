#!/usr/bin/env bash
# Workers as Docker containers that the coordinator adds under a burst and retires
# when idle. See README.md.
source "$(dirname "$0")/../lib.sh"

docker info >/dev/null 2>&1 || { echo "this example needs a Docker engine (docker info failed)" >&2; exit 1; }
# The image FROM scratch out of the same binary (no registry, nothing pulled).
bash "$repo/docker/build-images.sh" --binary "$QUIVER"

# TPC-H SF0.1 as Parquet, mounted read-only into every worker at the same path.
"$QUIVER" gen-tpch --scale 0.1 --out "$work/tpch" 2>/dev/null
cluster="example-$$"
cat >"$work/quiver.toml" <<TOML
[server]
target_partitions = 2

[workers]
mode = "docker"
image = "quiver:latest"
cluster = "$cluster"        # label of every container and of the network
min = 1                     # kept even when idle (0 = scale to zero)
max = 3
cpus = 1.0
memory = "1GiB"
volumes = ["$work/tpch:$work/tpch:ro"]
busy_fragments = 1          # add a worker when each one runs this many fragments
cooldown_secs = 1           # least time between two scaling decisions
idle_secs = 3               # retire a worker idle this long, down to min

[[source]]
name = "tpch"
kind = "files"
location = "$work/tpch"
format = "parquet"
TOML
start_quiver "$work/quiver.toml"
workers() { q "SELECT count(*) AS n FROM quiver.system.workers WHERE state = 'ready'" | tail -n 1; }
expect "one worker at rest" "1" "$(workers)"

# A burst: four CPU-heavy queries at once.
slow="SELECT count(*) AS n FROM tpch.lineitem
      WHERE levenshtein(l_comment || l_comment, reverse(l_comment) || l_comment) > 40"
burst=()
for i in 1 2 3 4; do q "$slow" >"$work/burst-$i.csv" & burst+=($!); done
peak=1
while kill -0 "${burst[@]}" 2>/dev/null; do
  n="$(workers)"; [ "$n" -gt "$peak" ] && peak="$n"
  sleep 0.5
done
for p in "${burst[@]}"; do wait "$p"; done
echo "workers at the peak of the burst: $peak"
[ "$peak" -ge 2 ] || { echo "EXAMPLE FAILED: the pool did not grow under the burst" >&2; exit 1; }
answer="$(tail -n 1 "$work/burst-1.csv")"
for i in 2 3 4; do expect "burst query $i has the same answer" "$answer" "$(tail -n 1 "$work/burst-$i.csv")"; done

# Why it scaled, as the coordinator recorded it.
q "SELECT action, worker, reason FROM quiver.system.scaling_events ORDER BY at"

# Idle again: back to min within idle_secs and a cooldown or two.
for _ in $(seq 1 120); do [ "$(workers)" = "1" ] && break; sleep 0.5; done
expect "back to one worker when idle" "1" "$(workers)"

# Stopping the coordinator removes its containers and network.
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
pids=()
expect "no container left behind" "" "$(docker ps -aq --filter "label=quiver.cluster=$cluster")"
expect "no network left behind" "" "$(docker network ls -q --filter "label=quiver.cluster=$cluster")"
echo "EXAMPLE OK"
