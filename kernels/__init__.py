"""Shared attention kernels: one sub-package per op, each with a reference (the test oracle),
a fast PyTorch path and Triton kernels. See ``kernels/README.md`` and ``_backend.py``."""
from ._backend import BACKENDS, choose_backend, use_backend
from .routing_attention import region_routing, routing_attention, routing_attention_flops
from .sparse_attention import sparse_attention, sparse_attention_flops
from .window_attention import window_attention

__all__ = ["BACKENDS", "choose_backend", "use_backend", "region_routing", "routing_attention",
           "routing_attention_flops", "sparse_attention", "sparse_attention_flops", "window_attention"]
