import os

import pytest
import torch

# Without a GPU the Triton kernels run on CPU tensors under Triton's interpreter. Triton decides at
# decoration time whether a @triton.jit function is interpreted, and its own library (tl.zeros, tl.sum ...)
# is decorated when triton is first imported; timm and torch._dynamo import triton. So TRITON_INTERPRET=1
# must be in the environment before the first `import triton` of the process: in the root conftest
# (which imports timm) or the shell. This line only helps when tests/kernels is the first thing that
# imports triton; otherwise the Triton tests fail with an explicit RuntimeError saying so.
# Never set on a GPU machine, where the kernels must be compiled for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def triton_runs_here() -> bool:
    """Triton kernels can run: on a CUDA device, or in the interpreter (TRITON_INTERPRET=1, set above)."""
    from visionzoo.kernels._backend import triton_interpreting
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available() or triton_interpreting()


# shared by every op's tests
needs_triton = pytest.mark.skipif(not triton_runs_here(), reason="needs triton and CUDA or TRITON_INTERPRET=1")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS_HERE = ["reference", "torch"] + (["triton"] if triton_runs_here() else [])
