#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the ONNX Runtime library (scripts/setup_runtime.sh),
# then cargo test with the runtime required, so tests that need it fail rather than skip if it is missing.
# Tests that use the real datasets in ../shared skip with a message when that folder is absent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup_runtime.sh
ESMBENCH_REQUIRE_ORT=1 cargo test --release "$@"
