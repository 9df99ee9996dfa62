"""``Linear``: ``nn.Linear`` whose fp32 CPU products run on oneDNN's matmul instead of MKL's sgemm.

On x86 CPUs ``F.linear`` goes to MKL's sgemm, which is slow for the narrow shapes of vision models' token
projections: measured on a 2-core AVX-512 AMD EPYC (one thread, fp32), oneDNN's matmul (the primitive that
torch.compile's CPU backend calls) takes 14.6 instead of 25.1 ms for (25088 x 96) @ (96 x 288) (DaViT-T's stage-1
qkv at batch 8), 18.6 instead of 24.5 ms for (25088 x 384) @ (384 x 96), 16.9-17.8 instead of 18.8-21.3 ms for
(1568 x 384) @ (384 x 1536) and back. ``Linear`` is a drop-in subclass (same parameters, state-dict keys, repr and
init): for fp32 CPU tensors outside autocast and outside torch.compile tracing it runs the forward product and the
input gradient on oneDNN (``torch.ops.mkldnn._linear_pointwise``); the weight gradient (a reduction over tokens) stays
a plain matmul. Everything else (CUDA, fp16/bf16, autocast regions, compiled graphs, builds without oneDNN) is
``F.linear``. Results equal ``F.linear``'s to float rounding (a different summation order).

Which CPUs: the gain most likely comes from MKL not running its AVX-512 kernels on AMD CPUs (oneDNN does). On an
AVX2-only AMD EPYC (Zen 3) MKL's sgemm was the faster one at 44 of L2ViT-T's 48 Linears (mostly by 5-20 %, batch 8,
one thread), and on Intel CPUs MKL uses AVX-512 itself (not measured here). So the oneDNN route is on by default only
where both hold: torch reports AVX-512 and the CPU vendor is AMD. ``VISIONZOO_LINEAR=onednn`` or ``=torch`` (read at
import) overrides the choice; ``auto`` (the default) is the rule above.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

_ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpuinfo_field(name: str) -> str:
    """The first ``name`` field of /proc/cpuinfo (``vendor_id``, ``model name``, ...); empty where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _choose_onednn(setting: str) -> bool:
    """Whether fp32 CPU Linears run on oneDNN, for a ``VISIONZOO_LINEAR`` value (see the module docstring)."""
    if setting not in ("auto", "onednn", "torch"):
        raise ValueError(f"VISIONZOO_LINEAR={setting!r}: expected 'auto', 'onednn' or 'torch'")
    if setting == "onednn" and not _ONEDNN_AVAILABLE:
        raise RuntimeError("VISIONZOO_LINEAR=onednn, but this torch build has no oneDNN linear "
                           "(torch.ops.mkldnn._linear_pointwise); use 'auto' or 'torch'")
    if setting != "auto":
        return setting == "onednn"
    return (_ONEDNN_AVAILABLE and torch.backends.cpu.get_cpu_capability() == "AVX512"
            and cpuinfo_field("vendor_id") == "AuthenticAMD")


_ONEDNN = _choose_onednn(os.environ.get("VISIONZOO_LINEAR", "auto"))


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
    """``F.linear(x, weight, bias)``, on oneDNN for fp32 CPU tensors where chosen (see the module docstring)."""
    if not _use_onednn(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled():  # the Function records nothing when no input requires a gradient
        out = _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
        return out.view(*x.shape[:-1], weight.shape[0])
    return _onednn_linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` computed by :func:`linear` (oneDNN for fp32 on AVX-512 AMD CPUs, ``F.linear`` elsewhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
