"""``Linear``: ``nn.Linear`` whose fp32 CPU products run on oneDNN's matmul instead of MKL's sgemm.

On x86 CPUs ``F.linear`` goes to MKL's sgemm, which is slow for the narrow shapes of vision models' token
projections: measured on this repository's 2-core AMD EPYC (one thread, fp32), oneDNN's matmul (the primitive that
torch.compile's CPU backend calls) takes 14.6 instead of 25.1 ms for (25088 x 96) @ (96 x 288) (DaViT-T's stage-1
qkv at batch 8), 18.6 instead of 24.5 ms for (25088 x 384) @ (384 x 96), 16.9-17.8 instead of 18.8-21.3 ms for
(1568 x 384) @ (384 x 1536) and back. ``Linear`` is a drop-in subclass (same parameters, state-dict keys, repr and
init): for fp32 CPU tensors outside autocast and outside torch.compile tracing it runs the forward product and the
input gradient on oneDNN (``torch.ops.mkldnn._linear_pointwise``); the weight gradient (a reduction over tokens) stays
a plain matmul. Everything else (CUDA, fp16/bf16, autocast regions, compiled graphs, builds without oneDNN) is
``F.linear``. Results equal ``F.linear``'s to float rounding (a different summation order).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """On 2-D (tokens, features) inputs: the caller reshapes, so that the output is not a view made inside the
    Function (autograd forbids in-place updates of those, and the models add residuals in place)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(grad, weight.t(), None)  # grad @ W
        if ctx.needs_input_grad[1]:
            grad_w = grad.t() @ x
        if ctx.needs_input_grad[2]:  # False when there is no bias
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not x.is_sparse and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN for fp32 CPU tensors (see the module docstring)."""
    if not _use_onednn(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled():  # the Function records nothing when no input requires a gradient
        out = _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
        return out.view(*x.shape[:-1], weight.shape[0])
    return _onednn_linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` computed by :func:`linear` (oneDNN for fp32 on CPU, ``F.linear`` elsewhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
