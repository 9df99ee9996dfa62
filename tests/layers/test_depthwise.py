"""depthwise_conv2d: same forward and gradients as nn.Conv2d's depthwise conv (its backward is a different
formulation: flipped-kernel conv for the input, the map as the kernel for the weight)."""
import pytest
import torch
import torch.nn.functional as F

from visionzoo.layers import depthwise_conv2d


@pytest.mark.parametrize("shape,k,channels_last", [((2, 6, 9, 13), 5, True), ((1, 4, 7, 7), 7, False),
                                                   ((3, 5, 4, 6), 7, True), ((2, 3, 8, 5), 3, True)])
def test_matches_conv2d_forward_and_gradients(shape, k, channels_last):
    g = torch.Generator().manual_seed(0)
    C = shape[1]
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(C, 1, k, k, generator=g, dtype=torch.float64)
    b = torch.randn(C, generator=g, dtype=torch.float64)
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    outs = []
    for fn in (lambda x, w, b: F.conv2d(x, w, b, padding=k // 2, groups=C), depthwise_conv2d):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        y = fn(xs, ws, bs)
        outs.append([y, *torch.autograd.grad(y, (xs, ws, bs), grad)])
    for want, got in zip(*outs):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert outs[1][1].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_only_the_needed_gradients_and_gradcheck():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(depthwise_conv2d, (x, w, b))
    (gw,) = torch.autograd.grad(depthwise_conv2d(x.detach(), w, None).sum(), (w,))
    assert gw.shape == w.shape


def test_autocast_bf16_backward():
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    w = torch.randn(4, 1, 5, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = depthwise_conv2d(x, w, None)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    ref_w = torch.nn.grad.conv2d_weight(x.detach(), w.shape, torch.ones(1, 4, 8, 8), padding=2, groups=4)
    torch.testing.assert_close(w.grad, ref_w, rtol=2e-2, atol=2e-1)


def test_bad_shapes():
    with pytest.raises(ValueError, match="odd k"):
        depthwise_conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 1, 4, 4))
    with pytest.raises(ValueError, match="odd k"):
        depthwise_conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 2, 5, 5))
