"""Shared attention kernels: one sub-package per op, each with a reference (the test oracle),
a fast PyTorch path and Triton kernels. See ``kernels/README.md`` and ``_backend.py``.

``OPS`` maps each op's name (as families declare it in ``FAMILY.kernels``) to its FLOPs formula.
"""
from ._backend import BACKENDS, autocast_disabled, autocast_dtype, choose_backend, use_backend
from .channel_attention import channel_attention, channel_attention_flops
from .linear_attention import (l2vit_features, linear_attention, linear_attention_flops, rala_features,
                               rala_key_weights)
from .neighborhood_aggregation import na2d_av, neighborhood_aggregation, neighborhood_aggregation_flops
from .neighborhood_attention import neighborhood_attention, neighborhood_attention_flops
from .routing_attention import region_routing, routing_attention, routing_attention_flops
from .sparse_attention import sparse_attention, sparse_attention_flops
from .window_attention import window_attention, window_attention_flops

__all__ = ["BACKENDS", "OPS", "autocast_disabled", "autocast_dtype", "channel_attention", "channel_attention_flops", "choose_backend", "l2vit_features",
           "linear_attention", "linear_attention_flops", "na2d_av", "neighborhood_aggregation",
           "neighborhood_aggregation_flops", "neighborhood_attention",
           "neighborhood_attention_flops", "rala_features", "rala_key_weights", "region_routing",
           "routing_attention", "routing_attention_flops", "sparse_attention",
           "sparse_attention_flops", "use_backend", "window_attention", "window_attention_flops"]

OPS = {
    "channel_attention": channel_attention_flops,
    "linear_attention": linear_attention_flops,
    "neighborhood_aggregation": neighborhood_aggregation_flops,
    "neighborhood_attention": neighborhood_attention_flops,
    "routing_attention": routing_attention_flops,
    "sparse_attention": sparse_attention_flops,
    "window_attention": window_attention_flops,
}
