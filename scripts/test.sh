#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the ONNX Runtime library (scripts/setup_runtime.sh),
# the export venv (scripts/setup_export_env.sh: torch, transformers, onnx... in a per-user cache, reused
# across clones) and Debian's Chromium (report.html is screenshotted headless), then cargo test with all
# three required, so the tests that need them fail rather than skip if one is missing (a failing install
# stops this script). Tests that use the real datasets in ../shared skip with a message when that folder
# is absent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup_runtime.sh
ESMBENCH_PYTHON="$(scripts/setup_export_env.sh)"
export ESMBENCH_PYTHON
if [ -z "${ESMBENCH_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "test: installing Debian's chromium for the report.html rendering test" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
ESMBENCH_REQUIRE_ORT=1 ESMBENCH_REQUIRE_EXPORT=1 ESMBENCH_REQUIRE_CHROMIUM=1 cargo test --release "$@"
