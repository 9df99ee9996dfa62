"""Linear attention: reference, torch path and Triton kernels (interpreter on CPU, GPU when present).

Tolerances are relative to the largest magnitude of the expected tensor (see ``assert_rel``), each
justified where it is used. The Triton tests run under TRITON_INTERPRET=1 (set in conftest.py).
"""
import importlib
import math
import os

import pytest
import torch

if not torch.cuda.is_available():  # before anything imports triton_kernel (see conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import given, settings, strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from .conftest import BACKENDS_HERE, TRITON_DEVICE, needs_gpu, needs_triton, triton_runs_here
from visionzoo.kernels import (l2vit_features, linear_attention, linear_attention_flops, rala_features,
                               rala_key_weights, use_backend)
from visionzoo.kernels.linear_attention import L2VIT_DENOM_MIN, RALA_EPS
from visionzoo.kernels.linear_attention.reference import linear_attention_reference

la_module = importlib.import_module("visionzoo.kernels.linear_attention")





# ------------------------------------------------------------------------------------------------ helpers

def _strided(B, heads, N, c, layout, g, make, device, dtype):
    """A (B, heads, N, c) tensor in one of the layouts a model layer produces."""
    if layout == "tokens":  # timm's qkv Linear: (B, N, heads, c) seen through a permute
        return make(B, N, heads, c, g).to(device=device, dtype=dtype).permute(0, 2, 1, 3)
    if layout == "channels":  # a 1x1 conv's NCHW output (B, heads*c, N) seen as (B, heads, N, c): token stride 1
        return make(B, heads, c, N, g).to(device=device, dtype=dtype).transpose(-1, -2)
    return make(B, heads, N, c, g).to(device=device, dtype=dtype)


def _pos(*shape_and_gen):  # positive features, as ReLU / ELU+1 give (keeps denominators away from 0)
    *shape, g = shape_and_gen
    return torch.rand(*shape, generator=g) + 0.05


def _signed(*shape_and_gen):
    *shape, g = shape_and_gen
    return torch.randn(*shape, generator=g)


def make_inputs(B, heads, N, d, e, dtype=torch.float32, layout="contiguous", separate_den=True, device="cpu",
                seed=0):
    """q, k, v, q_den, k_den (leaves requiring grad; q_den/k_den None when not separate)."""
    g = torch.Generator().manual_seed(seed)
    q, k = (_strided(B, heads, N, d, layout, g, _pos, device, dtype) for _ in range(2))
    v = _strided(B, heads, N, e, layout, g, _signed, device, dtype)
    dens = [_strided(B, heads, N, d, layout, g, _pos, device, dtype) for _ in range(2)] if separate_den else [None] * 2
    return [None if t is None else t.requires_grad_() for t in (q, k, v, *dens)]


def run(backend, q, k, v, q_den, k_den, grad_out, **kwargs):
    """Output and the gradients of every tensor input (q, k, v, q_den, k_den, a tensor scale); None where absent."""
    with use_backend(backend):
        out = linear_attention(q, k, v, q_den, k_den, **kwargs)
    scale = kwargs.get("scale")
    tensors = [q, k, v, q_den, k_den, scale if isinstance(scale, torch.Tensor) else None]
    inputs = [t for t in tensors if t is not None and t.requires_grad]
    grads = iter(torch.autograd.grad(out, inputs, grad_out))
    return out, [next(grads) if t is not None and t.requires_grad else None for t in tensors]


def upcast(t, dtype=torch.float64):
    """A detached copy in ``dtype`` that keeps requires_grad (the oracle runs on the same values)."""
    return t if not isinstance(t, torch.Tensor) else t.detach().to(dtype).requires_grad_(t.requires_grad)


