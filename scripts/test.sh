#!/usr/bin/env bash
# The whole test suite: unit tests and end-to-end tests against real processes.
# Installs what the tests need first (Python clients into target/venv, PostgreSQL and
# MariaDB, Chromium, psql, curl). The Docker tests need a running Docker engine; they build their images
# FROM scratch out of the test build (docker/build-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
scripts/setup-tools.sh
scripts/services.sh
# The lint gate: formatting and module cycles first, clippy's lints during the build.
scripts/lint.sh
# Clippy lints the workspace's own crates as they build (clippy-driver wraps rustc
# for workspace members only), so the gate costs no second build of the
# dependencies; any warning fails the build. `cargo test` runs with the same
# wrapper, so nothing builds twice.
export RUSTC_WORKSPACE_WRAPPER=clippy-driver
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# One build for the whole workspace, so features unify and nothing builds twice;
# the end-to-end tests start the `quiver` binary this produces.
cargo build --workspace --bins --tests --locked
cargo test --workspace --locked -- --test-threads 2
# The Helm chart: helm lint + template, rendered objects validated against Kubernetes' schemas.
scripts/check-helm.sh
