#!/usr/bin/env bash
# Installs a Ballista scheduler, executor and CLI (from crates.io, with `cargo install`)
# into target/ballista/bin, for the TPC-H benchmark's Ballista baseline. Not part of
# the test suite: it is another DataFusion build, about an hour on 2 cores.
#
#   bash scripts/install-ballista.sh        # then: cargo bench -p quiver-coordinator --bench tpch -- ...
set -euo pipefail
cd "$(dirname "$0")/.."
version=55.0.0   # the Ballista release on the same DataFusion major as Quiver
root=target/ballista
# One target dir for the three, so the DataFusion crates they share build once.
common=(--locked --root "$root" --target-dir "$root/build")
cargo install "${common[@]}" "ballista-scheduler@$version" --no-default-features --features build-binary
cargo install "${common[@]}" "ballista-executor@$version"
cargo install "${common[@]}" "ballista-cli@$version" --no-default-features --features cli
ls -l "$root/bin"
