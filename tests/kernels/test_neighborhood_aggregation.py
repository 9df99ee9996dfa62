"""Neighbourhood aggregation (na2d_av): reference, torch path and Triton kernels (interpreter on CPU, GPU when present).

Tolerances are relative to the largest magnitude of the expected tensor (see ``assert_rel``), each justified
where it is used. The Triton tests run under TRITON_INTERPRET=1 (set in conftest.py).
"""
import importlib
import os
import unittest.mock

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():  # before anything imports triton_kernel (see conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import example, given, settings, strategies as st

from .conftest import BACKENDS_HERE, TRITON_DEVICE, needs_gpu, needs_triton
from .test_neighborhood_index import natten_window_start  # NATTEN v0.14.6's own formula, transcribed once
from visionzoo.kernels import (na2d_av, neighborhood_aggregation, neighborhood_aggregation_flops,
                               neighborhood_attention, use_backend)
from visionzoo.kernels._neighborhood import neighbor_index, rpb_index
from visionzoo.kernels.neighborhood_aggregation.reference import neighborhood_aggregation_reference

agg_module = importlib.import_module("visionzoo.kernels.neighborhood_aggregation")


# ------------------------------------------------------------------------------------------------ helpers

def make_inputs(B, heads, H, W, D, kernel_size, dtype=torch.float32, layout="contiguous", device="cpu", seed=0,
                requires_grad=(True, True)):
    """attn (B, heads, H, W, k*k) and value (B, heads, H, W, D), leaf tensors.

    ``contmix``: the layouts OverLoCK's ContMix passes: value one half of a (B, 2*heads*D, H, W) conv output seen
    through ``'b (m g c) h w -> m b g h w c'``, attn the large-kernel part of a (B, s*s + k*k, heads, H, W) tensor
    seen as (B, heads, H, W, s*s + k*k) and split (here before, not after, a softmax: strided weights).
    ``contiguous``: plain tensors. Weights are random (not normalised): the op must not assume they sum to 1.
    """
    g = torch.Generator().manual_seed(seed)
    kk = kernel_size * kernel_size
    if layout == "contmix":
        x = torch.randn(B, 2 * heads * D, H, W, generator=g).to(device=device, dtype=dtype)
        value = x.view(B, 2, heads, D, H, W)[:, 1].permute(0, 1, 3, 4, 2)
        w = torch.randn(B, 9 + kk, heads, H, W, generator=g).to(device=device, dtype=dtype)
        attn = w.permute(0, 2, 3, 4, 1)[..., 9:]
    else:
        attn = torch.randn(B, heads, H, W, kk, generator=g).to(device=device, dtype=dtype)
        value = torch.randn(B, heads, H, W, D, generator=g).to(device=device, dtype=dtype)
    if layout == "contmix":  # leaves with the strides above
        attn, value = attn.detach(), value.detach()
    return attn.requires_grad_(requires_grad[0]), value.requires_grad_(requires_grad[1])


def run(backend, attn, value, kernel_size, dilation, grad_out):
    """Output and the gradients of the inputs that require one (None for the others)."""
    with use_backend(backend):
        out = neighborhood_aggregation(attn, value, kernel_size, dilation)
    inputs = [t for t in (attn, value) if t.requires_grad]
    grads = iter(torch.autograd.grad(out, inputs, grad_out) if inputs else ())
    return out, [next(grads) if t.requires_grad else None for t in (attn, value)]


def upcast(tensors, dtype=torch.float64):
    """Detached copies in ``dtype`` that keep requires_grad (the oracle runs on the same values)."""
    return [t.detach().to(dtype).requires_grad_(t.requires_grad) for t in tensors]


