"""Convolutions and pooling with TensorFlow's ``padding='same'``.

TF pads ``max((ceil(L / s) - 1) * s + (k - 1) * d + 1 - L, 0)`` in total per axis, the odd pixel
at the end (bottom/right). Weights trained in TF (MaxViT) depend on that asymmetry.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def tf_same_pad(length: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """(before, after) padding of one axis for TF 'same'."""
    total = max((-(-length // stride) - 1) * stride + (kernel - 1) * dilation + 1 - length, 0)
    return total // 2, total - total // 2


def _symmetric_equivalent(before: int, after: int, stride: int) -> Tuple[int, int]:
    """(padding, first output to keep) of a symmetric-padding convolution that contains TF's asymmetric one.

    Padding both sides by ``before + stride * j`` (with ``j`` large enough to cover ``after``) samples the
    same input positions as TF's (before, after) padding, shifted by exactly ``j`` outputs; the extra
    output rows are sliced away.
    """
    shift = -(-(after - before) // stride)
    return before + stride * shift, shift


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TF 'same' padding computed from each input's size (any resolution).

    Symmetric padding goes to the convolution itself. Asymmetric padding (stride 2 on even sizes):
    without autograd, a symmetric-padding conv whose extra outputs are sliced away, because ``F.pad``
    copies the whole input into fresh memory, which on CPU costs more than the convolution
    (60 ms vs 15 ms for MaxViT-T's first stride-2 depthwise conv at batch 8); with autograd,
    ``F.pad``, because the slice's backward (a zero-filled, NCHW-contiguous gradient) makes the
    convolution's backward slower still (fwd+bwd 225 ms vs 172 ms).
    """

    def __init__(self, *args, **kwargs):
        kwargs.pop("padding", None)
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_with(x, self.weight, self.bias)

    def conv_with(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """This layer's convolution with other parameters (e.g. with a BatchNorm folded in)."""
        H, W = x.shape[-2:]
        top, bottom = tf_same_pad(H, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_pad(W, self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:
            return F.conv2d(x, weight, bias, self.stride, (top, left), self.dilation, self.groups)
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, self.stride, 0, self.dilation,
                            self.groups)
        pad_h, skip_h = _symmetric_equivalent(top, bottom, self.stride[0])
        pad_w, skip_w = _symmetric_equivalent(left, right, self.stride[1])
        out = F.conv2d(x, weight, bias, self.stride, (pad_h, pad_w), self.dilation, self.groups)
        if skip_h or skip_w:
            out = out[..., skip_h:skip_h + -(-H // self.stride[0]), skip_w:skip_w + -(-W // self.stride[1])]
        return out


def avg_pool2x2_same(x: torch.Tensor) -> torch.Tensor:
    """2x2 stride-2 average pool with TF 'same' padding: padded cells are left out of the mean,
    which is what ``ceil_mode`` with ``count_include_pad=False`` computes."""
    return F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)


def bn_affine(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as a per-channel affine map: ``bn(x) == x * scale + shift`` (running statistics)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a conv followed by an eval-mode BatchNorm, as one conv: ``bn(conv(x)) == conv'(x)``."""
    scale, shift = bn_affine(bn)
    return weight * scale[:, None, None, None], shift if bias is None else bias * scale + shift


def _contiguous_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    key = prefix + "weight"
    if key in state_dict:
        state_dict[key] = state_dict[key].contiguous()


def store_weight_channels_last(conv: nn.Conv2d) -> nn.Conv2d:
    """Keep ``conv.weight`` in channels-last memory, so a channels-last forward does not reorder it on every call
    (loading a state dict keeps the layout). ``state_dict()`` still returns it contiguous: safetensors refuses
    non-contiguous tensors."""
    conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    conv.register_state_dict_post_hook(_contiguous_state)
    return conv
