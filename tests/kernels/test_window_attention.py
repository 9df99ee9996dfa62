"""Window attention: reference, torch path and Triton kernels (interpreter on CPU, GPU when present).

Tolerances are relative to the largest magnitude of the expected tensor (see ``assert_rel``), each
justified where it is used. The Triton tests run under TRITON_INTERPRET=1 (set in conftest.py).
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():  # before anything imports triton_kernel (see conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import given, settings, strategies as st

from .conftest import BACKENDS_HERE, TRITON_DEVICE, needs_gpu, needs_triton, triton_runs_here
from visionzoo.kernels import choose_backend, use_backend, window_attention
from visionzoo.kernels.window_attention.reference import window_attention_reference

wa_module = importlib.import_module("visionzoo.kernels.window_attention")





# ------------------------------------------------------------------------------------------------ helpers

def make_qkv(B, H, W, heads, D, dtype=torch.float32, layout="fused", device="cpu", seed=0):
    """q, k, v of shape (B, H, W, heads, D) that are leaf tensors with non-trivial strides.

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


def make_bias(heads, window, requires_grad=True, device="cpu", dtype=torch.float32, seed=1, strided=False):
    """(heads, N, N); ``strided``: a (N, N, heads) buffer seen through a permute, as a gathered RPB table gives."""
    n = window[0] * window[1]
    g = torch.Generator().manual_seed(seed)
    if strided:
        bias = torch.randn(n, n, heads, generator=g).to(device=device, dtype=dtype).permute(2, 0, 1)
    else:
        bias = torch.randn(heads, n, n, generator=g).to(device=device, dtype=dtype)
    return bias.requires_grad_(requires_grad)


def run(backend, q, k, v, window, partition, bias, grad_out, scale=None):
    """Output and the gradients of every input that requires one (None where it does not)."""
    with use_backend(backend):
        out = window_attention(q, k, v, window, partition, bias, scale)
    inputs = [t for t in (q, k, v, bias) if t is not None and t.requires_grad]
    grads = iter(torch.autograd.grad(out, inputs, grad_out))
    return out, [next(grads) if t is not None and t.requires_grad else None for t in (q, k, v, bias)]


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


def check_against_reference(backend, q, k, v, window, partition, bias, tol, seed=2):
    """Forward and every gradient of ``backend`` against the float64 reference on the same input values."""
    g = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(q.shape, generator=g).to(device=q.device, dtype=q.dtype)
    out, grads = run(backend, q, k, v, window, partition, bias, grad_out)
    assert out.dtype == q.dtype and out.shape == q.shape and out.is_contiguous()
    ref_in = upcast([q, k, v, bias])
    ref_out, ref_grads = run("reference", *ref_in[:3], window, partition, ref_in[3], grad_out.double())
    assert_rel(out, ref_out, tol, "out")
    for name, grad, ref_grad, t in zip(("dq", "dk", "dv", "dbias"), grads, ref_grads, (q, k, v, bias)):
        if t is None or not t.requires_grad:
            assert grad is None
            continue
        assert grad.dtype == t.dtype and grad.shape == t.shape, name
        assert_rel(grad, ref_grad, tol, name)


# --------------------------------------------------- (a) the reference against independent formulations