def assert_rel(actual, expected, tol, what=""):
    """max |actual - expected| <= tol * max(1, max |expected|), computed in float64."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual - expected).abs().max().item()
    bound = tol * max(1.0, expected.abs().max().item())
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"


def check_against_reference(backend, q, k, v, q_den, k_den, tol, seed=2, grad_out=None, **kwargs):
    """Forward and every gradient of ``backend`` against the float64 reference on the same input values."""
    if grad_out is None:
        g = torch.Generator().manual_seed(seed)
        grad_out = torch.randn(v.shape, generator=g).to(device=q.device, dtype=q.dtype)
    out, grads = run(backend, q, k, v, q_den, k_den, grad_out, **kwargs)
    assert out.dtype == q.dtype and out.shape == v.shape and out.is_contiguous()
    ref_kwargs = {name: upcast(value) for name, value in kwargs.items()}
    ref_out, ref_grads = run("reference", *(upcast(t) for t in (q, k, v, q_den, k_den)), grad_out.double(),
                             **ref_kwargs)
    assert_rel(out, ref_out, tol, "out")
    names = ("dq", "dk", "dv", "dq_den", "dk_den", "dscale")
    for name, grad, ref_grad, t in zip(names, grads, ref_grads, (q, k, v, q_den, k_den, kwargs.get("scale"))):
        if ref_grad is None:
            assert grad is None, name
            continue
        assert grad.dtype == t.dtype and grad.shape == t.shape, name
        assert_rel(grad, ref_grad, tol, name)


def denominators(q_den, k_den, den_scale=1.0, eps=0.0):
    """The unclamped denominator per token, float64 (to check that a test exercises both sides of a clamp)."""
    return (q_den.double() @ k_den.double().sum(-2, keepdim=True).transpose(-1, -2)) * den_scale + eps


# --------------------------------------------------- (a) the reference against independent formulations

def loop_linear_attention(q, k, v, q_den, k_den, scale, den_scale, eps, denom_min):
    """The op's docstring formula, one query at a time, with the sums over keys written out."""
    B, heads, N, _ = q.shape
    out = torch.zeros(B, heads, N, v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(heads):
            s = scale[h] if isinstance(scale, torch.Tensor) else scale
            for n in range(N):
                num = sum(torch.dot(q[b, h, n], k[b, h, m]) * v[b, h, m] for m in range(N))
                den = sum(torch.dot(q_den[b, h, n], k_den[b, h, m]) for m in range(N)) * den_scale + eps
                if denom_min is not None:
                    den = max(den, torch.tensor(denom_min, dtype=q.dtype))
                out[b, h, n] = s * num / den
    return out


@pytest.mark.parametrize("denom_min", [None, 3.0])
def test_reference_matches_loop_formulation(denom_min):
    q, k, v, qd, kd = make_inputs(2, 2, 6, 3, 4, torch.float64)
    if denom_min is not None:  # both sides of the clamp occur
        den = denominators(qd, kd, 0.7, 0.1)
        assert (den < denom_min).any() and (den > denom_min).any()
    scale = torch.tensor([0.3, 1.7], dtype=torch.float64)
    expected = loop_linear_attention(q, k, v, qd, kd, scale, 0.7, 0.1, denom_min)
    # float64 on both sides, only the summation order differs
    assert_rel(linear_attention_reference(q, k, v, qd, kd, scale, 0.7, 0.1, denom_min), expected, 1e-12)


# The official token mixers, re-derived here in float64 from the papers' code (read, not copied), from the
# projected q, k, v of shape (B, heads, N, d). The op's calls are the ones its docstring gives.

def official_l2vit(q, k, v, temperature):
    """L²ViT ``LinearAttention.forward``: ReLU features; kv = (k^T v) * temperature; (q kv) / clamp(q . sum k, 100)."""
    q, k = torch.relu(q), torch.relu(k)
    denom = torch.clamp(q @ k.transpose(-2, -1).sum(dim=-1, keepdim=True), min=100.0)
    kv = (k.transpose(-2, -1) @ v) * temperature  # temperature (heads, 1, 1)
    return (q @ kv) / denom


def rope_2d(x, H, W):
    """RALA's 2D RoPE (``theta_shift`` with ``RoPE(embed_dim, heads)``), written as a complex rotation of
    channel pairs (2i, 2i+1): the first d/4 pairs turn by row * angle, the last d/4 by column * angle, with
    angle = 1 / 10000 ** linspace(0, 1, d / 4). Tokens are row-major over an H x W map."""
    d = x.shape[-1]
    angle = 1.0 / (10000 ** torch.linspace(0, 1, d // 4, dtype=torch.float64))
    rows = torch.arange(H, dtype=torch.float64).repeat_interleave(W)  # token n = r * W + c
    cols = torch.arange(W, dtype=torch.float64).repeat(H)
    theta = torch.cat([rows[:, None] * angle, cols[:, None] * angle], dim=-1)  # (N, d/2), one per pair
    pairs = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(theta), theta)).flatten(-2).to(x.dtype)


def official_rala(q, k, v, H, W):
    """RALA ``GateLinearAttentionNoSilu`` core (before lepe, gate and proj)."""
    N, d = H * W, q.shape[-1]
    q, k = torch.nn.functional.elu(q) + 1.0, torch.nn.functional.elu(k) + 1.0
    q_mean = q.mean(dim=-2, keepdim=True)
    eff = torch.softmax(d ** -0.5 * q_mean @ k.transpose(-1, -2), dim=-1).transpose(-1, -2)  # (B, heads, N, 1)
    k = k * eff * N
    q_rope, k_rope = rope_2d(q, H, W), rope_2d(k, H, W)
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k_rope.transpose(-2, -1) * N ** -0.5) @ (v * N ** -0.5)
    return q_rope @ kv * z