def assert_rel(actual, expected, tol, what=""):
    """max |actual - expected| <= tol * max(1, max |expected|), computed in float64."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual - expected).abs().max().item()
    bound = tol * max(1.0, expected.abs().max().item())
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"


def check_against_reference(backend, attn, value, kernel_size, dilation, tol, seed=2, grad_out=None):
    """Forward and every gradient of ``backend`` against the float64 reference on the same input values."""
    if grad_out is None:
        g = torch.Generator().manual_seed(seed)
        grad_out = torch.randn(value.shape, generator=g).to(device=value.device, dtype=value.dtype)
    out, grads = run(backend, attn, value, kernel_size, dilation, grad_out)
    assert out.dtype == value.dtype and out.shape == value.shape and out.is_contiguous()
    ref_out, ref_grads = run("reference", *upcast([attn, value]), kernel_size, dilation, grad_out.double())
    assert_rel(out, ref_out, tol, "out")
    for name, grad, ref_grad, t in zip(("dattn", "dvalue"), grads, ref_grads, (attn, value)):
        if not t.requires_grad:
            assert grad is None
            continue
        assert grad.dtype == t.dtype and grad.shape == t.shape, name
        assert_rel(grad, ref_grad, tol, name)


# --------------------------------------------------- (a) the reference against independent formulations

def gather_aggregation(attn, value, kernel_size, dilation):
    """na2d_av as NATTEN computes it: each pixel's k*k values gathered (a k*k copy) from NATTEN's own window start
    (map units), weighted by attn in row-major slot order and summed."""
    B, heads, H, W, D = value.shape
    K, d = kernel_size, dilation
    rows = torch.tensor([[natten_window_start(i, H, K, d) + t * d for t in range(K)] for i in range(H)])  # (H, K)
    cols = torch.tensor([[natten_window_start(j, W, K, d) + t * d for t in range(K)] for j in range(W)])
    r = rows[:, None, :, None].expand(H, W, K, K)  # value row of (pixel row, pixel col, slot row, slot col)
    c = cols[None, :, None, :].expand(H, W, K, K)
    neighbours = value[:, :, r, c]  # (B, heads, H, W, K, K, D)
    return torch.einsum("bhijt,bhijtd->bhijd", attn, neighbours.flatten(4, 5))


def contmix_unfold_aggregation(attn, value, kernel_size):
    """ContMix's fallback without natten (models/contmix.py), re-derived: a valid ``F.unfold`` of the channels-first
    value map gives the k*k neighbours of every interior pixel (channel order (channel, ti, tj)); the
    (H-k+1) x (W-k+1) grid of those windows is replicate-padded by k//2 on every side, so a border pixel takes the
    window of the nearest interior pixel (its window clamped inside the map); then an einsum with the weights."""
    B, heads, H, W, D = value.shape
    k, p = kernel_size, kernel_size // 2
    v = value.permute(0, 1, 4, 2, 3).reshape(B, heads * D, H, W)
    windows = F.unfold(v, k).view(B, heads * D * k * k, H - k + 1, W - k + 1)
    windows = F.pad(windows, (p, p, p, p), mode="replicate").view(B, heads, D, k * k, H, W)
    return torch.einsum("bghwt,bgdthw->bghwd", attn, windows)


@pytest.mark.parametrize("shape,kernel_size,dilation", [
    ((7, 9), 3, 1), ((9, 11), 3, 2), ((13, 10), 3, 3), ((11, 12), 5, 2), ((7, 7), 7, 1), ((5, 6), 1, 3),
    ((14, 15), 13, 1),
])
def test_reference_matches_gather_formulation(shape, kernel_size, dilation):
    # Both in float64, differing only in summation order: 1e-12 catches any indexing error.
    attn, value = make_inputs(2, 2, *shape, 3, kernel_size, torch.float64)
    expected = gather_aggregation(attn, value, kernel_size, dilation)
    assert_rel(neighborhood_aggregation_reference(attn, value, kernel_size, dilation), expected, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("shape,kernel_size", [((9, 8), 5), ((14, 14), 13)], ids=["9x8-k5", "14x14-k13"])
def test_matches_contmix_unfold(backend, shape, kernel_size):
    """ContMix's unfold fallback clamps border windows the same way (dilation 1): forward and both gradients.
    14x14 with k = 13 is OverLoCK-T's Focus stage 3 at 224 (one head here)."""
    # float64 (fp32 for Triton, whose fp32 dots sum <= 169 products of O(1) values: ~1e-6; 1e-5 as in DESIGN.md);
    # float64 paths differ from the unfold formulation only in summation order: 1e-12.
    dtype = torch.float32 if backend == "triton" else torch.float64
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    attn, value = make_inputs(1, 1 if kernel_size == 13 else 2, *shape, 4, kernel_size, dtype, "contmix", device)
    grad_out = torch.randn(value.shape, dtype=dtype, device=device)
    out, grads = run(backend, attn, value, kernel_size, 1, grad_out)
    a, v = upcast([attn, value])
    expected = contmix_unfold_aggregation(a, v, kernel_size)
    expected_grads = torch.autograd.grad(expected, (a, v), grad_out.double())
    tol = 1e-5 if backend == "triton" else 1e-12
    for got, want, name in zip([out, *grads], [expected, *expected_grads], ["out", "dattn", "dvalue"]):
        assert_rel(got, want, tol, name)