def loop_window_attention(q, k, v, window, partition, bias, scale):
    """Window attention as the docstring states it, one group at a time from explicit coordinates."""
    B, H, W, heads, D = q.shape
    wh, ww = window
    n_gh, n_gw = -(-H // wh), -(-W // ww)
    out = torch.zeros_like(q)
    for gh in range(n_gh):
        for gw in range(n_gw):
            members = []  # (index inside the window, row, col) of the group's tokens inside the map
            for i in range(wh):
                for j in range(ww):
                    if partition == "block":
                        r, c = gh * wh + i, gw * ww + j
                    else:  # tokens spaced n_gh rows and n_gw columns apart
                        r, c = gh + i * n_gh, gw + j * n_gw
                    if r < H and c < W:
                        members.append((i * ww + j, r, c))
            idx, rows, cols = (torch.tensor(m) for m in zip(*members))
            qs, ks, vs = q[:, rows, cols], k[:, rows, cols], v[:, rows, cols]  # (B, n, heads, D)
            s = torch.einsum("bnhd,bmhd->bhnm", qs, ks) * scale
            if bias is not None:
                s = s + bias[:, idx][:, :, idx]
            out[:, rows, cols] = torch.einsum("bhnm,bmhd->bnhd", s.softmax(-1), vs)
    return out


@pytest.mark.parametrize("partition", ["block", "grid"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("shape,window", [((6, 8), (3, 4)), ((7, 10), (3, 4)), ((2, 3), (4, 5)), ((9, 5), (4, 1))])
def test_reference_matches_loop_formulation(shape, window, partition, with_bias):
    # Both run in float64 and differ only in summation order: 1e-12 catches any indexing error.
    q, k, v = make_qkv(2, *shape, 2, 3, torch.float64, layout="contiguous")
    bias = make_bias(2, window, dtype=torch.float64) if with_bias else None
    expected = loop_window_attention(q, k, v, window, partition, bias, 0.7)
    assert_rel(window_attention_reference(q, k, v, window, partition, bias, 0.7), expected, 1e-12)


@pytest.mark.parametrize("partition", ["block", "grid"])
def test_reference_matches_timm_partition(partition):
    """A third formulation on divisible maps: timm's MaxViT window/grid partition + dense attention."""
    from timm.models.maxxvit import grid_partition, grid_reverse, window_partition, window_reverse
    B, H, W, heads, D, window = 2, 6, 8, 2, 4, (3, 2)
    q, k, v = make_qkv(B, H, W, heads, D, torch.float64, layout="contiguous")
    bias = make_bias(heads, window, dtype=torch.float64)
    part, rev = (window_partition, window_reverse) if partition == "block" else (grid_partition, grid_reverse)
    qw, kw, vw = (part(t.reshape(B, H, W, heads * D), window).reshape(-1, window[0] * window[1], heads, D)
                  .transpose(1, 2) for t in (q, k, v))
    attn = (qw @ kw.transpose(-1, -2) * D ** -0.5 + bias).softmax(-1)
    expected = rev((attn @ vw).transpose(1, 2).reshape(-1, *window, heads * D), window, (H, W))
    # float64 on both sides, only the summation order differs
    assert_rel(window_attention_reference(q, k, v, window, partition, bias, D ** -0.5),
               expected.view(B, H, W, heads, D), 1e-12)


# ----------------------------------------------------------------------------------------- (b) gradcheck

@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("partition", ["block", "grid"])
def test_gradcheck(backend, partition):
    # 3x5 map with a 2x3 window: padded along both axes, so masked keys/dropped queries are exercised.
    q, k, v = make_qkv(1, 3, 5, 2, 3, torch.float64, layout="fused")
    bias = make_bias(2, (2, 3), dtype=torch.float64)

    def f(q, k, v, bias):
        with use_backend(backend):
            return window_attention(q, k, v, (2, 3), partition, bias)

    assert torch.autograd.gradcheck(f, (q, k, v, bias), fast_mode=True)  # the full Jacobian: ~700 calls, 15 s


# ------------------------------------------------------------------- (c) torch path vs reference, random

@settings(deadline=None, max_examples=200)  # ~3 s on 2 idle cores
@given(
    B=st.integers(1, 3), H=st.integers(1, 20), W=st.integers(1, 20),
    wh=st.integers(1, 8), ww=st.integers(1, 8), heads=st.integers(1, 3), D=st.integers(1, 40),
    partition=st.sampled_from(["block", "grid"]), with_bias=st.booleans(),
    layout=st.sampled_from(["fused", "permuted", "contiguous"]), dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2 ** 16),
)
def test_torch_path_matches_reference(B, H, W, wh, ww, heads, D, partition, with_bias, layout, dtype, seed):
    # float64: the two paths differ only in summation order (1e-10). float32: fp32 rounding of sums of
    # at most 64 products of O(1) values and of softmax: ~1e-6 relative, 2e-5 leaves margin but still
    # fails on any wrong index or mask (those give O(1) errors).
    q, k, v = make_qkv(B, H, W, heads, D, dtype, layout=layout, seed=seed)
    bias = make_bias(heads, (wh, ww), dtype=dtype, seed=seed + 1) if with_bias else None
    check_against_reference("torch", q, k, v, (wh, ww), partition, bias,
                            1e-10 if dtype == torch.float64 else 2e-5, seed=seed + 2)


# ------------------------------------------------------------ (d) Triton (interpreter on CPU) vs reference

TRITON_CASES = [
    # id: (B, H, W, heads, D, window, partition, bias: None | "grad" | "strided" (with grad) | "const", layout)
    pytest.param((1, 9, 11, 2, 5, (4, 3), "block", "grad", "fused"), id="9x11-w4x3-block-d5-bias"),
    pytest.param((1, 9, 11, 2, 5, (4, 3), "grid", "strided", "fused"), id="9x11-w4x3-grid-d5-stridedbias"),
    pytest.param((2, 8, 8, 1, 24, (4, 4), "grid", None, "fused"), id="8x8-w4x4-grid-d24-nobias"),
    pytest.param((1, 7, 6, 2, 24, (3, 4), "block", "const", "permuted"), id="7x6-w3x4-block-d24-constbias-perm"),
    pytest.param((1, 12, 12, 1, 16, (12, 12), "block", "grad", "fused"), id="12x12-w12x12-multitile"),
    pytest.param((1, 5, 3, 1, 5, (7, 7), "grid", "grad", "fused"), id="map-smaller-than-window"),
]


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matches_reference(case, dtype):
    # fp32: fp32 dots (input_precision="ieee") and fp32 accumulation over <= 144 terms: errors ~1e-6
    # relative; 1e-5 as in DESIGN.md. fp16: inputs are identical on both sides (the float64 reference runs
    # on the fp16 values), so the error is the kernel's own: fp16 outputs (2^-11 relative) and P / dS
    # rounded to fp16 before their dots give ~1e-3; 1e-2 leaves margin, and layout bugs give O(1).
    B, H, W, heads, D, window, partition, bias_kind, layout = case
    q, k, v = make_qkv(B, H, W, heads, D, dtype, layout=layout, device=TRITON_DEVICE)
    bias = None if bias_kind is None else make_bias(heads, window, bias_kind != "const", device=TRITON_DEVICE,
                                                    strided=bias_kind == "strided")
    check_against_reference("triton", q, k, v, window, partition, bias, 1e-5 if dtype == torch.float32 else 1e-2)


@needs_triton
@pytest.mark.parametrize("partition", ["block", "grid"])
def test_triton_small_tiles_and_chunked_dbias(monkeypatch, partition):
    """Several query/key tiles per window (16-token tiles, N = 35) and several windows per dbias chunk."""
    from visionzoo.kernels.window_attention import triton_kernel
    monkeypatch.setattr(triton_kernel, "tile_sizes", lambda n, d: (16, 16, 16, 4))
    monkeypatch.setattr(triton_kernel, "DBIAS_TARGET_PROGRAMS", 2)  # one chunk per head: all 2x2 windows
    assert triton_kernel.dbias_chunks(4, 2, 35) == 1
    q, k, v = make_qkv(1, 9, 13, 2, 8, layout="fused", device=TRITON_DEVICE)
    bias = make_bias(2, (5, 7), device=TRITON_DEVICE)
    check_against_reference("triton", q, k, v, (5, 7), partition, bias, 1e-5)  # fp32, see above


@needs_triton
def test_triton_strided_grad_output():
    """dO with arbitrary strides (autograd may pass any layout) is read through its strides."""
    q, k, v = make_qkv(1, 5, 6, 2, 8, device=TRITON_DEVICE)
    bias = make_bias(2, (2, 3), device=TRITON_DEVICE)
    grad_out = torch.randn(1, 6, 5, 8, 2, device=TRITON_DEVICE).permute(0, 2, 1, 4, 3)
    out, grads = run("triton", q, k, v, (2, 3), "block", bias, grad_out)
    ref_out, ref_grads = run("reference", *upcast([q, k, v]), (2, 3), "block", upcast([bias])[0], grad_out.double())
    for a, b in zip([out, *grads], [ref_out, *ref_grads]):
        assert_rel(a, b, 1e-5)  # fp32, see test_triton_matches_reference


def test_dbias_chunks_bounds_memory():
    pytest.importorskip("triton")
    from visionzoo.kernels.window_attention import triton_kernel as tk
    # MaxViT-T stage 1 at batch 256: 16384 windows, 2 heads, N = 49: 512 chunks (1024 programs), 9.8 MB.
    assert tk.dbias_chunks(16384, 2, 49) == 512
    # A large window with many heads is capped by the memory bound, never below one chunk.
    chunks = tk.dbias_chunks(10 ** 6, 8, 256)
    assert chunks * 8 * 256 * 256 * 4 <= tk.DBIAS_PARTIAL_MAX_BYTES and chunks >= 1
    assert tk.dbias_chunks(3, 1, 1024) == 3  # never more chunks than windows
    assert tk.dbias_chunks(1, 64, 4096) == 1  # one chunk even when a single partial exceeds the bound


# ---------------------------------------------------------------------------------- (e) GPU-only Triton

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("partition", ["block", "grid"])
@pytest.mark.parametrize("case", [(2, 14, 14, 2, 32, (7, 7)), (1, 9, 11, 3, 24, (4, 3)), (1, 24, 24, 1, 48, (12, 12))])
def test_triton_bf16_gpu(case, partition):
    # bf16 has 8 mantissa bits (2^-9 relative per rounding): outputs, P and dS rounded to bf16 give
    # ~1e-2; 3e-2 leaves margin against the float64 reference on the same bf16 inputs.
    B, H, W, heads, D, window = case
    q, k, v = make_qkv(B, H, W, heads, D, torch.bfloat16, device="cuda")
    check_against_reference("triton", q, k, v, window, partition, make_bias(heads, window, device="cuda"), 3e-2)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_backward_deterministic_gpu(dtype):
    """No atomics: two backward passes give bitwise equal gradients (dbias summed over many chunks)."""
    q, k, v = make_qkv(8, 28, 28, 2, 32, dtype, device="cuda")
    bias = make_bias(2, (7, 7), device="cuda")
    grad_out = torch.randn(q.shape, device="cuda", dtype=dtype)
    first = run("triton", q, k, v, (7, 7), "grid", bias, grad_out)[1]
    second = run("triton", q, k, v, (7, 7), "grid", bias, grad_out)[1]
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.gpu
@needs_gpu
def test_torch_path_sdpa_gpu():
    """On CUDA the torch path runs SDPA with a per-group mask; same semantics as the reference."""
    q, k, v = make_qkv(2, 9, 11, 2, 16, device="cuda")
    bias = make_bias(2, (4, 3), device="cuda")
    # fp32 SDPA may use TF32-free math or mem-efficient kernels: ~1e-6; 1e-4 tolerates either.
    check_against_reference("torch", q, k, v, (4, 3), "grid", bias, 1e-4)


# ------------------------------------------------------------------------------------- (f) equivalences



def full_attention(q, k, v, scale):
    qf, kf, vf = (t.flatten(1, 2).transpose(1, 2) for t in (q, k, v))  # (B, heads, HW, D)
    out = (qf @ kf.transpose(-1, -2) * scale).softmax(-1) @ vf
    return out.transpose(1, 2).reshape(q.shape)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("partition", ["block", "grid"])
def test_one_window_is_full_attention(backend, partition):
    # A window (block) or a grid (one token per group stride) the size of the map holds every token.
    # fp32 vs an fp32 torch computation of the same sums: ~1e-6; 1e-5 as in DESIGN.md.
    q, k, v = make_qkv(2, 5, 7, 2, 8, device=TRITON_DEVICE if backend == "triton" else "cpu")
    with use_backend(backend):
        out = window_attention(q, k, v, (5, 7), partition)
    assert_rel(out, full_attention(q, k, v, 8 ** -0.5), 1e-5)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("partition", ["block", "grid"])
def test_window_of_one_token_returns_v(backend, partition):
    # Each group holds a single token: softmax over one key is exactly 1, so out == v (bias irrelevant).
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    q, k, v = make_qkv(1, 3, 4, 2, 5, device=device)
    with use_backend(backend):
        out = window_attention(q, k, v, 1, partition, make_bias(2, (1, 1), device=device))
    assert torch.equal(out, v.detach().contiguous())


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_grid_is_block_on_transposed_map(backend):
    """On divisible maps, grid attention = block attention after swapping the (group, index) factors.

    Row ``g + n * i`` (grid, n groups) becomes row ``g * wh + i`` (block): the permutation below."""
    B, heads, D, window = 1, 2, 8, (2, 3)
    H, W = 3 * window[0], 2 * window[1]  # 3 x 2 groups
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    q, k, v = make_qkv(B, H, W, heads, D, device=device)
    bias = make_bias(heads, window, device=device)

    def to_block(x):  # (B, wh, nGh, ww, nGw, ...) -> (B, nGh, wh, nGw, ww, ...)
        return x.reshape(B, window[0], H // window[0], window[1], W // window[1], heads, D) \
            .permute(0, 2, 1, 4, 3, 5, 6).reshape(B, H, W, heads, D)

    def from_block(x):
        return x.reshape(B, H // window[0], window[0], W // window[1], window[1], heads, D) \
            .permute(0, 2, 1, 4, 3, 5, 6).reshape(B, H, W, heads, D)

    with use_backend(backend):
        grid = window_attention(q, k, v, window, "grid", bias)
        block = from_block(window_attention(to_block(q), to_block(k), to_block(v), window, "block", bias))
    assert_rel(grid, block, 1e-6)  # the same sums in the same order up to fp32 scheduling: ~1e-7


# ---------------------------------------------------------------------------- (g) dispatch and validation

@pytest.fixture
def spies(monkeypatch):
    """Replace the three implementations with recorders; returns the list of backends called."""
    calls = []
    for name, attr in (("reference", "window_attention_reference"), ("torch", "window_attention_torch")):
        monkeypatch.setattr(wa_module, attr, lambda *a, _n=name: calls.append(_n) or a[0])
    if triton_runs_here():
        from visionzoo.kernels.window_attention import triton_kernel
        monkeypatch.setattr(triton_kernel, "window_attention_triton", lambda *a: calls.append("triton") or a[0])
    monkeypatch.delenv("VISIONZOO_KERNEL_BACKEND", raising=False)
    return calls


def _call():
    q = torch.randn(1, 4, 4, 1, 8)
    return window_attention(q, q, q, 2)


def test_default_backend_on_cpu_is_torch(spies):
    _call()
    assert spies == ["torch"]


@pytest.mark.parametrize("name", ["reference", "torch"] + (["triton"] if triton_runs_here() else []))
def test_env_var_selects_backend(spies, monkeypatch, name):
    monkeypatch.setenv("VISIONZOO_KERNEL_BACKEND", name)
    _call()
    assert spies == [name]


def test_use_backend_overrides_env_and_restores(spies, monkeypatch):
    monkeypatch.setenv("VISIONZOO_KERNEL_BACKEND", "torch")
    with use_backend("reference"):
        _call()
        with use_backend(None):  # None: back to the automatic choice (here: the env var)
            _call()
    _call()
    assert spies == ["reference", "torch", "torch"]


def test_invalid_backend_names(monkeypatch):
    with pytest.raises(ValueError, match="choose one of triton, torch, reference"):
        with use_backend("cuda"):
            pass
    monkeypatch.setenv("VISIONZOO_KERNEL_BACKEND", "fast")
    with pytest.raises(ValueError, match=r"VISIONZOO_KERNEL_BACKEND='fast'.*choose one of triton, torch, reference"):
        _call()


def test_forced_triton_refuses_float64():
    pytest.importorskip("triton")
    q = torch.randn(1, 4, 4, 1, 8, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(ValueError, match="does not support.*float64"):
        window_attention(q, q, q, 2)


def test_forced_triton_on_cpu_without_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 4, 4, 1, 8)
    with use_backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        window_attention(q, q, q, 2)


def test_forced_triton_with_interpreter_set_too_late(monkeypatch):
    pytest.importorskip("triton")
    backend = importlib.import_module("visionzoo.kernels._backend")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(backend, "triton_interpreter_active", lambda: False)
    q = torch.randn(1, 4, 4, 1, 8)
    with use_backend("triton"), pytest.raises(RuntimeError, match="set after triton had been imported"):
        window_attention(q, q, q, 2)


def test_choose_backend_reports_unsupported_reason():
    q = torch.randn(1, 2, 2, 1, 4)
    # On CPU without a forced backend the torch path runs whatever Triton supports.
    assert choose_backend("op", q, triton_supported="dtype torch.float64") == "torch"


@pytest.mark.parametrize("make_args,error,match", [
    (lambda q: (q[..., 0], q, q, 2, "block", None), ValueError, r"q must be \(B, H, W, heads, head_dim\), got a 4-D"),
    (lambda q: (q, q[:, :3], q, 2, "block", None), ValueError, "q, k, v must have the same shape"),
    (lambda q: (q.to(torch.int64), q.to(torch.int64), q.to(torch.int64), 2, "block", None), TypeError,
     "must be a floating point tensor, got torch.int64"),
    (lambda q: (q, q.double(), q, 2, "block", None), ValueError, "q, k, v must share dtype and device"),
    (lambda q: (q, q, q, 2, "block", torch.zeros(2, 4, 4)), ValueError,
     r"bias must have shape \(heads, wh\*ww, wh\*ww\) = \(1, 4, 4\), got \(2, 4, 4\)"),
    (lambda q: (q, q, q, 2, "block", torch.zeros(1, 4, 4, dtype=torch.int32)), ValueError,
     "bias must be a floating point tensor"),
    (lambda q: (q, q, q, 2, "shifted", None), ValueError, r"partition must be one of \('block', 'grid'\), got 'shifted'"),
    (lambda q: (q, q, q, 0, "block", None), ValueError, "window must be a positive int or a pair of positive ints, got 0"),
    (lambda q: (q, q, q, (2, 2, 2), "block", None), ValueError, r"window must be .*got \(2, 2, 2\)"),
    (lambda q: (q, q, q, (2, -1), "block", None), ValueError, r"window must be .*got \(2, -1\)"),
    (lambda q: (q, q, q, 2.0, "block", None), ValueError, "window must be .*got 2.0"),
    (lambda q: (q, q, q, (True, 2), "block", None), ValueError, r"window must be .*got \(True, 2\)"),
    (lambda q: (q[:0], q[:0], q[:0], 2, "block", None), ValueError, "must not be empty"),
])
def test_bad_inputs(make_args, error, match):
    q = torch.randn(2, 4, 4, 1, 8)
    with pytest.raises(error, match=match):
        window_attention(*make_args(q))


@pytest.mark.parametrize("size, window", [((14, 14), (7, 7)), ((9, 11), (4, 3))])
def test_flops_formula_counts_the_torch_path(size, window, monkeypatch):
    """The formula equals what torch's FLOP counter sees in the torch path (its matmuls over padded windows; the
    unmasked-SDPA route, which the counter does not see into, switched off)."""
    from torch.utils.flop_counter import FlopCounterMode

    from visionzoo.kernels import window_attention_flops
    from visionzoo.kernels.window_attention import torch_path
    monkeypatch.setattr(torch_path, "UNMASKED_SDPA", False)

    q, k, v = make_qkv(2, *size, 3, 8)
    with torch.no_grad(), use_backend("torch"), FlopCounterMode(display=False) as counter:
        window_attention(q, k, v, window, "grid")
    assert counter.get_total_flops() == window_attention_flops(q.shape, window)


# ------------------------------------------------------------------ (h) large windows: the SDPA route

@pytest.fixture
def sdpa_route_calls(monkeypatch):
    """Records each call of the torch path's large-window SDPA route (still running it)."""
    from visionzoo.kernels.window_attention import torch_path
    calls = []
    real = torch_path.large_window_sdpa
    monkeypatch.setattr(torch_path, "large_window_sdpa", lambda *a: calls.append(a[0].shape) or real(*a))
    return calls


@pytest.mark.parametrize("partition", ["block", "grid"])
@pytest.mark.parametrize("bias_kind", [None, "grad", "const"])
@pytest.mark.parametrize("shape,window", [((7, 10), (3, 4)), ((6, 8), (3, 4))])
def test_large_window_route_matches_reference(monkeypatch, sdpa_route_calls, shape, window, partition, bias_kind):
    """The SDPA route (threshold lowered so small windows take it) on padded and unpadded maps, with no bias, a
    constant bias and a learnable one: each of its mask layouts. float64: only the summation order differs."""
    from visionzoo.kernels.window_attention import torch_path
    monkeypatch.setattr(torch_path, "LARGE_WINDOW_TOKENS", 4)
    q, k, v = make_qkv(2, *shape, 2, 5, torch.float64, layout="fused")
    bias = None if bias_kind is None else make_bias(2, window, bias_kind == "grad", dtype=torch.float64)
    check_against_reference("torch", q, k, v, window, partition, bias, 1e-10)
    assert len(sdpa_route_calls) == 1


@pytest.mark.parametrize("partition", ["block", "grid"])
def test_unmasked_windows_take_sdpa(sdpa_route_calls, partition):
    """Whole windows with no bias have no mask: the CPU torch path runs SDPA (faster there, and it saves no (N, N)
    probabilities for backward) and matches the reference, forward and gradients; a padded map keeps the explicit
    masked product."""
    q, k, v = make_qkv(2, 6, 8, 2, 5, torch.float64, layout="fused")
    check_against_reference("torch", q, k, v, (3, 4), partition, None, 1e-10)
    assert len(sdpa_route_calls) == 1
    q, k, v = make_qkv(2, 7, 8, 2, 5, torch.float64, layout="fused")
    check_against_reference("torch", q, k, v, (3, 4), partition, None, 1e-10)
    assert len(sdpa_route_calls) == 1


def test_large_window_threshold(sdpa_route_calls):
    """Windows of at most LARGE_WINDOW_TOKENS = 256 tokens keep the explicit path; larger ones take SDPA."""
    from visionzoo.kernels.window_attention import torch_path
    assert torch_path.LARGE_WINDOW_TOKENS == 256
    q = torch.randn(1, 16, 17, 1, 4)
    window_attention(q, q, q, (16, 16))
    assert sdpa_route_calls == []
    window_attention(q, q, q, (16, 17))
    assert len(sdpa_route_calls) == 1


class _LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest tensor (elements) that any aten op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("partition", ["block", "grid"])
def test_full_map_window_never_materialises_scores(partition):
    """A window the size of a 20 x 24 map (480 tokens: full attention, as RAVLT's softmax stages use it): the
    CPU torch path matches the reference and creates nothing of the scores' size, forward or backward."""
    B, H, W, heads, D = 1, 20, 24, 2, 8
    q, k, v = make_qkv(B, H, W, heads, D, layout="fused")
    with _LargestTensor() as mode, use_backend("torch"):
        out = window_attention(q, k, v, (H, W), partition)
        out.backward(torch.ones_like(out))
    assert mode.largest < heads * (H * W) ** 2 // 8  # the scores would be heads * N^2; q, k, v are 3*heads*N*D
    # fp32 flash attention vs the float64 reference on the same values: ~1e-6; 1e-5 as in DESIGN.md
    check_against_reference("torch", *(t.detach().requires_grad_() for t in (q, k, v)), (H, W), partition, None, 1e-5)