def l2vit_call(q, k, v, temperature):
    return linear_attention(l2vit_features(q), l2vit_features(k), v, scale=temperature, denom_min=L2VIT_DENOM_MIN)


def rala_call(q, k, v, H, W):
    N = H * W
    q, k = rala_features(q), rala_features(k)
    k = k * rala_key_weights(q, k)
    return linear_attention(rope_2d(q, H, W), rope_2d(k, H, W), v, q_den=q, k_den=k, scale=1.0 / N,
                            den_scale=1.0 / N, eps=RALA_EPS)


def _paper_qkv(B, heads, N, d, std, seed, device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, heads, N, d, generator=g, dtype=torch.float64) * std).to(device=device, dtype=dtype)
            .requires_grad_() for _ in range(3)]


def _paper_tol(backend):
    # reference/torch in float64: only the summation order differs (1e-12). Triton runs fp32 (the inputs
    # rounded to fp32, fp32 dots and accumulation over 35-63 tokens): ~1e-6 relative; 1e-5 as in DESIGN.md.
    return 1e-12 if backend != "triton" else 1e-5


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_l2vit_matches_official_formula(backend):
    """Official L²ViT maths (float64) vs the op's documented L²ViT call, forward and every gradient.

    7 x 9 map (non-square); q scaled per token so both sides of the min-100 clamp occur (checked)."""
    B, heads, H, W, d = 2, 3, 7, 9, 8
    q, k, v = _paper_qkv(B, heads, H * W, d, 1.0, seed=3)
    with torch.no_grad():
        q *= torch.linspace(0.2, 2.5, H * W, dtype=torch.float64)[:, None]
    den = denominators(torch.relu(q), torch.relu(k))
    assert (den < 100).any() and (den > 100).any()
    temperature = (torch.rand(heads, 1, 1, dtype=torch.float64) + d ** -0.5).requires_grad_()
    grad_out = torch.randn(B, heads, H * W, d, dtype=torch.float64)

    expected = official_l2vit(q, k, v, temperature)
    exp_grads = torch.autograd.grad(expected, (q, k, v, temperature), grad_out)
    dtype = torch.float32 if backend == "triton" else torch.float64
    ins = [upcast(t, dtype).to(TRITON_DEVICE if backend == "triton" else "cpu") for t in (q, k, v, temperature)]
    ins = [t.detach().requires_grad_() for t in ins]
    with use_backend(backend):
        out = l2vit_call(*ins)
    grads = torch.autograd.grad(out, ins, grad_out.to(out))
    tol = _paper_tol(backend)
    assert_rel(out, expected, tol, "out")
    for name, a, b in zip(("dq", "dk", "dv", "dtemperature"), grads, exp_grads):
        assert_rel(a, b, tol, name)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_rala_matches_official_formula(backend):
    """Official RALA maths (float64: ELU+1, query-mean key re-weighting, RoPE on the numerator only, 1/N state
    scaling, eps 1e-6) vs the op's documented RALA call on a rectangular 5 x 7 map, forward and every gradient."""
    B, heads, H, W, d = 2, 2, 5, 7, 8
    q, k, v = _paper_qkv(B, heads, H * W, d, 1.0, seed=4)
    grad_out = torch.randn(B, heads, H * W, d, dtype=torch.float64)
    expected = official_rala(q, k, v, H, W)
    exp_grads = torch.autograd.grad(expected, (q, k, v), grad_out)
    dtype = torch.float32 if backend == "triton" else torch.float64
    ins = [upcast(t, dtype).to(TRITON_DEVICE if backend == "triton" else "cpu").detach().requires_grad_()
           for t in (q, k, v)]
    with use_backend(backend):
        out = rala_call(*ins, H, W)
    grads = torch.autograd.grad(out, ins, grad_out.to(out))
    tol = _paper_tol(backend)
    assert_rel(out, expected, tol, "out")
    for name, a, b in zip(("dq", "dk", "dv"), grads, exp_grads):
        assert_rel(a, b, tol, name)


