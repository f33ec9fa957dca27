#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the ONNX Runtime library (scripts/setup_runtime.sh)
# and the export venv (scripts/setup_export_env.sh: torch, transformers, onnx... in a per-user cache, reused
# across clones), then cargo test with both required, so the tests that need them fail rather than skip if
# either is missing (a failing pip install stops this script). Tests that use the real datasets in ../shared
# skip with a message when that folder is absent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup_runtime.sh
ESMBENCH_PYTHON="$(scripts/setup_export_env.sh)"
export ESMBENCH_PYTHON
ESMBENCH_REQUIRE_ORT=1 ESMBENCH_REQUIRE_EXPORT=1 cargo test --release "$@"