def contmix_bias_index(H, W, k):
    """ContMix's relative-position-bias index (``apply_rpb``, from NAT), re-derived: per axis a staircase
    0 .. k//2 - 1, then k//2 repeated n - k + 1 times, then k//2 + 1 .. k - 1; pixel (i, j) and slot (ti, tj) use
    table entry (stair_h[i] + ti, stair_w[j] + tj) of the (2k-1) x (2k-1) table, with the pixel order reversed
    (the staircase is built from the far border)."""
    def stair(n):
        return list(range(k // 2)) + [k // 2] * (n - k + 1) + list(range(k // 2 + 1, k))
    nb = 2 * k - 1
    t = torch.arange(k)
    slot = (t[:, None] * nb + t[None, :]).reshape(-1)  # (k*k,)
    base = torch.tensor(stair(H))[:, None] * nb + torch.tensor(stair(W))[None, :]  # (H, W)
    return (base.reshape(-1, 1) + slot).flip(0)


@pytest.mark.parametrize("H,W,k", [(14, 14, 13), (14, 14, 5), (7, 7, 7), (9, 12, 5), (8, 5, 3)])
def test_contmix_bias_index_is_the_shared_rpb_index(H, W, k):
    """ContMix adds its rpb with NAT's indexing, which the shared ``rpb_index`` (dilation 1) reproduces exactly:
    the model layer can use it (ContMix's index is only defined for d = 1 and n >= k)."""
    assert torch.equal(contmix_bias_index(H, W, k), rpb_index(H, W, k))


# ----------------------------------------------------------------------------------------- (b) gradcheck

@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_gradcheck(backend):
    # 7x6 map, k=3, d=2: row sub-lattices of 4 and 3 tokens (unequal), column ones of 3. fast_mode checks a random
    # projection of the Jacobian, still failing on any wrong gradient entry with probability ~1.
    attn, value = make_inputs(1, 1, 7, 6, 2, 3, torch.float64, "contmix")

    def f(attn, value):
        with use_backend(backend):
            return neighborhood_aggregation(attn, value, 3, 2)

    assert torch.autograd.gradcheck(f, (attn, value), fast_mode=True)


# ------------------------------------------------------------------- (c) torch path vs reference, random

@st.composite
def agg_shapes(draw):
    kernel_size = draw(st.sampled_from([1, 3, 5]))
    dilation = draw(st.integers(1, 3))
    H = draw(st.integers(kernel_size * dilation, kernel_size * dilation + 9))
    W = draw(st.integers(kernel_size * dilation, kernel_size * dilation + 9))
    return H, W, kernel_size, dilation


@settings(deadline=None, max_examples=30)  # ~3 s on 2 idle cores
# a class with fewer tiles than the longest one (W = 3, d = 2, tile 1): a whole tile of clamped duplicates
@example(shape=(2, 3, 1, 2), B=1, heads=1, D=1, tile=1, layout="contmix", dtype=torch.float64, seed=0)
# every class is one tile and its own halo (H = W = k*d): values written once, no accumulation
@example(shape=(6, 6, 3, 2), B=2, heads=2, D=3, tile=8, layout="contmix", dtype=torch.float64, seed=0)
@given(shape=agg_shapes(), B=st.integers(1, 2), heads=st.integers(1, 3), D=st.integers(1, 20),
       tile=st.sampled_from([1, 3, 8]), layout=st.sampled_from(["contmix", "contiguous"]),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2 ** 16))
def test_torch_path_matches_reference(shape, B, heads, D, tile, layout, dtype, seed):
    # float64: the paths differ only in summation order (1e-10). float32: fp32 rounding of sums of at most 25
    # products of O(1) values: ~1e-6 relative; 2e-5 leaves margin, while a wrong neighbour or slot gives O(1)
    # errors. Tiles of 1 and 3 exercise many tiles, halo clamping and duplicates.
    from visionzoo.kernels.neighborhood_aggregation import torch_path
    H, W, kernel_size, dilation = shape
    attn, value = make_inputs(B, heads, H, W, D, kernel_size, dtype, layout, seed=seed)
    with unittest.mock.patch.object(torch_path, "TILE", tile):
        check_against_reference("torch", attn, value, kernel_size, dilation,
                                1e-10 if dtype == torch.float64 else 2e-5, seed=seed + 2)


def test_torch_path_tiles_and_chunks(monkeypatch):
    """Balanced tiles (14 -> 7 + 7: no duplicates), and tiny memory budgets: one tile and one image per chunk."""
    from visionzoo.kernels.neighborhood_aggregation import torch_path
    assert [torch_path.balanced_tile(n, d, 8) for n, d in [(14, 1), (56, 1), (50, 1), (7, 1), (17, 2), (3, 1)]] \
        == [7, 8, 8, 7, 5, 3]
    plan = torch_path._build_plan(2, 1, 14, 14, 4, 13, 1, 8, "cpu", torch_path.CHUNK_BYTES)
    assert not plan.duplicates and len(plan.chunks) == 1 and plan.chunks[0].shape == (4, 49, 196)
    monkeypatch.setattr(torch_path, "CHUNK_BYTES", 1)
    plan = torch_path._build_plan(2, 1, 17, 19, 2, 5, 2, 8, "cpu", 1)
    # classes of 9/8 rows and 10/9 columns: balanced 5x5 tiles (2 x 2 per class, duplicates), halos of 9x9
    assert len(plan.chunks) == 16 and plan.chunks[0].shape == (1, 25, 81) and len(plan.images) == 2 and plan.duplicates
    attn, value = make_inputs(2, 1, 17, 19, 2, 5, torch.float64, "contmix")
    check_against_reference("torch", attn, value, 5, 2, 1e-10)  # float64, as above


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_path_half_precision(dtype):
    # Matmuls in the input dtype: the weights and values are used exactly, sums of <= 25 products accumulate in
    # fp32 inside the matmul, then the output / gradients are rounded (2^-11 fp16, 2^-8 bf16 relative) and dV is
    # summed over halos in fp32; 1e-2 / 4e-2 leave margin.
    attn, value = make_inputs(1, 2, 11, 10, 8, 5, dtype)
    check_against_reference("torch", attn, value, 5, 2, 1e-2 if dtype == torch.float16 else 4e-2)


# ------------------------------------------------------------ (d) Triton (interpreter on CPU) vs reference

TRITON_CASES = [
    # id: (B, heads, H, W, D, kernel_size, dilation, layout)
    pytest.param((2, 2, 9, 11, 5, 3, 2, "contmix"), id="9x11-k3-d2-hd5-contmix"),
    pytest.param((1, 1, 17, 10, 24, 5, 1, "contiguous"), id="17x10-k5-multitile-hd24"),
]


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matches_reference(case, dtype):
    # fp32: fp32 dots (input_precision="ieee") and fp32 accumulation over <= 25 terms: ~1e-6 relative; 1e-5 as in
    # DESIGN.md. fp16: the float64 reference runs on the same fp16 values, which the dots use exactly with fp32
    # accumulation, so the error is the rounding of the output / gradients to fp16 (2^-11): 1e-2 leaves margin,
    # and indexing bugs give O(1).
    B, heads, H, W, D, kernel_size, dilation, layout = case
    attn, value = make_inputs(B, heads, H, W, D, kernel_size, dtype, layout, device=TRITON_DEVICE)
    check_against_reference("triton", attn, value, kernel_size, dilation, 1e-5 if dtype == torch.float32 else 1e-2)


@needs_triton
def test_triton_overlock_kernel_sizes():
    """k = 13 on a 14x15 map (OverLoCK-T stage 3 at 224 is 14x14: every window nearly the whole map, halos of
    several chunks) with only the value gradient, and k = 1 with only the attn gradient (the other kernel skipped)."""
    attn, value = make_inputs(1, 1, 14, 15, 16, 13, device=TRITON_DEVICE, requires_grad=(False, True))
    check_against_reference("triton", attn, value, 13, 1, 1e-5)  # fp32, see test_triton_matches_reference
    attn, value = make_inputs(1, 2, 5, 4, 3, 1, device=TRITON_DEVICE, requires_grad=(True, False))
    check_against_reference("triton", attn, value, 1, 2, 1e-5)


@needs_triton
def test_triton_strided_grad_output():
    """dO with arbitrary strides (autograd may pass any layout)."""
    attn, value = make_inputs(1, 2, 8, 9, 8, 3, device=TRITON_DEVICE)
    grad_out = torch.randn(1, 8, 9, 8, 2, device=TRITON_DEVICE).permute(0, 4, 1, 2, 3)
    check_against_reference("triton", attn, value, 3, 2, 1e-5, grad_out=grad_out)  # fp32, as above


def test_triton_tile_config():
    pytest.importorskip("triton")
    from visionzoo.kernels.neighborhood_aggregation import triton_kernel as tk
    assert tk.tile_config(14, 16) == (8, 64, 64, 16, 4)  # OverLoCK-T stage 3: 8x8 query tiles, head dim 16
    assert tk.tile_config(3, 5) == (4, 64, 64, 16, 4)  # narrow maps: 16x4 tiles; head dims padded to 16
    assert tk.tile_config(100, 128) == (8, 64, 32, 128, 8)


# ---------------------------------------------------------------------------------- (e) GPU-only Triton

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("case", [(2, 8, 14, 14, 16, 13, 1), (2, 8, 14, 14, 16, 5, 1), (2, 16, 7, 7, 16, 7, 1),
                                  (1, 3, 29, 31, 24, 5, 3), (1, 2, 50, 84, 32, 13, 1)])
def test_triton_bf16_gpu(case):
    # OverLoCK-T Focus stages 3 (k = 13 and the small k = 5) and 4 (k = 7) at 224, dilation, a detection-sized map.
    # bf16 has 8 mantissa bits: the output and gradients rounded to bf16 (2^-9 relative) and dV summed in fp32
    # give ~4e-3; 3e-2 leaves margin against the float64 reference on the same bf16 inputs.
    B, heads, H, W, D, kernel_size, dilation = case
    attn, value = make_inputs(B, heads, H, W, D, kernel_size, torch.bfloat16, "contmix", device="cuda")
    check_against_reference("triton", attn, value, kernel_size, dilation, 3e-2)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_backward_deterministic_gpu(dtype):
    """No atomics: two backward passes give bitwise equal gradients."""
    attn, value = make_inputs(8, 8, 28, 28, 16, 13, dtype, device="cuda")
    grad_out = torch.randn(value.shape, device="cuda", dtype=dtype)
    first = run("triton", attn, value, 13, 1, grad_out)[1]
    second = run("triton", attn, value, 13, 1, grad_out)[1]
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.gpu
@needs_gpu
def test_torch_path_gpu():
    attn, value = make_inputs(2, 2, 15, 17, 16, 5, device="cuda")
    # fp32 matmuls on GPU may use TF32 when allowed; with the default (no TF32 for matmul) ~1e-6; 1e-4 covers both.
    check_against_reference("torch", attn, value, 5, 2, 1e-4)


# ------------------------------------------------------------------------------------- (f) equivalences

@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_softmax_weights_reproduce_neighborhood_attention(backend):
    """NA = softmax(q.k + rpb over the window) then this op: weights built with the shared neighbor_index /
    rpb_index in slot order give neighborhood_attention's output (whose indexing matches natten's fixture)."""
    # fp32 vs fp32 computations of the same sums in another order: ~1e-6; 1e-5 as in DESIGN.md.
    B, H, W, heads, D, ks, d = 2, 11, 9, 2, 8, 3, 2
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, W, heads, D, generator=g).to(device) for _ in range(3))
    rpb = torch.randn(heads, 2 * ks - 1, 2 * ks - 1, generator=g).to(device)
    idx = neighbor_index(H, W, ks, d, device)  # (HW, k*k)
    scores = torch.einsum("bnhd,bnthd->bhnt", q.flatten(1, 2) * D ** -0.5, k.flatten(1, 2)[:, idx])
    scores = scores + rpb.flatten(1)[:, rpb_index(H, W, ks, d, device)]
    attn = scores.softmax(-1).view(B, heads, H, W, ks * ks)
    with use_backend(backend):
        out = na2d_av(attn, v.permute(0, 3, 1, 2, 4), ks, d).permute(0, 2, 3, 1, 4)
    with use_backend("torch"):
        expected = neighborhood_attention(q, k, v, ks, d, rpb)
    assert_rel(out, expected, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_kernel_size_one_scales_value(backend):
    # One neighbour per pixel (itself): out = attn * value, one product per element: exact in fp32.
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    attn, value = make_inputs(1, 2, 4, 5, 5, 1, device=device)
    with use_backend(backend):
        out = neighborhood_aggregation(attn, value, 1, 2)
    assert torch.equal(out, (attn * value).detach())


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_uniform_weights_over_the_whole_map_give_the_mean(backend):
    # k = H = W, d = 1: every window is the whole map, so uniform weights 1/k^2 give the map's mean value.
    # fp32 sums of 49 terms: ~1e-7; 1e-5 as in DESIGN.md.
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    value = torch.randn(2, 2, 7, 7, 5, device=device)
    attn = torch.full((2, 2, 7, 7, 49), 1 / 49, device=device)
    with use_backend(backend):
        out = neighborhood_aggregation(attn, value, 7)
    assert_rel(out, value.mean((2, 3), keepdim=True).expand_as(value), 1e-5)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_weights_in_another_dtype_are_used_in_values_dtype(backend):
    """fp32 weights (a softmax under autocast) with fp16 values: as NATTEN 0.17's na2d_av, the weights are rounded
    to value's dtype first; attn's gradient comes back in attn's dtype."""
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    attn, value = make_inputs(1, 2, 8, 9, 8, 3, device=device)
    value = value.detach().half().requires_grad_()
    grad_out = torch.randn(value.shape, device=device).half()
    out, (dattn, dvalue) = run(backend, attn, value, 3, 2, grad_out)
    assert (out.dtype, dattn.dtype, dvalue.dtype) == (torch.float16, torch.float32, torch.float16)
    attn16 = attn.detach().half().requires_grad_()
    out16, (dattn16, dvalue16) = run(backend, attn16, value, 3, 2, grad_out)
    # the same fp16 weights enter the same computation: bitwise equal output and value gradient
    assert torch.equal(out, out16) and torch.equal(dvalue, dvalue16)
    # dattn: fp32 here, fp16-rounded there (Triton stores the fp32 dP in attn's dtype): 2^-11 relative; 2e-3
    assert_rel(dattn, dattn16, 2e-3)



def test_torch_path_under_cpu_autocast():
    """fp32 inputs under CPU bf16 autocast (an AMP training step): the tiled matmuls run in bf16 and their results
    are stored into the fp32 output (this raised a dtype error in index_copy_ before); output and gradients keep
    the inputs' dtype, within bf16 rounding (2^-8 relative; 4e-2 as the half-precision test) of the reference."""
    attn, value = make_inputs(1, 2, 11, 10, 8, 5)
    with use_backend("torch"), torch.autocast("cpu", dtype=torch.bfloat16):
        out = neighborhood_aggregation(attn, value, 5, 2)
    out.backward(torch.ones_like(out))
    assert (out.dtype, attn.grad.dtype, value.grad.dtype) == (torch.float32,) * 3
    ref = neighborhood_aggregation_reference(attn.detach(), value.detach(), 5, 2)
    assert_rel(out.detach(), ref, 4e-2)

# ------------------------------------------------------------------------------------------------ (g) FLOPs

def test_flops_match_flop_counter():
    """The op's FLOPs are those of an einsum formulation doing exactly the weighted sums over the k*k neighbours."""
    from torch.utils.flop_counter import FlopCounterMode
    B, heads, H, W, D, k, d = 2, 3, 9, 11, 8, 3, 2
    attn, value = make_inputs(B, heads, H, W, D, k, requires_grad=(False, False))
    idx = neighbor_index(H, W, k, d)
    with FlopCounterMode(display=False) as counter:
        neighbours = value.flatten(2, 3)[:, :, idx]  # (B, heads, HW, k*k, D): a gather, no FLOPs
        torch.einsum("bhnt,bhntd->bhnd", attn.flatten(2, 3), neighbours)
    assert counter.get_total_flops() == neighborhood_aggregation_flops(attn, value, k, d) == 2 * B * heads * H * W * 9 * D
    # OverLoCK-T Focus stage 3 at 224 (README roofline): 8 heads of 16 channels on 14x14, k = 13 and the small k = 5
    meta_attn, meta_value = torch.empty(1, 8, 14, 14, 169, device="meta"), torch.empty(1, 8, 14, 14, 16, device="meta")
    assert neighborhood_aggregation_flops(meta_attn, meta_value, 13) == 8_479_744
    assert neighborhood_aggregation_flops((1, 8, 14, 14, 25), (1, 8, 14, 14, 16), 5) == 1_254_400
    with pytest.raises(ValueError, match=r"kernel_size\*\*2 = 5\*\*2 = 25 .*got 169"):
        neighborhood_aggregation_flops(meta_attn, meta_value, 5)


# ---------------------------------------------------------------------------- (h) dispatch and validation

def test_default_backend_on_cpu_is_torch(monkeypatch):
    calls = []
    monkeypatch.setattr(agg_module, "neighborhood_aggregation_torch", lambda *a: calls.append("torch") or a[1])
    monkeypatch.setattr(agg_module, "neighborhood_aggregation_reference", lambda *a: calls.append("reference") or a[1])
    monkeypatch.delenv("VISIONZOO_KERNEL_BACKEND", raising=False)
    attn, value = make_inputs(1, 1, 4, 4, 8, 3, requires_grad=(False, False))
    neighborhood_aggregation(attn, value, 3)
    monkeypatch.setenv("VISIONZOO_KERNEL_BACKEND", "reference")
    neighborhood_aggregation(attn, value, 3)
    assert calls == ["torch", "reference"]
    assert na2d_av is neighborhood_aggregation


def test_forced_triton_refuses_float64():
    pytest.importorskip("triton")
    attn, value = make_inputs(1, 1, 4, 4, 8, 3, torch.float64, requires_grad=(False, False))
    with use_backend("triton"), pytest.raises(ValueError, match="does not support.*float64"):
        neighborhood_aggregation(attn, value, 3)


@pytest.mark.parametrize("make_args,error,match", [
    (lambda a, v: (a[..., :8], v, 3), ValueError,
     r"attn must hold one weight per neighbour, kernel_size\*\*2 = 3\*\*2 = 9 in its last dimension .*got 8"),
    (lambda a, v: (a, v, 5), ValueError, r"kernel_size\*\*2 = 5\*\*2 = 25 .*got 9"),
    (lambda a, v: (a[:, :, :7], v, 3), ValueError, r"attn and value must agree on \(B, heads, H, W\)"),
    (lambda a, v: (a, v[:1], 3), ValueError, r"attn and value must agree on \(B, heads, H, W\)"),
    (lambda a, v: (a[..., 0], v, 3), ValueError, r"attn must be \(B, heads, H, W, kernel_size\*\*2\), got a 4-D"),
    (lambda a, v: (a, v[..., 0], 3), ValueError, r"value must be \(B, heads, H, W, head_dim\), got a 4-D"),
    (lambda a, v: (a, v.long(), 3), TypeError, "value must be a floating point tensor, got torch.int64"),
    (lambda a, v: (a.to("meta"), v, 3), ValueError, "attn and value must be on the same device, got meta and cpu"),
    (lambda a, v: (a, v.numpy(), 3), TypeError, "value must be a torch.Tensor, got ndarray"),
    (lambda a, v: (a[:0], v[:0], 3), ValueError, "attn must not be empty"),
    (lambda a, v: (a[..., :4], v, 2), ValueError, "kernel_size must be an odd integer >= 1.*got 2"),
    (lambda a, v: (a, v, 3, 0), ValueError, "dilation must be an integer >= 1, got 0"),
    (lambda a, v: (a, v, 3, 3), ValueError,
     r"too small for kernel_size \* dilation = 3 \* 3 = 9: height 8 < 9 .*the smallest holds 2"),
    (lambda a, v: (torch.zeros(2, 1, 8, 9, 121), v, 11), ValueError, r"= 11 \* 1 = 11: height 8 < 11"),
])
def test_bad_inputs(make_args, error, match):
    attn, value = make_inputs(2, 1, 8, 9, 4, 3, requires_grad=(False, False))
    with pytest.raises(error, match=match):
        neighborhood_aggregation(*make_args(attn, value))