def test_rala_rope_is_what_makes_the_map_shape_matter():
    """The numerator sees the map's shape only through RoPE: 5 x 7 and 7 x 5 give different outputs, and
    without RoPE (plain la with q/k as both inputs) the op is permutation-equivariant over tokens."""
    q, k, v = (t.detach() for t in _paper_qkv(1, 2, 35, 8, 1.0, seed=5))
    assert not torch.allclose(rala_call(q, k, v, 5, 7), rala_call(q, k, v, 7, 5))
    perm = torch.randperm(35)
    qf, kf = rala_features(q), rala_features(k)
    out = linear_attention(qf, kf, v)
    assert_rel(linear_attention(qf[:, :, perm], kf[:, :, perm], v[:, :, perm]), out[:, :, perm], 1e-12)


def test_rala_key_weights():
    q, k = (rala_features(t.detach()) for t in _paper_qkv(2, 3, 20, 8, 1.0, seed=6)[:2])
    w = rala_key_weights(q, k)
    assert w.shape == (2, 3, 20, 1) and (w > 0).all()
    assert_rel(w.sum(-2), torch.full((2, 3, 1), 20.0, dtype=torch.float64), 1e-12)  # N * softmax sums to N
    # fp16/bf16 in: computed in fp32, returned in k's dtype
    w16 = rala_key_weights(q.half(), k.half())
    assert w16.dtype == torch.float16
    assert_rel(w16, w, 2e-3)  # fp16 inputs (2^-11) through a softmax over 20 tokens, then rounded to fp16
    with pytest.raises(ValueError, match="same shape"):
        rala_key_weights(q, k[:, :, :3])


# ----------------------------------------------------------------------------------------- (b) gradcheck

@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("separate_den", [False, True])
def test_gradcheck(backend, separate_den):
    q, k, v, qd, kd = make_inputs(1, 2, 5, 3, 4, torch.float64, layout="channels", separate_den=separate_den, seed=7)
    scale = torch.tensor([[[0.8]], [[1.3]]], dtype=torch.float64, requires_grad=True)
    # Clamp at the middle of the widest gap between the central denominators: some tokens are clamped, some
    # not, and none lies within finite-difference reach (1e-6) of the kink.
    den = denominators(q if qd is None else qd, k if kd is None else kd, 0.5, 0.2).flatten().sort().values.detach()
    mid = den[len(den) // 4: 3 * len(den) // 4 + 1]
    i = int((mid[1:] - mid[:-1]).argmax())
    denom_min = float(mid[i] + mid[i + 1]) / 2
    assert ((den - denom_min).abs() > 1e-3).all()

    def f(q, k, v, qd, kd, scale):
        with use_backend(backend):
            return linear_attention(q, k, v, qd, kd, scale=scale, den_scale=0.5, eps=0.2, denom_min=denom_min)

    assert torch.autograd.gradcheck(f, (q, k, v, qd, kd, scale))


# ------------------------------------------------------------------- (c) torch path vs reference, random

@settings(deadline=None, max_examples=60)
@given(
    B=st.integers(1, 2), heads=st.integers(1, 3), N=st.integers(1, 40), d=st.integers(1, 20), e=st.integers(1, 20),
    separate_den=st.booleans(), scale_kind=st.sampled_from(["float", "tensor"]),
    den_scale=st.sampled_from([1.0, 0.25]), eps=st.sampled_from([0.0, 1e-3]),
    denom_min=st.sampled_from([None, 2.0]),
    layout=st.sampled_from(["contiguous", "tokens", "channels"]), dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2 ** 16),
)
def test_torch_path_matches_reference(B, heads, N, d, e, separate_den, scale_kind, den_scale, eps, denom_min, layout,
                                      dtype, seed):
    # float64: the two paths differ only in summation order (1e-10). float32: fp32 rounding of sums of at most
    # 40 products of O(1) values and one division: ~1e-6 relative; 2e-5 leaves margin, wrong algebra gives O(1).
    q, k, v, qd, kd = make_inputs(B, heads, N, d, e, dtype, layout=layout, separate_den=separate_den, seed=seed)
    scale = 0.7 if scale_kind == "float" else (torch.rand(heads, dtype=dtype) + 0.5).requires_grad_()
    check_against_reference("torch", q, k, v, qd, kd, 1e-10 if dtype == torch.float64 else 2e-5, seed=seed + 1,
                            scale=scale, den_scale=den_scale, eps=eps, denom_min=denom_min)


# ------------------------------------------------------------ (d) Triton (interpreter on CPU) vs reference

