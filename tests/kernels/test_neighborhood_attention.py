"""Neighbourhood attention: reference, torch path and Triton kernels (interpreter on CPU, GPU when present).

Tolerances are relative to the largest magnitude of the expected tensor (see ``assert_rel``), each
justified where it is used. The Triton tests run under TRITON_INTERPRET=1 (set in conftest.py).
"""
import importlib
import json
import os
import unittest.mock
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # before anything imports triton_kernel (see conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import example, given, settings, strategies as st

from .conftest import BACKENDS_HERE, TRITON_DEVICE, needs_gpu, needs_triton
from visionzoo.kernels import neighborhood_attention, neighborhood_attention_flops, use_backend, window_attention
from visionzoo.kernels.neighborhood_attention.reference import neighborhood_attention_reference

na_module = importlib.import_module("visionzoo.kernels.neighborhood_attention")
FIXTURE = Path(__file__).parent / "fixtures" / "natten021_na2d.safetensors"





# ------------------------------------------------------------------------------------------------ helpers

def make_qkv(B, H, W, heads, D, dtype=torch.float32, layout="fused", device="cpu", seed=0):
    """q, k, v of shape (B, H, W, heads, D), leaf tensors with non-trivial strides.

    ``fused``: views of one (B, H, W, 3 * heads * D) tensor, as a qkv projection produces them.
    ``permuted``: each from its own (B, heads, D, H, W)-ordered buffer (every stride different).
    ``contiguous``: plain tensors.
    """
    g = torch.Generator().manual_seed(seed)
    if layout == "fused":
        qkv = torch.randn(B, H, W, 3 * heads * D, generator=g).to(device=device, dtype=dtype)
        q, k, v = qkv.view(B, H, W, 3, heads, D).unbind(3)
    elif layout == "permuted":
        q, k, v = (torch.randn(B, heads, D, H, W, generator=g).to(device=device, dtype=dtype).permute(0, 3, 4, 1, 2)
                   for _ in range(3))
    else:
        q, k, v = (torch.randn(B, H, W, heads, D, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    return [t.requires_grad_() for t in (q, k, v)]


def make_rpb(heads, kernel_size, requires_grad=True, device="cpu", dtype=torch.float32, seed=1, strided=False):
    """(heads, 2k-1, 2k-1); ``strided``: seen through a permute of a (2k-1, 2k-1, heads) buffer."""
    n = 2 * kernel_size - 1
    g = torch.Generator().manual_seed(seed)
    if strided:
        rpb = torch.randn(n, n, heads, generator=g).to(device=device, dtype=dtype).permute(2, 0, 1)
    else:
        rpb = torch.randn(heads, n, n, generator=g).to(device=device, dtype=dtype)
    return rpb.requires_grad_(requires_grad)


def run(backend, q, k, v, kernel_size, dilation, rpb, grad_out, scale=None):
    """Output and the gradients of every input that requires one (None where it does not)."""
    with use_backend(backend):
        out = neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale)
    inputs = [t for t in (q, k, v, rpb) if t is not None and t.requires_grad]
    grads = iter(torch.autograd.grad(out, inputs, grad_out))
    return out, [next(grads) if t is not None and t.requires_grad else None for t in (q, k, v, rpb)]


def upcast(tensors, dtype=torch.float64):
    """Detached copies in ``dtype`` that keep requires_grad (the oracle runs on the same values)."""
    return [None if t is None else t.detach().to(dtype).requires_grad_(t.requires_grad) for t in tensors]


def assert_rel(actual, expected, tol, what=""):
    """max |actual - expected| <= tol * max(1, max |expected|), computed in float64."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual - expected).abs().max().item()
    bound = tol * max(1.0, expected.abs().max().item())
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"


def check_against_reference(backend, q, k, v, kernel_size, dilation, rpb, tol, seed=2):
    """Forward and every gradient of ``backend`` against the float64 reference on the same input values."""
    g = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(q.shape, generator=g).to(device=q.device, dtype=q.dtype)
    out, grads = run(backend, q, k, v, kernel_size, dilation, rpb, grad_out)
    assert out.dtype == q.dtype and out.shape == q.shape and out.is_contiguous()
    ref_in = upcast([q, k, v, rpb])
    ref_out, ref_grads = run("reference", *ref_in[:3], kernel_size, dilation, ref_in[3], grad_out.double())
    assert_rel(out, ref_out, tol, "out")
    for name, grad, ref_grad, t in zip(("dq", "dk", "dv", "drpb"), grads, ref_grads, (q, k, v, rpb)):
        if t is None or not t.requires_grad:
            assert grad is None
            continue
        assert grad.dtype == t.dtype and grad.shape == t.shape, name
        assert_rel(grad, ref_grad, tol, name)


# --------------------------------------------------- (a) the reference against independent formulations

def natten_window_start(index, length, k, d):
    """NATTEN v0.14.6 ``get_window_start`` (natten_cpu_commons.h), map units, transcribed."""
    ns = k // 2
    if d <= 1:
        return max(index - ns, 0) + (index + ns >= length) * (length - index - ns - 1)
    if index - ns * d < 0:
        return index % d
    if index + ns * d >= length:
        a = (length // d) * d
        b = length - a
        return length - b + index % d - 2 * ns * d if index % d < b else a + index % d - k * d
    return index - ns * d


def gather_neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale):
    """NA as NATTEN 0.14 computes it: each query's k*k keys and values gathered (a k*k copy) from NATTEN's
    window start, the bias from the key-query offset in dilated units, softmax over those k*k scores."""
    B, H, W, heads, D = q.shape
    K, d = kernel_size, dilation
    rows = torch.tensor([[natten_window_start(i, H, K, d) + t * d for t in range(K)] for i in range(H)])  # (H, K)
    cols = torch.tensor([[natten_window_start(j, W, K, d) + t * d for t in range(K)] for j in range(W)])
    r = rows[:, None, :, None].expand(H, W, K, K)  # key row of (query row, query col, slot row, slot col)
    c = cols[None, :, None, :].expand(H, W, K, K)
    s = torch.einsum("bijhd,bijtuhd->bhijtu", q, k[:, r, c]) * scale
    if rpb is not None:
        i = torch.arange(H)[:, None, None, None]
        j = torch.arange(W)[None, :, None, None]
        s = s + rpb[:, (r - i) // d + K - 1, (c - j) // d + K - 1]
    p = s.flatten(-2).softmax(-1).view(s.shape)
    return torch.einsum("bhijtu,bijtuhd->bijhd", p, v[:, r, c])


@pytest.mark.parametrize("shape,kernel_size,dilation,with_rpb", [
    ((7, 9), 3, 1, True), ((9, 11), 3, 2, True), ((13, 10), 3, 3, False), ((11, 12), 5, 2, True),
    ((7, 7), 7, 1, True), ((5, 6), 1, 3, False),
])
def test_reference_matches_gather_formulation(shape, kernel_size, dilation, with_rpb):
    # Both in float64, differing only in summation order: 1e-12 catches any indexing error.
    q, k, v = make_qkv(1, *shape, 2, 3, torch.float64, layout="contiguous")
    rpb = make_rpb(2, kernel_size, dtype=torch.float64) if with_rpb else None
    expected = gather_neighborhood_attention(q, k, v, kernel_size, dilation, rpb, 0.7)
    assert_rel(neighborhood_attention_reference(q, k, v, kernel_size, dilation, rpb, 0.7), expected, 1e-12)


def _natten_cases():
    from safetensors import safe_open
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    return meta, [(case, [tensors[f"{i}.{n}"] for n in ("q", "k", "v", "out")])
                  for i, case in enumerate(json.loads(meta["cases"]))]


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_matches_natten_021_fixture(backend):
    """natten 0.21.7's ``na2d`` (no rpb), generated once (tests/kernels/fixtures/make_natten_na2d_fixture.py):
    odd sizes with dilations whose sub-lattices differ in length, k*d = side, k = side."""
    meta, cases = _natten_cases()
    assert meta["natten"].startswith("0.21")
    for (B, H, W, heads, D, k, d), (q, key, v, expected) in cases:
        with use_backend(backend):
            out = neighborhood_attention(q.double(), key.double(), v.double(), k, d)
        # natten computed in fp32 (Flex attention): ~1e-7 relative per element; 1e-5 still fails on any
        # wrong neighbour (O(1) errors).
        assert_rel(out, expected, 1e-5, f"case {(B, H, W, heads, D, k, d)}")


@needs_triton
def test_triton_matches_natten_021_fixture():
    _, cases = _natten_cases()
    (B, H, W, heads, D, k, d), (q, key, v, expected) = cases[3]  # 15x17, k=5, d=3: unequal sub-lattices
    with use_backend("triton"):
        out = neighborhood_attention(*(t.to(TRITON_DEVICE) for t in (q, key, v)), k, d)
    assert_rel(out, expected, 1e-5)  # fp32 both sides (ieee dots): ~1e-7


# ----------------------------------------------------------------------------------------- (b) gradcheck

@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_gradcheck(backend):
    # 7x6 map, k=3, d=2: row sub-lattices of 4 and 3 tokens (unequal), column ones of 3; one head of
    # dim 2 keeps the numerical Jacobian small. fast_mode checks a random projection of the Jacobian
    # (the full one takes ~20 s here), still failing on any wrong gradient entry with probability ~1.
    q, k, v = make_qkv(1, 7, 6, 1, 2, torch.float64, layout="fused")
    rpb = make_rpb(1, 3, dtype=torch.float64)

    def f(q, k, v, rpb):
        with use_backend(backend):
            return neighborhood_attention(q, k, v, 3, 2, rpb)

    assert torch.autograd.gradcheck(f, (q, k, v, rpb), fast_mode=True)


# ------------------------------------------------------------------- (c) torch path vs reference, random

@st.composite
def na_shapes(draw):
    kernel_size = draw(st.sampled_from([1, 3, 5]))
    dilation = draw(st.integers(1, 3))
    H = draw(st.integers(kernel_size * dilation, kernel_size * dilation + 9))
    W = draw(st.integers(kernel_size * dilation, kernel_size * dilation + 9))
    return H, W, kernel_size, dilation


@settings(deadline=None, max_examples=40)  # ~3 s on 2 idle cores
# a class with fewer tiles than the longest one (W = 3, d = 2, tile 1): a whole tile of clamped duplicates
@example(shape=(2, 3, 1, 2), B=1, heads=1, D=1, with_rpb=True, tile=1, layout="fused", dtype=torch.float64, seed=0)
# every class is one tile and its own halo (H = W = k*d): keys and queries written once, no accumulation
@example(shape=(6, 6, 3, 2), B=2, heads=2, D=3, with_rpb=True, tile=8, layout="fused", dtype=torch.float64, seed=0)
@given(shape=na_shapes(), B=st.integers(1, 2), heads=st.integers(1, 3), D=st.integers(1, 20),
       with_rpb=st.booleans(), tile=st.sampled_from([1, 3, 8]),
       layout=st.sampled_from(["fused", "permuted", "contiguous"]), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2 ** 16))
def test_torch_path_matches_reference(shape, B, heads, D, with_rpb, tile, layout, dtype, seed):
    # float64: the paths differ only in summation order (1e-10). float32: fp32 rounding of sums of at most
    # 25 products of O(1) values and of softmax: ~1e-6 relative; 2e-5 leaves margin, while a wrong
    # neighbour or bias index gives O(1) errors. Tiles of 1 and 3 exercise many tiles and halo clamping.
    from visionzoo.kernels.neighborhood_attention import torch_path
    H, W, kernel_size, dilation = shape
    q, k, v = make_qkv(B, H, W, heads, D, dtype, layout=layout, seed=seed)
    rpb = make_rpb(heads, kernel_size, dtype=dtype, seed=seed + 1) if with_rpb else None
    with unittest.mock.patch.object(torch_path, "TILE", tile), unittest.mock.patch.object(torch_path, "DENSE", False):
        check_against_reference("torch", q, k, v, kernel_size, dilation, rpb,
                                1e-10 if dtype == torch.float64 else 2e-5, seed=seed + 2)


@pytest.mark.parametrize("case", [(2, 14, 14, 2, 8, 7, 1, torch.float64), (1, 7, 9, 3, 5, 7, 1, torch.float64),
                                  (1, 6, 5, 1, 4, 3, 1, torch.float64), (2, 14, 14, 2, 8, 7, 1, torch.bfloat16)])
def test_torch_path_dense_route(case, monkeypatch):
    """Small maps whose tiles would score about the whole map (DiNAT's 14x14 and 7x7 stages at d = 1) take one
    masked SDPA over the map when nothing needs a gradient: forward as the reference there; under autograd the
    tiled path is kept (the route is not taken). The dense function itself is also right under autograd (forced):
    forward and every gradient as the reference (float64: summation order only; bf16: inputs rounded to bf16,
    fp32 math, as for the tiled path)."""
    from visionzoo.kernels.neighborhood_attention import torch_path
    B, H, W, heads, D, kernel_size, dilation, dtype = case
    assert torch_path.dense_is_cheaper(H, W, kernel_size, dilation)
    calls, dense = [], torch_path.neighborhood_attention_dense
    monkeypatch.setattr(torch_path, "neighborhood_attention_dense", lambda *a: calls.append(1) or dense(*a))
    q, k, v = make_qkv(B, H, W, heads, D, dtype)
    rpb = make_rpb(heads, kernel_size, dtype=dtype)
    tol = 1e-10 if dtype == torch.float64 else 4e-2
    check_against_reference("torch", q, k, v, kernel_size, dilation, rpb, tol)  # autograd: tiled
    assert not calls
    with torch.no_grad(), use_backend("torch"):
        out = neighborhood_attention(q, k, v, kernel_size, dilation, rpb=rpb)
    assert calls
    ref = neighborhood_attention_reference(*upcast([q, k, v]), kernel_size, dilation, rpb=rpb.double(),
                                           scale=D ** -0.5)
    assert out.dtype == q.dtype and out.is_contiguous()
    assert_rel(out, ref, tol, "out")
    calls.clear()
    monkeypatch.setattr(torch_path, "_needs_grad", lambda *a: False)
    check_against_reference("torch", q, k, v, kernel_size, dilation, rpb, tol)  # forced dense under autograd
    assert calls
    assert not torch_path.dense_is_cheaper(14, 14, 7, 2) and not torch_path.dense_is_cheaper(28, 28, 7, 1)


@pytest.mark.parametrize("chunk_bytes,chunks", [(1, (16, 2)), (100_000, (8, 1))])
def test_torch_path_chunks(monkeypatch, chunk_bytes, chunks):
    """Tiny memory budgets: one tile and one image per chunk (1 byte), or two tiles of both images."""
    from visionzoo.kernels.neighborhood_attention import torch_path
    monkeypatch.setattr(torch_path, "CHUNK_BYTES", chunk_bytes)
    q, k, v = make_qkv(2, 17, 19, 1, 2, torch.float64)
    # 17x19, k=5, d=2: classes of 9/8 rows and 10/9 columns, 8x8 tiles: 4 x 4 tiles, halos of 9 x 10 keys
    _, _, pairs, _, M, N = torch_path._layout(q, 5, 2, torch_path.TILE)
    assert (pairs.numel(), M, N) == (16, 64, 90)
    tiles, images = torch_path._plan(2, 1, 16, M, N)  # one tile of 2 images: 2 * 64 * 90 * 4 B = 46 kB
    assert (len(tiles), len(images)) == chunks
    check_against_reference("torch", q, k, v, 5, 2, make_rpb(1, 5, dtype=torch.float64), 1e-10)  # as above


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_path_half_precision(dtype):
    # Matmuls in the input dtype, scores/softmax/gradient sums in fp32: the error is the rounding of the
    # inputs to the matmuls and of the outputs (2^-11 fp16, 2^-8 bf16 relative); 1e-2 / 4e-2 leave margin.
    q, k, v = make_qkv(1, 9, 10, 2, 8, dtype)
    check_against_reference("torch", q, k, v, 3, 2, make_rpb(2, 3, dtype=dtype), 1e-2 if dtype == torch.float16 else 4e-2)


# ------------------------------------------------------------ (d) Triton (interpreter on CPU) vs reference

TRITON_CASES = [
    # id: (B, H, W, heads, D, kernel_size, dilation, rpb: None | "grad" | "strided" (with grad) | "const", layout)
    pytest.param((1, 9, 11, 2, 5, 3, 2, "grad", "fused"), id="9x11-k3-d2-hd5-rpb"),
    pytest.param((1, 17, 10, 1, 16, 5, 1, "strided", "fused"), id="17x10-k5-d1-multitile-stridedrpb"),
    pytest.param((1, 13, 10, 1, 24, 3, 3, None, "permuted"), id="13x10-k3-d3-hd24-norpb-perm"),
    pytest.param((1, 7, 9, 1, 8, 7, 1, "const", "fused"), id="7x9-k7-constrpb"),
]


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matches_reference(case, dtype):
    # fp32: fp32 dots (input_precision="ieee") and fp32 accumulation over <= 49 terms: ~1e-6 relative;
    # 1e-5 as in DESIGN.md. fp16: the float64 reference runs on the same fp16 values, so the error is the
    # kernel's own: fp16 outputs (2^-11 relative) and P / dS rounded to fp16 before their dots give ~1e-3;
    # 1e-2 leaves margin, and indexing bugs give O(1).
    B, H, W, heads, D, kernel_size, dilation, rpb_kind, layout = case
    q, k, v = make_qkv(B, H, W, heads, D, dtype, layout=layout, device=TRITON_DEVICE)
    rpb = None if rpb_kind is None else make_rpb(heads, kernel_size, rpb_kind != "const", device=TRITON_DEVICE,
                                                 strided=rpb_kind == "strided")
    check_against_reference("triton", q, k, v, kernel_size, dilation, rpb, 1e-5 if dtype == torch.float32 else 1e-2)


@needs_triton
@pytest.mark.parametrize("case", [(4, 5, 1, 2), (10, 9, 9, 1)], ids=["k1-d2", "k9-17x17-bias-bins"])
def test_triton_kernel_size_extremes(case):
    """k = 1 (one bias bin) and k = 9 (289 bias bins: several gathered bin blocks, a padded block skipped)."""
    H, W, kernel_size, dilation = case
    q, k, v = make_qkv(1, H, W, 1, 8, device=TRITON_DEVICE)
    check_against_reference("triton", q, k, v, kernel_size, dilation, make_rpb(1, kernel_size, device=TRITON_DEVICE),
                            1e-5)  # fp32, see test_triton_matches_reference


@needs_triton
def test_triton_rpb_grad_chunked_and_strided_grad_output(monkeypatch):
    """Several tiles per dQ program (the bias gradient summed over them in registers), and a dO with
    arbitrary strides (autograd may pass any layout)."""
    from visionzoo.kernels.neighborhood_attention import triton_kernel
    monkeypatch.setattr(triton_kernel, "RPB_TARGET_PROGRAMS", 2)  # 2 heads: one chunk holding all 4 tiles
    assert triton_kernel.rpb_chunks(4, 2) == 1
    q, k, v = make_qkv(1, 8, 9, 2, 8, device=TRITON_DEVICE)
    rpb = make_rpb(2, 3, device=TRITON_DEVICE)
    grad_out = torch.randn(1, 9, 8, 8, 2, device=TRITON_DEVICE).permute(0, 2, 1, 4, 3)
    out, grads = run("triton", q, k, v, 3, 2, rpb, grad_out)
    ref_out, ref_grads = run("reference", *upcast([q, k, v]), 3, 2, upcast([rpb])[0], grad_out.double())
    for a, b in zip([out, *grads], [ref_out, *ref_grads]):
        assert_rel(a, b, 1e-5)  # fp32, see test_triton_matches_reference


def test_triton_tile_config():
    pytest.importorskip("triton")
    from visionzoo.kernels.neighborhood_attention import triton_kernel as tk
    assert tk.tile_config(56, 32) == (8, 64, 64, 32, 4)  # DiNAT-T stage 1: 8x8 query tiles
    assert tk.tile_config(7, 32)[0] == 8  # dilation 8 on 56: one 8x8 tile holds the 7x7 sub-lattice
    assert tk.tile_config(3, 5) == (4, 64, 64, 16, 4)  # narrow maps: 16x4 tiles; head dims padded to 16
    assert tk.tile_config(100, 128) == (8, 64, 32, 128, 8)
    assert tk.rpb_chunks(1000, 2) == 512 and tk.rpb_chunks(3, 2) == 3


# ---------------------------------------------------------------------------------- (e) GPU-only Triton

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("case", [(2, 56, 56, 2, 32, 7, 1), (2, 56, 56, 2, 32, 7, 8), (1, 29, 31, 3, 24, 5, 3),
                                  (1, 24, 26, 2, 64, 13, 1)])
def test_triton_bf16_gpu(case):
    # bf16 has 8 mantissa bits (2^-9 relative per rounding): outputs, P and dS rounded to bf16 give
    # ~1e-2; 3e-2 leaves margin against the float64 reference on the same bf16 inputs.
    B, H, W, heads, D, kernel_size, dilation = case
    q, k, v = make_qkv(B, H, W, heads, D, torch.bfloat16, device="cuda")
    check_against_reference("triton", q, k, v, kernel_size, dilation, make_rpb(heads, kernel_size, device="cuda"), 3e-2)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_backward_deterministic_gpu(dtype):
    """No atomics: two backward passes give bitwise equal gradients (rpb summed over many chunks)."""
    q, k, v = make_qkv(8, 28, 28, 2, 32, dtype, device="cuda")
    rpb = make_rpb(2, 7, device="cuda")
    grad_out = torch.randn(q.shape, device="cuda", dtype=dtype)
    first = run("triton", q, k, v, 7, 2, rpb, grad_out)[1]
    second = run("triton", q, k, v, 7, 2, rpb, grad_out)[1]
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.gpu
@needs_gpu
def test_torch_path_gpu():
    q, k, v = make_qkv(2, 15, 17, 2, 16, device="cuda")
    # fp32 matmuls on GPU may use TF32 when allowed; with the default (no TF32 for matmul) ~1e-6; 1e-4 covers both.
    check_against_reference("torch", q, k, v, 5, 2, make_rpb(2, 5, device="cuda"), 1e-4)


# ------------------------------------------------------------------------------------- (f) equivalences

def _grid_bias(rpb):
    """(heads, k*k, k*k) window-attention bias equal to NA's rpb on a k x k grid: pair (query slot (qi, qj),
    key slot (ki, kj)) -> rpb[ki - qi + k - 1, kj - qj + k - 1]."""
    k = (rpb.shape[-1] + 1) // 2
    t = torch.arange(k)
    di = (t[None, :] - t[:, None] + k - 1)  # (query slot, key slot)
    return rpb[:, di[:, None, :, None], di[None, :, None, :]].reshape(rpb.shape[0], k * k, k * k)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("kernel_size,dilation", [(3, 3), (5, 2)])
def test_k_times_d_equal_to_map_side_is_grid_attention(backend, kernel_size, dilation):
    # Each sub-lattice is exactly k long, so every query's window is its whole sub-lattice: MaxViT-style grid
    # attention with a k x k grid (tokens d apart), whose bias is the rpb indexed by slot offsets.
    # fp32 vs fp32 computations of the same sums in another order: ~1e-6; 1e-5 as in DESIGN.md.
    side = kernel_size * dilation
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    q, k, v = make_qkv(1, side, side, 2, 8, device=device)
    rpb = make_rpb(2, kernel_size, requires_grad=False, device=device)
    with use_backend(backend):
        out = neighborhood_attention(q, k, v, kernel_size, dilation, rpb)
    with use_backend("torch"):
        grid = window_attention(q, k, v, kernel_size, "grid", _grid_bias(rpb))
    assert_rel(out, grid, 1e-5)


def full_attention(q, k, v, scale):
    qf, kf, vf = (t.flatten(1, 2).transpose(1, 2) for t in (q, k, v))  # (B, heads, HW, D)
    out = (qf @ kf.transpose(-1, -2) * scale).softmax(-1) @ vf
    return out.transpose(1, 2).reshape(q.shape)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_kernel_equal_to_map_side_is_full_attention(backend):
    # k = H = W, d = 1: every window is the whole map. fp32 vs fp32: ~1e-6; 1e-5 as in DESIGN.md.
    q, k, v = make_qkv(2, 7, 7, 2, 8, device=TRITON_DEVICE if backend == "triton" else "cpu")
    with use_backend(backend):
        out = neighborhood_attention(q, k, v, 7)
    assert_rel(out, full_attention(q, k, v, 8 ** -0.5), 1e-5)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_kernel_size_one_returns_v(backend):
    # One key per query (itself): softmax over one score is exactly 1, so out == v whatever the bias.
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    q, k, v = make_qkv(1, 4, 5, 2, 5, device=device)
    with use_backend(backend):
        out = neighborhood_attention(q, k, v, 1, 2, make_rpb(2, 1, device=device))
    assert torch.equal(out, v.detach().contiguous())


# ------------------------------------------------------------------------------------------------ (g) FLOPs

def test_flops_match_flop_counter():
    """The op's FLOPs are those of an einsum formulation doing exactly the useful matmul work."""
    from torch.utils.flop_counter import FlopCounterMode
    from visionzoo.kernels._neighborhood import neighbor_index
    B, H, W, heads, D, kernel_size, dilation = 2, 9, 11, 3, 8, 3, 2
    q, k, v = (torch.randn(B, H, W, heads, D) for _ in range(3))
    idx = neighbor_index(H, W, kernel_size, dilation)  # (HW, k*k)
    with FlopCounterMode(display=False) as counter:
        kn, vn = (t.flatten(1, 2)[:, idx] for t in (k, v))  # (B, HW, k*k, heads, D): gathers, no FLOPs
        s = torch.einsum("bnhd,bnthd->bnht", q.flatten(1, 2), kn)
        torch.einsum("bnht,bnthd->bnhd", s.softmax(-1), vn)
    assert counter.get_total_flops() == neighborhood_attention_flops(q, kernel_size, dilation)
    assert neighborhood_attention_flops((B, H, W, heads, D), kernel_size) == 4 * B * H * W * heads * 9 * D
    # DiNAT-T stage 1 (README roofline): 56x56, 2 heads of 32, k = 7: 39.3 MFLOP per image
    assert neighborhood_attention_flops((1, 56, 56, 2, 32), 7) == 39_337_984


# ---------------------------------------------------------------------------- (h) dispatch and validation

def test_default_backend_on_cpu_is_torch(monkeypatch):
    calls = []
    monkeypatch.setattr(na_module, "neighborhood_attention_torch", lambda *a: calls.append("torch") or a[0])
    monkeypatch.setattr(na_module, "neighborhood_attention_reference", lambda *a: calls.append("reference") or a[0])
    monkeypatch.delenv("VISIONZOO_KERNEL_BACKEND", raising=False)
    q = torch.randn(1, 4, 4, 1, 8)
    neighborhood_attention(q, q, q, 3)
    monkeypatch.setenv("VISIONZOO_KERNEL_BACKEND", "reference")
    neighborhood_attention(q, q, q, 3)
    assert calls == ["torch", "reference"]


def test_forced_triton_refuses_float64():
    pytest.importorskip("triton")
    q = torch.randn(1, 4, 4, 1, 8, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(ValueError, match="does not support.*float64"):
        neighborhood_attention(q, q, q, 3)


@pytest.mark.parametrize("make_args,error,match", [
    (lambda q: (q, q, q, 4), ValueError, "kernel_size must be an odd integer >= 1.*got 4"),
    (lambda q: (q, q, q, 2, 1), ValueError, "kernel_size must be an odd integer >= 1.*got 2"),
    (lambda q: (q, q, q, 3, 0), ValueError, "dilation must be an integer >= 1, got 0"),
    (lambda q: (q, q, q, 3, -2), ValueError, "dilation must be an integer >= 1, got -2"),
    (lambda q: (q, q, q, 3, 3), ValueError,
     r"too small for kernel_size \* dilation = 3 \* 3 = 9: height 8 < 9 .*the smallest holds 2"),
    (lambda q: (q, q, q, 11), ValueError, r"kernel_size \* dilation = 11 \* 1 = 11: height 8 < 11"),
    (lambda q: (q[:, :, :4], q[:, :, :4], q[:, :, :4], 5), ValueError, r"= 5 \* 1 = 5: width 4 < 5"),
    (lambda q: (q[..., 0], q, q, 3), ValueError, r"q must be \(B, H, W, heads, head_dim\), got a 4-D"),
    (lambda q: (q, q[:, :7], q, 3), ValueError, "q, k, v must have the same shape"),
    (lambda q: (q.long(), q.long(), q.long(), 3), TypeError, "must be a floating point tensor, got torch.int64"),
    (lambda q: (q, q.double(), q, 3), ValueError, "q, k, v must share dtype and device"),
    (lambda q: (q, q, q, 3, 1, torch.zeros(2, 5, 5)), ValueError,
     r"rpb must have shape \(heads, 2\*kernel_size-1, 2\*kernel_size-1\) = \(1, 5, 5\), got \(2, 5, 5\)"),
    (lambda q: (q, q, q, 3, 1, torch.zeros(1, 5, 5, dtype=torch.int32)), ValueError, "rpb must be a floating point"),
    (lambda q: (q[:0], q[:0], q[:0], 3), ValueError, "must not be empty"),
])
def test_bad_inputs(make_args, error, match):
    q = torch.randn(2, 8, 9, 1, 4)
    with pytest.raises(error, match=match):
        neighborhood_attention(*make_args(q))
