"""visionzoo.layers.Linear: nn.Linear's outputs and gradients (fp32 CPU products on oneDNN), F.linear elsewhere."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from visionzoo.layers import Linear
from visionzoo.layers import linear as linear_module

needs_onednn = pytest.mark.skipif(not linear_module._ONEDNN_AVAILABLE, reason="torch built without oneDNN")


@pytest.fixture(autouse=True)
def onednn_route(monkeypatch):
    """Every test runs the oneDNN route, whatever this CPU's default (``auto`` picks it on AVX-512 AMD CPUs only)."""
    monkeypatch.setattr(linear_module, "_ONEDNN", linear_module._ONEDNN_AVAILABLE)


def _pair(in_f, out_f, bias):
    torch.manual_seed(0)
    ref = nn.Linear(in_f, out_f, bias=bias)
    ours = Linear(in_f, out_f, bias=bias)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@needs_onednn
@pytest.mark.parametrize("shape,bias,strided", [((37, 24), True, False), ((2, 5, 7, 24), True, False),
                                                ((3, 11, 24), False, True), ((24,), True, False)])
def test_matches_nn_linear_forward_and_gradients(shape, bias, strided):
    ref, ours = _pair(24, 40, bias)
    x = torch.randn(*shape[:-1], 2 * shape[-1])[..., ::2] if strided else torch.randn(shape)
    assert x.is_contiguous() != strided
    grad = torch.randn(*shape[:-1], 40)
    results = []
    for layer in (ref, ours):
        xs = x.clone().requires_grad_()
        y = layer(xs)
        params = [layer.weight] + ([layer.bias] if bias else [])
        results.append([y, *torch.autograd.grad(y, [xs] + params, grad)])
    for want, got in zip(*results):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_runs_on_onednn_for_fp32_cpu(monkeypatch):
    """The oneDNN op is what runs (without gradients and in the autograd Function), so a failure there is seen."""
    calls = []
    real = linear_module._onednn_linear
    monkeypatch.setattr(linear_module, "_onednn_linear", lambda *a: calls.append(1) or real(*a))
    _, ours = _pair(8, 4, True)
    with torch.no_grad():
        ours(torch.randn(3, 8))
    ours(torch.randn(3, 8, requires_grad=True)).sum().backward()
    assert len(calls) == 3  # no-grad forward, forward, input gradient


@needs_onednn
def test_frozen_weight_and_input_without_grad():
    ref, ours = _pair(8, 6, True)
    for layer in (ref, ours):
        layer.weight.requires_grad_(False)
    x = torch.randn(5, 8)
    ref(x).square().sum().backward()
    ours(x).square().sum().backward()
    assert ours.weight.grad is None
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)


def test_other_dtypes_and_autocast_use_f_linear():
    _, ours = _pair(8, 6, True)
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(x)
    assert y.dtype == torch.bfloat16
    w64, x64 = ours.weight.double(), x.double()
    torch.testing.assert_close(linear_module.linear(x64, w64, None), F.linear(x64, w64), rtol=0, atol=0)


def test_compiles_without_graph_breaks():
    _, ours = _pair(8, 6, True)
    x = torch.randn(4, 8)
    compiled = torch.compile(ours, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), F.linear(x, ours.weight, ours.bias), rtol=1e-5, atol=1e-5)


def test_is_an_nn_linear_with_the_same_state_dict():
    ref, ours = _pair(8, 6, True)
    assert isinstance(ours, nn.Linear) and repr(ours) == repr(ref)
    assert list(ours.state_dict()) == ["weight", "bias"]


@needs_onednn
def test_output_can_be_updated_in_place_in_training():
    """Models add residuals into the projection's output in place; the autograd Function must allow it."""
    ref, ours = _pair(8, 8, True)
    x = torch.randn(2, 3, 8)
    grads = []
    for layer in (ref, ours):
        xs = x.clone().requires_grad_()
        layer(xs).add_(xs).square().sum().backward()
        grads.append(xs.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("capability,vendor,want", [("AVX512", "AuthenticAMD", True), ("AVX2", "AuthenticAMD", False),
                                                    ("AVX512", "GenuineIntel", False), ("AVX512", "", False)])
def test_auto_picks_onednn_on_avx512_amd_only(monkeypatch, capability, vendor, want):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(linear_module, "cpuinfo_field", lambda name: vendor if name == "vendor_id" else "")
    monkeypatch.setattr(linear_module, "_ONEDNN_AVAILABLE", True)
    assert linear_module._choose_onednn("auto") is want
    assert linear_module._choose_onednn("torch") is False
    assert linear_module._choose_onednn("onednn") is True


def test_bad_or_unavailable_setting_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="VISIONZOO_LINEAR='mkl': expected 'auto', 'onednn' or 'torch'"):
        linear_module._choose_onednn("mkl")
    monkeypatch.setattr(linear_module, "_ONEDNN_AVAILABLE", False)
    with pytest.raises(RuntimeError, match="no oneDNN linear"):
        linear_module._choose_onednn("onednn")
    assert linear_module._choose_onednn("auto") is False


def test_torch_route_is_f_linear_exactly(monkeypatch):
    monkeypatch.setattr(linear_module, "_ONEDNN", False)
    _, ours = _pair(8, 6, True)
    x = torch.randn(4, 8)
    torch.testing.assert_close(ours(x), F.linear(x, ours.weight, ours.bias), rtol=0, atol=0)
