import os

import torch

# Without a GPU the Triton kernels run on CPU tensors under Triton's interpreter, which Triton reads
# when a @triton.jit function is decorated, i.e. when triton_kernel.py is first imported. Set it here,
# before any kernel test imports it: only for the kernel tests (not globally in CI), and never on a GPU
# machine, where the kernels must be compiled for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