TRITON_CASES = [
    # id: (B, heads, N, d, e, separate_den, scale: "float" | "tensor" | "const_tensor", denom_min, layout)
    pytest.param((2, 2, 37, 5, 7, True, "tensor", 2.0, "channels"), id="N37-d5-e7-sep-tscale-clamp-nchw"),
    pytest.param((1, 3, 70, 24, 20, False, "float", None, "tokens"), id="N70-d24-e20-shared-2tiles"),
    pytest.param((1, 1, 9, 16, 16, True, "const_tensor", None, "contiguous"), id="N9-d16-const-tscale"),
]


def _scale(kind, heads, device):
    if kind == "float":
        return 0.6
    return (torch.rand(heads, 1, 1) + 0.5).to(device).requires_grad_(kind == "tensor")


def _clamp_value(q, k, qd, kd, fraction=0.5):
    """A clamp level inside the spread of the denominators, so both branches occur."""
    den = denominators(q if qd is None else qd, k if kd is None else kd, 0.5, 1e-3)
    return float(den.detach().flatten().quantile(fraction))


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matches_reference(case, dtype):
    # fp32: fp32 dots (input_precision="ieee") and fp32 accumulation over <= 70 tokens: ~1e-6 relative;
    # 1e-5 as in DESIGN.md. fp16: the float64 reference runs on the same fp16 values, so the error is the kernel's
    # own: outputs and gradients rounded to fp16 (2^-11 relative), plus the fp32 state rounded to TF32 on a GPU
    # (2^-11): ~1e-3; 1e-2 leaves margin, layout or algebra bugs give O(1).
    B, heads, N, d, e, separate_den, scale_kind, clamp, layout = case
    q, k, v, qd, kd = make_inputs(B, heads, N, d, e, dtype, layout=layout, separate_den=separate_den,
                                  device=TRITON_DEVICE)
    denom_min = None if clamp is None else _clamp_value(q, k, qd, kd)
    check_against_reference("triton", q, k, v, qd, kd, 1e-5 if dtype == torch.float32 else 1e-2,
                            scale=_scale(scale_kind, heads, TRITON_DEVICE), den_scale=0.5, eps=1e-3,
                            denom_min=denom_min)


@needs_triton
@pytest.mark.parametrize("separate_den", [False, True])
def test_triton_several_chunks(monkeypatch, separate_den):
    """16-token tiles and 3 tiles per chunk: N = 150 gives 10 tiles in 4 chunks (the last one partial), so the
    per-chunk partial states, key sums, dS, dz and dscale are reduced over chunks."""
    from visionzoo.kernels.linear_attention import triton_kernel
    monkeypatch.setattr(triton_kernel, "tile_sizes", lambda d, e: (16, 16, 16, 4))
    monkeypatch.setattr(triton_kernel, "MIN_TILES_PER_CHUNK", 3)
    assert triton_kernel.chunking(150, 16, 2) == (4, 3)
    q, k, v, qd, kd = make_inputs(1, 2, 150, 6, 9, separate_den=separate_den, device=TRITON_DEVICE)
    check_against_reference("triton", q, k, v, qd, kd, 1e-5, scale=_scale("tensor", 2, TRITON_DEVICE),
                            den_scale=0.5, eps=1e-3, denom_min=_clamp_value(q, k, qd, kd, 0.3))  # fp32, see above


@needs_triton
def test_triton_strided_grad_output():
    """dO with arbitrary strides (autograd may pass any layout) is read through its strides."""
    q, k, v, qd, kd = make_inputs(1, 2, 20, 8, 8, device=TRITON_DEVICE)
    grad_out = torch.randn(1, 8, 20, 2, device=TRITON_DEVICE).permute(0, 3, 2, 1)
    check_against_reference("triton", q, k, v, qd, kd, 1e-5, grad_out=grad_out, scale=0.5)  # fp32, see above


@needs_triton
def test_triton_bf16_interpreter_upcast():
    """bf16 runs in the interpreter with operands upcast to fp32 (bf16 ``tl.dot`` is broken there); on a GPU the
    state dot is native bf16. bf16 outputs/gradients (2^-9 relative): 3e-2."""
    q, k, v, qd, kd = make_inputs(1, 2, 30, 8, 8, torch.bfloat16, device=TRITON_DEVICE)
    check_against_reference("triton", q, k, v, qd, kd, 3e-2, scale=0.5, den_scale=0.5, eps=1e-3)


