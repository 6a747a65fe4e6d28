"""Test-session setup shared by tests/ and bench/.

Without a GPU, Triton kernels run under the interpreter: ``TRITON_INTERPRET=1`` must be set
before Triton is first imported, so it is set here, at collection time.
"""

import os
import shutil
import subprocess


def _has_cuda_gpu() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return False
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except Exception:
        return False


if not _has_cuda_gpu():
    os.environ.setdefault("TRITON_INTERPRET", "1")
