"""A depthwise k x k convolution (stride 1, zero padding k // 2) with a faster CPU backward.

PyTorch's CPU backward of a depthwise conv with k >= 5 is 10-200x slower than its forward (measured with torch
2.14.1, one thread: a 7x7 kernel over 768 channels at 7x7 costs 0.1 ms forward and 20 ms backward with a
channels-last input; 96 channels at 56x56, 0.4 ms and 8.5 ms). Both gradients are depthwise convolutions
themselves, and the forward kernels are fast, so the backward here calls those:

* grad input  = conv(grad_out, weight flipped in both axes, padding k // 2), the same layout as the input;
* grad weight = conv(input, grad_out as the kernel), per channel: ``gw[c, i, j] = sum_hw xpad[c, h+i, w+j]
  g[c, h, w]`` is a cross-correlation of the padded input with the (H x W) gradient map, whose output is k x k;
  the batch joins the channels (groups = B*C) and is summed afterwards. Contiguous NCHW operands: mkldnn is 2-4x
  faster there than with channels-last ones for this map-sized kernel;
* grad bias   = sum of grad_out over batch and positions.

3x3 kernels keep the native backward (it is fast there: 0.8 vs 1.2 ms for 96 channels at 56x56).

Same results as the native backward up to the fp32 summation order. Autocast: the inputs are cast to the autocast
dtype outside the Function (as autocast does for conv2d), so the backward sees one dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        C, k = weight.shape[0], weight.shape[-1]
        p = k // 2
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            if x.is_contiguous(memory_format=torch.channels_last):  # grad input in the input's layout, as native
                g = g.contiguous(memory_format=torch.channels_last)
            gx = F.conv2d(g, weight.flip(-1, -2), None, padding=p, groups=C)
        if ctx.needs_input_grad[1]:
            B, _, H, W = x.shape
            xs = x.contiguous().view(1, B * C, H, W)
            gs = g.contiguous().view(B * C, 1, H, W)
            gw = F.conv2d(xs, gs, None, padding=p, groups=B * C).view(B, C, k, k).sum(0).unsqueeze(1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=k // 2, groups=C)`` for an NCHW (any memory format) ``x`` and a
    (C, 1, k, k) ``weight`` with odd square k; the backward is the fast one of the module docstring."""
    C, one, kh, kw = weight.shape
    if one != 1 or kh != kw or kh % 2 != 1 or x.dim() != 4 or x.shape[1] != C:
        raise ValueError(f"depthwise_conv2d needs a (B, C, H, W) input and a (C, 1, k, k) weight with odd k, got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if kh < 5 or not torch.is_grad_enabled() or not (x.requires_grad or weight.requires_grad):
        return F.conv2d(x, weight, bias, padding=kh // 2, groups=C)
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    with torch.autocast(device, enabled=False):
        return _DepthwiseConv2d.apply(x, weight, bias)