def test_chunking_bounds():
    pytest.importorskip("triton")
    from visionzoo.kernels.linear_attention import triton_kernel as tk
    # RAVLT-T stage 1 (3136 tokens, 64-token tiles = 49 tiles), 1 head: at most ceil(49 / 8) = 7 chunks, of 7 tiles;
    # batch 64 wants 8 chunks (512 programs) and gets the same 7; batch 512 already has 512 programs: one chunk each.
    assert tk.chunking(3136, 64, 1) == (7, 7)
    assert tk.chunking(3136, 64, 64) == (7, 7)
    assert tk.chunking(3136, 64, 512) == (1, 49)
    assert tk.chunking(1, 64, 1) == (1, 1)
    for n, bh in [(5, 1), (1000, 3), (10 ** 5, 2)]:
        chunks, per = tk.chunking(n, 64, bh)
        tiles = -(-n // 64)
        assert (chunks - 1) * per < tiles <= chunks * per  # every chunk holds at least one tile


# ---------------------------------------------------------------------------------- (e) GPU-only Triton

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("case", [(2, 1, 3136, 64, 64, True), (2, 3, 3136, 32, 32, False), (1, 2, 1000, 96, 80, True)])
def test_triton_bf16_gpu(case):
    # bf16 outputs and gradients (2^-9 relative per rounding), TF32 state (2^-11): 3e-2 against float64.
    B, heads, N, d, e, separate_den = case
    q, k, v, qd, kd = make_inputs(B, heads, N, d, e, torch.bfloat16, separate_den=separate_den, device="cuda")
    check_against_reference("triton", q, k, v, qd, kd, 3e-2, scale=_scale("tensor", heads, "cuda"),
                            den_scale=1.0 / N, eps=1e-6)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_backward_deterministic_gpu(dtype):
    """No atomics: two backward passes give bitwise equal gradients (many chunks reduced)."""
    q, k, v, qd, kd = make_inputs(4, 2, 3136, 64, 64, dtype, device="cuda")
    scale = _scale("tensor", 2, "cuda")
    grad_out = torch.randn(v.shape, device="cuda", dtype=dtype)
    first = run("triton", q, k, v, qd, kd, grad_out, scale=scale, denom_min=1.0)
    second = run("triton", q, k, v, qd, kd, grad_out, scale=scale, denom_min=1.0)
    for a, b in zip([first[0], *first[1]], [second[0], *second[1]]):
        assert (a is None and b is None) or torch.equal(a, b)


# ------------------------------------------------------------------------------------- (f) equivalences

@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_explicit_den_inputs_equal_defaults(backend):
    """Passing q_den=q, k_den=k explicitly gives the defaults' output, and the split gradients add up to the
    defaults' (the shared-input paths sum them inside)."""
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    q, k, v, _, _ = make_inputs(1, 2, 25, 8, 6, separate_den=False, device=device)
    grad_out = torch.randn(v.shape, device=device)
    out, grads = run(backend, q, k, v, None, None, grad_out, scale=0.5, eps=1e-3)
    q2, k2 = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    out2, grads2 = run(backend, q2, k2, v, q2.detach().clone().requires_grad_(), k2.detach().clone().requires_grad_(),
                       grad_out, scale=0.5, eps=1e-3)
    # fp32, the same sums in a different order / grouping: ~1e-7
    assert_rel(out2, out, 1e-6, "out")
    assert_rel(grads2[0] + grads2[3], grads[0], 1e-6, "dq")
    assert_rel(grads2[1] + grads2[4], grads[1], 1e-6, "dk")
    assert_rel(grads2[2], grads[2], 1e-6, "dv")


@pytest.mark.parametrize("shape", [(3,), (3, 1, 1), (1, 3, 1, 1)])
def test_tensor_scale_shapes(shape):
    """A per-head tensor scale in any of the documented shapes equals per-head float scales; its gradient has
    its own shape; a single-element tensor scales every head."""
    q, k, v, _, _ = make_inputs(1, 3, 10, 4, 4, separate_den=False)
    values = [0.5, 1.0, 2.0]
    scale = torch.tensor(values).reshape(shape).requires_grad_()
    out = linear_attention(q, k, v, scale=scale)
    for h, s in enumerate(values):
        assert_rel(out[:, h], linear_attention(q, k, v, scale=s)[:, h], 1e-6)  # fp32, identical sums: ~1e-7
    out.sum().backward()
    assert scale.grad.shape == scale.shape
    single = torch.tensor([2.0], requires_grad=True)
    assert_rel(linear_attention(q, k, v, scale=single), linear_attention(q, k, v, scale=2.0), 1e-6)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_permutation_equivariance(backend):
    """Non-causal: permuting the tokens permutes the output (no token order, so any H x W map, square or not)."""
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    q, k, v, qd, kd = (t.detach() for t in make_inputs(1, 2, 33, 8, 8, device=device))
    perm = torch.randperm(33, device=device)
    with use_backend(backend):
        out = linear_attention(q, k, v, qd, kd, scale=0.3, denom_min=1.0)
        permuted = linear_attention(*(t[:, :, perm] for t in (q, k, v, qd, kd)), scale=0.3, denom_min=1.0)
    assert_rel(permuted, out[:, :, perm], 1e-5)  # fp32, different summation order: ~1e-7


@pytest.mark.parametrize("backend", [b for b in BACKENDS_HERE if b != "reference"])
def test_enclosing_autocast_keeps_fp32(backend):
    """Inside a bf16 autocast region, fp32 inputs are still computed in fp32 (autocast would run the matmuls in
    bf16: ~1e-2 error), forward and backward."""
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    q, k, v, qd, kd = make_inputs(1, 2, 40, 16, 16, device=device)
    grad_out = torch.randn(v.shape, device=device)
    expected = run(backend, q, k, v, qd, kd, grad_out, denom_min=1.0)
    with torch.autocast(device, dtype=torch.bfloat16):
        got = run(backend, q, k, v, qd, kd, grad_out, denom_min=1.0)
    for a, b in zip([got[0], *got[1]], [expected[0], *expected[1]]):
        if b is not None:
            assert a.dtype == torch.float32
            assert_rel(a, b, 1e-6)  # the same fp32 computation: ~1e-7


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor, in bytes, that any aten op returns (what a path materialises; under the Triton
    interpreter that includes its byte-storage copies of the kernel arguments)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


@pytest.mark.parametrize("backend", [b for b in BACKENDS_HERE if b != "reference"])
def test_no_n_by_n_anywhere(backend):
    """Forward and backward never create a tensor larger than an input (fp32 N x 8; an N x N one would be N/8 times
    larger)."""
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    N = 640 if backend == "torch" else 160
    q, k, v, qd, kd = make_inputs(1, 1, N, 8, 8, device=device)
    with _LargestTensor() as mode, use_backend(backend):
        out = linear_attention(q, k, v, qd, kd, scale=torch.ones(1, requires_grad=True), denom_min=1.0)
        out.sum().backward()
    assert mode.largest <= N * 8 * 4


# ----------------------------------------------------------------------------------- (g) FLOPs, compile

@pytest.mark.parametrize("separate_den", [False, True])
def test_flops_formula_counts_the_torch_path(separate_den):
    """The formula equals what torch's FLOP counter sees in the torch path: k^T v, q S and the q_den . z matvec."""
    from torch.utils.flop_counter import FlopCounterMode
    q, k, v, qd, kd = make_inputs(2, 3, 50, 8, 12, separate_den=separate_den)
    with torch.no_grad(), use_backend("torch"), FlopCounterMode(display=False) as counter:
        linear_attention(q, k, v, qd, kd, scale=0.5, eps=1e-6)
    assert counter.get_total_flops() == linear_attention_flops(q, k, v, qd, kd)
    assert linear_attention_flops(q.shape, k.shape, v.shape) == 2 * 2 * 3 * 50 * 8 * (2 * 12 + 1)
    with torch.device("meta"):
        meta = torch.empty(2, 3, 50, 8)
    assert linear_attention_flops(meta, meta, meta) == 2 * 2 * 3 * 50 * 8 * 17


def test_torch_path_compiles_fullgraph():
    """The torch path (custom autograd.Function) traces under torch.compile without graph breaks."""
    q, k, v, qd, kd = make_inputs(1, 2, 12, 4, 4)

    def f(q, k, v, qd, kd):
        with use_backend("torch"):
            return linear_attention(q, k, v, qd, kd, scale=0.5, eps=1e-6, denom_min=0.5)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v, qd, kd)
    assert_rel(out, f(q, k, v, qd, kd), 1e-6)  # fp32, same ops
    out.sum().backward()
    assert q.grad is not None and kd.grad is not None


