#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the ONNX Runtime library (scripts/setup_runtime.sh) and
# Debian's Chromium (report.html is screenshotted headless), then cargo test with both required, so tests that
# need them fail rather than skip if they are missing.
# Tests that use the real datasets in ../shared skip with a message when that folder is absent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup_runtime.sh
if [ -z "${ESMBENCH_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "test: installing Debian's chromium for the report.html rendering test" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
ESMBENCH_REQUIRE_ORT=1 ESMBENCH_REQUIRE_CHROMIUM=1 cargo test --release "$@"
