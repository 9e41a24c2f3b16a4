#!/usr/bin/env bash
# The whole test suite: unit tests and end-to-end tests against real processes.
# Installs what the tests need first (Python Flight SQL clients into target/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
scripts/services.sh
# One build for the whole workspace, so features unify and nothing builds twice;
# the end-to-end tests start the `quiver` binary this produces.
cargo build --workspace --bins --tests --locked
cargo test --workspace --locked -- --test-threads 2