# ---------------------------------------------------------------------------- (h) dispatch and validation

@pytest.fixture
def spies(monkeypatch):
    """Replace the three implementations with recorders; returns the list of backends called."""
    calls = []
    for name, attr in (("reference", "linear_attention_reference"), ("torch", "linear_attention_torch")):
        monkeypatch.setattr(la_module, attr, lambda *a, _n=name: calls.append(_n) or a[0])
    if triton_runs_here():
        from visionzoo.kernels.linear_attention import triton_kernel
        monkeypatch.setattr(triton_kernel, "linear_attention_triton", lambda *a: calls.append("triton") or a[0])
    monkeypatch.delenv("VISIONZOO_KERNEL_BACKEND", raising=False)
    return calls


def _call():
    q = torch.rand(1, 2, 4, 8)
    return linear_attention(q, q, q)


def test_default_backend_on_cpu_is_torch(spies):
    _call()
    assert spies == ["torch"]


@pytest.mark.parametrize("name", BACKENDS_HERE)
def test_env_var_selects_backend(spies, monkeypatch, name):
    monkeypatch.setenv("VISIONZOO_KERNEL_BACKEND", name)
    _call()
    assert spies == [name]


def test_forced_triton_refuses_float64_and_wide_heads():
    pytest.importorskip("triton")
    q = torch.rand(1, 1, 4, 8, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(ValueError, match="does not support.*float64"):
        linear_attention(q, q, q)
    q = torch.rand(1, 1, 4, 8)
    with use_backend("triton"), pytest.raises(ValueError, match=r"head dims d=8, e=160 \(supported: up to 128\)"):
        linear_attention(q, q, torch.rand(1, 1, 4, 160))


@pytest.mark.parametrize("make_args,error,match", [
    (lambda q, v: ((q[0], q, v), {}), ValueError, r"q must be \(B, heads, N, head_dim\), got a 3-D"),
    (lambda q, v: ((q, q[:, :, :3], v), {}), ValueError, r"k must have q's shape \(2, 3, 5, 4\), got \(2, 3, 3, 4\)"),
    (lambda q, v: ((q, q, v[:, :2]), {}), ValueError, r"v must be \(B, heads, N, e\) with q's \(B, heads, N\)"),
    (lambda q, v: ((q, q, v), {"q_den": q[..., :2]}), ValueError, "q_den must have q's shape"),
    (lambda q, v: ((q, q, v), {"k_den": q.double()}), ValueError, "must share dtype and device.*k_den is torch.float64"),
    (lambda q, v: ((q, q.half(), v), {}), ValueError, "must share dtype and device.*k is torch.float16"),
    (lambda q, v: ((q.long(), q.long(), v.long()), {}), TypeError,
     "q must be a floating point tensor, got torch.int64"),
    (lambda q, v: ((q, q, "v"), {}), TypeError, "v must be a torch.Tensor, got str"),
    (lambda q, v: ((q[:0], q[:0], v[:0]), {}), ValueError, "must not be empty"),
    (lambda q, v: ((q, q, v), {"scale": torch.ones(2)}), ValueError,
     r"a tensor scale must hold one value per head \(heads=3.*got shape \(2,\)"),
    (lambda q, v: ((q, q, v), {"scale": torch.ones(3, 3)}), ValueError, "one value per head"),
    (lambda q, v: ((q, q, v), {"scale": torch.ones(3, dtype=torch.int64)}), ValueError,
     "a tensor scale must be floating point"),
    (lambda q, v: ((q, q, v), {"scale": float("nan")}), TypeError,
     "scale must be a finite number or a per-head tensor"),
    (lambda q, v: ((q, q, v), {"scale": True}), TypeError, "scale must be a finite number"),
    (lambda q, v: ((q, q, v), {"eps": None}), TypeError, "eps must be a finite number, got None"),
    (lambda q, v: ((q, q, v), {"den_scale": math.inf}), TypeError, "den_scale must be a finite number"),
    (lambda q, v: ((q, q, v), {"denom_min": "100"}), TypeError, "denom_min must be None or a finite number"),
])
def test_bad_inputs(make_args, error, match):
    q, v = torch.rand(2, 3, 5, 4), torch.rand(2, 3, 5, 6)
    args, kwargs = make_args(q, v)
    with pytest.raises(error, match=match):
        linear_attention(*args, **kwargs)


def test_flops_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"q and v must be \(B, heads, N, d\)"):
        linear_attention_flops((2, 3, 4))


def test_rala_features_is_elu_plus_one_with_its_gradient():
    x = (torch.randn(4, 33, dtype=torch.float64) * 3).requires_grad_()
    elu = torch.nn.functional.elu
    torch.testing.assert_close(rala_features(x), elu(x) + 1.0, rtol=0, atol=1e-15)
    (g,) = torch.autograd.grad(rala_features(x).sum(), x)
    torch.testing.assert_close(g, torch.where(x > 0, 1.0, x.exp()).detach())
    with torch.no_grad():  # the in-place path
        torch.testing.assert_close(rala_features(x.float()), elu(x.float()) + 1.0)
