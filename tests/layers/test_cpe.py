"""ConvPosEnc (visionzoo.layers): the folded residual against its definition, x + act(dwconv(x))."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionzoo.layers import ConvPosEnc


def _definition(cpe: ConvPosEnc, nchw: torch.Tensor) -> torch.Tensor:
    conv = F.conv2d(nchw, cpe.proj.weight, cpe.proj.bias, padding=cpe.proj.padding, groups=cpe.proj.groups)
    return nchw + (cpe.act(conv) if cpe.act is not None else conv)


@pytest.mark.parametrize("act", [None, nn.GELU])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_matches_definition_forward_and_backward(act, kernel_size):
    torch.manual_seed(0)
    cpe = ConvPosEnc(6, kernel_size, act_layer=act).double()
    x = torch.randn(2, 7, 5, 6, dtype=torch.float64, requires_grad=True)  # (B, H, W, C)
    out = cpe(x)
    expected = _definition(cpe, x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), [x, cpe.proj.weight, cpe.proj.bias])
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, cpe.proj.weight, cpe.proj.bias])
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)


def test_nchw_mode_and_state_dict():
    cpe = ConvPosEnc(4, channels_last=False)
    assert set(cpe.state_dict()) == {"proj.weight", "proj.bias"}  # nothing but the conv is saved
    x = torch.randn(1, 4, 6, 9)
    with torch.no_grad():
        torch.testing.assert_close(cpe(x), _definition(cpe, x))


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="odd kernel size"):
        ConvPosEnc(4, 2)
