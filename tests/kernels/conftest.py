import os

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
