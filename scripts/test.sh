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
# One build for the whole workspace, so features unify and nothing builds twice;
# the end-to-end tests start the `quiver` binary this produces.
cargo build --workspace --bins --tests --locked
cargo test --workspace --locked -- --test-threads 2
# The Helm chart: helm lint + template, rendered objects validated against Kubernetes' schemas.
scripts/check-helm.sh
