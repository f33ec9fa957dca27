"""Prints the library folders of pip's nvidia-* packages (cuDNN, cuBLAS, the CUDA runtime, ...) as one
PATH-style list, for ONNX Runtime's CUDA provider; prints nothing when the Python has none.

Usage: LD_LIBRARY_PATH="$(python3 scripts/nvidia_libs.py)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"""

import glob
import os

try:
    import nvidia
except ImportError:
    nvidia = None

if nvidia is not None:
    print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(f"{d}/*/lib/*.so*")})))
