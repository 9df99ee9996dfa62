"""Shared attention kernels: one sub-package per op, each with a reference (the test oracle),
a fast PyTorch path and Triton kernels. See ``kernels/README.md`` and ``_backend.py``."""
from ._backend import BACKENDS, choose_backend, use_backend
from .neighborhood_attention import neighborhood_attention, neighborhood_attention_flops
from .window_attention import window_attention

__all__ = ["BACKENDS", "choose_backend", "use_backend", "neighborhood_attention", "neighborhood_attention_flops",
           "window_attention"]
