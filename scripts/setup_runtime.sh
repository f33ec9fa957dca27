#!/usr/bin/env bash
# Installs the ONNX Runtime shared library esmbench loads at run time into .ort/lib (project-local, git-ignored).
# It comes from the onnxruntime wheel on PyPI (onnxruntime-gpu with --gpu); nothing is downloaded at build time.
# Usage: scripts/setup_runtime.sh [--gpu]     Idempotent: does nothing when the library is already there.
set -euo pipefail

ORT_VERSION="1.31.1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
package="onnxruntime"
[ "${1:-}" = "--gpu" ] && package="onnxruntime-gpu"
dest="$root/.ort/lib"
stamp="$dest/.installed-$package-$ORT_VERSION"

if [ -f "$stamp" ]; then
  exit 0
fi

python="$(command -v python3 || command -v python || true)"
if [ -z "$python" ]; then
  echo "setup_runtime: python3 with pip is needed to fetch the $package $ORT_VERSION wheel from PyPI" >&2
  exit 1
fi

wheels="$root/.ort/wheels"
mkdir -p "$wheels" "$dest"
echo "setup_runtime: fetching $package==$ORT_VERSION from PyPI" >&2
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" "$package==$ORT_VERSION"

"$python" - "$wheels" "$dest" "$package" "$ORT_VERSION" <<'PY'
import pathlib, sys, zipfile
wheels, dest, package, version = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4]
prefix = package.replace("-", "_") + "-" + version + "-"
wheel = next(w for w in sorted(wheels.glob("*.whl")) if w.name.startswith(prefix))
wanted = ("libonnxruntime", "onnxruntime.dll", "onnxruntime_providers")
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = name.rsplit("/", 1)[-1]
        if "/capi/" in name and base.startswith(wanted):
            (dest / base).write_bytes(z.read(name))
            print(f"setup_runtime: {dest.name}/{base}", file=sys.stderr)
PY
rm -f "$dest"/.installed-*
touch "$stamp"
