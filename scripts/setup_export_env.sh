#!/usr/bin/env bash
# Creates (or reuses) the Python venv for scripts/export_onnx.py and scripts/bench.sh, and prints its
# python path on stdout (everything else goes to stderr), e.g.  export ESMBENCH_PYTHON="$(scripts/setup_export_env.sh)"
#
# The venv lives in a per-user cache outside the repository, like cargo's registry:
#   ${ESMBENCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esmbench}/export-venv-<hash>
# where <hash> covers scripts/requirements-export.txt and the base Python's version and platform, so every
# clone with the same pins reuses one install (torch is several GB) and a changed pin gets a fresh venv.
# Base interpreter: $ESMBENCH_BASE_PYTHON, else python3. Fails loudly when pip cannot install the pins.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/scripts/requirements-export.txt"
base="${ESMBENCH_BASE_PYTHON:-$(command -v python3 || true)}"
if [ -z "$base" ]; then
  echo "setup_export_env: python3 (3.10 or newer, with the venv module) is needed" >&2
  exit 1
fi

# Hashed in Python, not with sha256sum/shasum, so Linux and macOS agree.
key="$("$base" - "$req" <<'PY'
import hashlib, platform, sys
h = hashlib.sha256(open(sys.argv[1], "rb").read())
h.update(f"{sys.version_info[0]}.{sys.version_info[1]} {platform.system()} {platform.machine()}".encode())
print(h.hexdigest()[:16])
PY
)"
cache="${ESMBENCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esmbench}"
venv="$cache/export-venv-$key"
python="$venv/bin/python"
stamp="$venv/.esmbench-complete"

if [ -f "$stamp" ]; then
  echo "$python"
  exit 0
fi

mkdir -p "$cache"
# Two clones setting up at once: the second waits for the first rather than installing into the same folder.
lock="$venv.lock"
waited=0
until mkdir "$lock" 2>/dev/null; do
  if [ "$waited" -ge 3600 ]; then
    echo "setup_export_env: $lock has been held for an hour; remove it if no install is running" >&2
    exit 1
  fi
  [ "$waited" -eq 0 ] && echo "setup_export_env: waiting for another install into $venv" >&2
  sleep 5
  waited=$((waited + 5))
done
trap 'rmdir "$lock" 2>/dev/null || true' EXIT

if [ ! -f "$stamp" ]; then
  # An earlier install that died half-way leaves no stamp: start that venv again from scratch.
  rm -rf "$venv"
  echo "setup_export_env: creating $venv from $req (first time only; torch is large)" >&2
  "$base" -m venv "$venv"
  "$python" -m pip install --quiet -r "$req" >&2
  "$python" -c "import torch, transformers, onnx, onnxruntime, sklearn, joblib" >&2
  touch "$stamp"
fi
echo "$python"
