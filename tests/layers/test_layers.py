"""Shared building blocks against explicit formulations of what they stand for."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from visionzoo.layers import (
    ClassifierHead, RelPosBias2d, SameConv2d, avg_pool2x2_same, bn_affine, fold_bn, relative_position_index,
    resize_rel_pos_table, tf_same_pad,
)


def test_tf_same_pad_matches_tensorflow_rule():
    # TF: out = ceil(L / s); total pad = max((out - 1) * s + (k - 1) * d + 1 - L, 0), the odd one at the end
    assert tf_same_pad(224, 3, 2) == (0, 1)
    assert tf_same_pad(225, 3, 2) == (1, 1)
    assert tf_same_pad(56, 3, 1) == (1, 1)
    assert tf_same_pad(7, 1, 1) == (0, 0)
    assert tf_same_pad(10, 4, 1) == (1, 2)


@pytest.mark.parametrize("kernel,stride,dilation", list(itertools.product([1, 2, 3, 4, 5], [1, 2, 3], [1, 2])))
def test_same_conv_equals_explicit_padding(kernel, stride, dilation):
    """The symmetric-padding-and-slice trick gives exactly TF's asymmetric padding, for every size parity."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, kernel, stride=stride, dilation=dilation).double()
    for H, W in [(1, 3), (2, 7), (8, 10), (9, 5), (16, 16)]:
        x = torch.randn(1, 2, H, W, dtype=torch.float64)
        top, bottom = tf_same_pad(H, kernel, stride, dilation)
        left, right = tf_same_pad(W, kernel, stride, dilation)
        expected = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, stride, 0, dilation)
        with torch.no_grad():  # the inference path: symmetric padding + slice
            got = conv(x)
        assert got.shape == (1, 3, -(-H // stride), -(-W // stride))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(conv(x), got, rtol=0, atol=1e-12)  # the autograd path: F.pad


def test_same_conv_gradient_matches_explicit_padding():
    conv = SameConv2d(3, 4, 3, stride=2, groups=1).double()
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64, requires_grad=True)
    (conv(x) ** 2).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    (F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, 2) ** 2).sum().backward()
    torch.testing.assert_close(grad, x.grad)


def test_avg_pool_same_leaves_padding_out_of_the_mean():
    x = torch.arange(15.0).view(1, 1, 3, 5)
    out = avg_pool2x2_same(x)
    assert out.shape == (1, 1, 2, 3)
    # bottom-right cell: only x[2, 4] = 14 is inside the map; TF 'SAME' averages just that one
    assert out[0, 0, 1, 2] == 14.0
    assert out[0, 0, 0, 0] == (0 + 1 + 5 + 6) / 4
    assert out[0, 0, 1, 0] == (10 + 11) / 2


def test_relative_position_bias_is_key_minus_query():
    window = (3, 4)
    rpb = RelPosBias2d(window, num_heads=2)
    bias = rpb()
    table = rpb.relative_position_bias_table
    for q, k in itertools.product(range(12), repeat=2):
        (qi, qj), (ki, kj) = divmod(q, 4), divmod(k, 4)
        assert torch.equal(bias[:, q, k], table[:, ki - qi + 2, kj - qj + 3])
    assert relative_position_index(window).shape == (12, 12)
    assert "index" not in rpb.state_dict()  # rebuilt, never saved


def test_resize_rel_pos_table():
    table = torch.randn(2, 13, 13)
    assert resize_rel_pos_table(table, (7, 7)) is table
    resized = resize_rel_pos_table(table, (12, 12))
    assert resized.shape == (2, 23, 23)
    constant = resize_rel_pos_table(torch.full((1, 13, 13), 0.25), (16, 16))
    torch.testing.assert_close(constant, torch.full((1, 31, 31), 0.25))


def test_classifier_head_unpooled_equals_pooled_per_position():
    """Without pooling, the head runs at every position: on a 1x1 map that is the pooled result."""
    head = ClassifierHead(8, 5, "avg", norm_layer=torch.nn.LayerNorm, hidden_size=6).eval()
    x = torch.randn(2, 8, 1, 1)
    pooled, pre = head(x), head(x, pre_logits=True)
    head.pool_type = ""
    torch.testing.assert_close(head(x)[:, :, 0, 0], pooled)
    torch.testing.assert_close(head(x, pre_logits=True)[:, :, 0, 0], pre)
    assert head(torch.randn(2, 8, 3, 4)).shape == (2, 5, 3, 4)
    head.reset(0)
    assert head(torch.randn(2, 8, 3, 4)).shape == (2, 6, 3, 4)  # num_classes=0: the pre-logits width
    with pytest.raises(ValueError, match="global_pool must be one of"):
        ClassifierHead(8, 5, "token")


@pytest.mark.parametrize("bias", [True, False])
def test_fold_bn_equals_conv_then_eval_batchnorm(bias):
    conv = SameConv2d(4, 6, 3, stride=2, bias=bias).double()
    bn = torch.nn.BatchNorm2d(6, eps=1e-3).double().eval()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(6))
        bn.running_var.copy_(torch.rand(6) + 0.1)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(conv.conv_with(x, *fold_bn(conv.weight, conv.bias, bn)), bn(conv(x)))
    scale, shift = bn_affine(bn)
    torch.testing.assert_close(x[:, :1].expand(2, 6, 9, 8) * scale[:, None, None] + shift[:, None, None],
                               bn(x[:, :1].expand(2, 6, 9, 8).contiguous()))
