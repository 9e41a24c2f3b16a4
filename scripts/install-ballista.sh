#!/usr/bin/env bash
# Installs a Ballista scheduler and executor (from crates.io, with `cargo install`) and
# the benchmark's Ballista client (scripts/ballista-client) into target/ballista/bin,
# for the TPC-H benchmark's Ballista baseline. Not part of the test suite: it is
# another DataFusion build, about an hour on 2 cores.
#
#   bash scripts/install-ballista.sh        # then: cargo bench -p quiver-coordinator --bench tpch -- ...
set -euo pipefail
cd "$(dirname "$0")/.."
version=55.0.0   # the Ballista release on the same DataFusion major as Quiver
root=target/ballista
# One target dir for the three, so the DataFusion crates they share build once (the
# client's Cargo.lock and features match the executor's for that reason; ballista-cli
# would need a second DataFusion build with other features).
common=(--locked --root "$root" --target-dir "$root/build")
cargo install "${common[@]}" "ballista-scheduler@$version" --no-default-features --features build-binary
cargo install "${common[@]}" "ballista-executor@$version"
cargo install "${common[@]}" --path scripts/ballista-client
ls -l "$root/bin"
