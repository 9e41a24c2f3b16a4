#!/usr/bin/env bash
# The lint gate the test command runs first: formatting (rustfmt.toml) and module
# cycles. Clippy's lints run during the test command's build: scripts/test.sh
# builds the workspace's own crates through clippy-driver with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
python3 scripts/check-module-cycles.py
