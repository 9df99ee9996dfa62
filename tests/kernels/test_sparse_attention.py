"""Sparse attention (Sparsifiner): reference, torch path and Triton kernels.

Tolerances are relative to the largest magnitude of the expected tensor (see ``assert_rel``), each justified
where it is used. The Triton tests run under TRITON_INTERPRET=1 (set in conftest.py) when no GPU is present.
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():  # before anything imports triton_kernel (see conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch.utils.flop_counter import FlopCounterMode

from .conftest import BACKENDS_HERE, TRITON_DEVICE, needs_gpu, needs_triton
from visionzoo.kernels import sparse_attention, sparse_attention_flops, use_backend, window_attention
from visionzoo.kernels.sparse_attention.reference import sparse_attention_reference

sa_module = importlib.import_module("visionzoo.kernels.sparse_attention")
torch_path = importlib.import_module("visionzoo.kernels.sparse_attention.torch_path")





# ------------------------------------------------------------------------------------------------ helpers

def make_qkv(B, N, heads, dqk, dv, dtype=torch.float32, layout="fused", device="cpu", seed=0):
    """Leaf q, k (B, N, heads, dqk) and v (B, N, heads, dv) with non-trivial strides.

    ``fused``: views of one (B, N, heads*(2*dqk + dv)) projection output, [q | k | v] along channels, each
    heads x dim (a DeiT qkv Linear when dqk == dv). ``heads_first``: transposed views of (B, heads, N, D)
    tensors. ``contiguous``: plain tensors.
    """
    g = torch.Generator().manual_seed(seed)
    if layout == "fused":
        qkv = torch.randn(B, N, heads * (2 * dqk + dv), generator=g).to(device=device, dtype=dtype)
        q, k, v = qkv.split([heads * dqk, heads * dqk, heads * dv], dim=-1)
        q, k, v = q.unflatten(-1, (heads, dqk)), k.unflatten(-1, (heads, dqk)), v.unflatten(-1, (heads, dv))
    elif layout == "heads_first":
        q, k, v = (torch.randn(B, heads, N, d, generator=g).to(device=device, dtype=dtype).transpose(1, 2)
                   for d in (dqk, dqk, dv))
    else:
        q, k, v = (torch.randn(B, N, heads, d, generator=g).to(device=device, dtype=dtype) for d in (dqk, dqk, dv))
    return [t.requires_grad_() for t in (q, k, v)]


def topk_index(B, heads, N, K, dense=0, seed=1, device="cpu", dtype=torch.int64):
    """Distinct key ids per row, as the connectivity predictor's top-k gives them: (B, heads, N - dense, K)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, heads, N - dense, N, generator=g).topk(K, dim=-1).indices.to(device=device, dtype=dtype)


def run(backend, q, k, v, index, grad_out, **kwargs):
    """Output and the gradients of q, k, v."""
    with use_backend(backend):
        out = sparse_attention(q, k, v, index, **kwargs)
    return out, list(torch.autograd.grad(out, (q, k, v), grad_out))


def upcast(tensors, dtype=torch.float64):
    return [t.detach().to(dtype).requires_grad_(t.requires_grad) for t in tensors]


def assert_rel(actual, expected, tol, what=""):
    """max |actual - expected| <= tol * max(1, max |expected|), computed in float64."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual - expected).abs().max().item()
    bound = tol * max(1.0, expected.abs().max().item())
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"


def check_against_reference(backend, q, k, v, index, tol, seed=2, **kwargs):
    """Forward and every gradient of ``backend`` against the float64 reference, on the same inputs."""
    g = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(v.shape, generator=g).to(device=q.device, dtype=q.dtype)
    out, grads = run(backend, q, k, v, index, grad_out, **kwargs)
    assert out.dtype == q.dtype and out.shape == v.shape and out.is_contiguous()
    ref_out, ref_grads = run("reference", *upcast([q, k, v]), index, grad_out.double(), **kwargs)
    assert_rel(out, ref_out, tol, "out")
    for name, grad, ref_grad, t in zip(("dq", "dk", "dv"), grads, ref_grads, (q, k, v)):
        assert grad.dtype == t.dtype and grad.shape == t.shape, name
        assert_rel(grad, ref_grad, tol, name)


# ------------------------------------------------ (a) the reference against independent formulations

def loop_sparse_attention(q, k, v, index, scale, dense):
    """The definition, query by query: softmax over the explicit list of keys (each entry one term)."""
    B, N, heads, _ = q.shape
    out = torch.zeros(*q.shape[:3], v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for h in range(heads):
            for i in range(N):
                keys = list(range(N)) if i < dense else index[b, h, i - dense].tolist()
                s = torch.stack([q[b, i, h] @ k[b, j, h] for j in keys]) * scale
                out[b, i, h] = sum(p * v[b, j, h] for p, j in zip(s.softmax(0), keys))
    return out


def official_style_attention(q, k, v, index):
    """Sparsifiner's attention core as the anchors describe it (backbones-B.md section 3): a binary mask from the
    top-k indices of the patch queries, an all-ones cls row prepended, the full N x N scores with head_dim ** -0.5,
    masked_fill(-inf), softmax, nan_to_num, times v. q, k, v: (B, heads, N, D); returns (B, N, heads * D)."""
    B, heads, N, D = q.shape
    mask = torch.zeros(B, heads, N - 1, N, dtype=q.dtype).scatter_(-1, index, 1.0)
    mask = torch.cat([torch.ones(B, heads, 1, N, dtype=q.dtype), mask], dim=2)
    attn = (q @ k.transpose(-2, -1)) * D ** -0.5
    attn = attn.masked_fill(~mask.bool(), float("-inf")).softmax(dim=-1)
    attn = torch.nan_to_num(attn)
    return (attn @ v).transpose(1, 2).reshape(B, N, heads * D)


@pytest.mark.parametrize("dense", [0, 1, 3])
def test_reference_matches_loop_formulation(dense):
    q, k, v = make_qkv(2, 7, 2, 3, 4, torch.float64, layout="contiguous")
    index = topk_index(2, 2, 7, 3, dense)
    # float64 on both sides, only the summation order differs: 1e-12 catches any indexing error.
    expected = loop_sparse_attention(q, k, v, index, 0.7, dense)
    assert_rel(sparse_attention_reference(q, k, v, index, 0.7, dense), expected, 1e-12)


def test_reference_duplicates_count_per_occurrence():
    """A key listed twice in a row is two terms of that row's softmax (see the package docstring)."""
    q, k, v = make_qkv(1, 5, 1, 4, 4, torch.float64, layout="contiguous")
    index = torch.tensor([[[[0, 0, 3], [1, 2, 2], [4, 4, 4], [0, 1, 2], [3, 3, 0]]]])
    assert_rel(sparse_attention_reference(q, k, v, index, 0.5, 0), loop_sparse_attention(q, k, v, index, 0.5, 0),
               1e-12)  # float64


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_official_formulation(backend):
    """DeiT-style fused qkv, default scale, dense cls row: the official masked dense attention, and its gradients."""
    B, N, heads, D = 2, 11, 3, 8
    qkv = torch.randn(B, N, 3 * heads * D, dtype=torch.float64, requires_grad=True)
    index = topk_index(B, heads, N, 3, dense=1)
    q, k, v = qkv.view(B, N, 3, heads, D).unbind(2)  # the layout the op takes, for free
    with use_backend(backend):
        out = sparse_attention(q, k, v, index, dense_queries=1).reshape(B, N, heads * D)
    qh, kh, vh = qkv.view(B, N, 3, heads, D).permute(2, 0, 3, 1, 4)  # the official (B, heads, N, D) views
    expected = official_style_attention(qh, kh, vh, index)
    assert_rel(out, expected, 1e-12)  # float64, summation order only
    grad_out = torch.randn(out.shape, dtype=torch.float64)
    assert_rel(torch.autograd.grad(out, qkv, grad_out)[0], torch.autograd.grad(expected, qkv, grad_out)[0], 1e-12)


# ----------------------------------------------------------------------------------------- (b) gradcheck

@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_gradcheck(backend, dense=1):
    # 5 tokens, 2 heads, a dense first row and K = 2 for the others (with a repeated key in one row); tiny, as
    # gradcheck evaluates the op twice per input element.
    q, k, v = make_qkv(1, 5, 2, 2, 3, torch.float64, layout="fused")
    index = topk_index(1, 2, 5, 2, dense)
    index[0, 1, 0] = torch.tensor([4, 4])

    def f(q, k, v):
        with use_backend(backend):
            return sparse_attention(q, k, v, index, dense_queries=dense)

    assert torch.autograd.gradcheck(f, (q, k, v))


# ------------------------------------------------------------------- (c) torch path vs reference, random

@settings(deadline=None, max_examples=40)
@given(
    B=st.integers(1, 2), N=st.integers(1, 24), heads=st.integers(1, 3), dqk=st.integers(1, 9), dv=st.integers(1, 9),
    k_frac=st.floats(0.0, 1.0), dense_frac=st.floats(0.0, 1.0), duplicates=st.booleans(),
    layout=st.sampled_from(["fused", "heads_first", "contiguous"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    index_dtype=st.sampled_from([torch.int64, torch.int32, torch.int16]),
    chunk_bytes=st.sampled_from([1, 4096, 2 ** 25]),
    seed=st.integers(0, 2 ** 16),
)
def test_torch_path_matches_reference(B, N, heads, dqk, dv, k_frac, dense_frac, duplicates, layout, dtype, index_dtype,
                                      chunk_bytes, seed):
    # float64: the two paths differ only in summation order (1e-10). float32: fp32 rounding of sums over at most
    # a few dozen O(1) products and of softmax: ~1e-6 relative; 2e-5 leaves margin but any wrong index gives O(1)
    # errors. chunk_bytes 1 forces one query (one (image, head) of dense rows) per chunk.
    K = 1 + round(k_frac * (N - 1))
    dense = round(dense_frac * dense_frac * N)  # mostly few dense rows, sometimes all
    q, k, v = make_qkv(B, N, heads, dqk, dv, dtype, layout=layout, seed=seed)
    if duplicates:  # random ids, repeats allowed
        g = torch.Generator().manual_seed(seed)
        index = torch.randint(0, N, (B, heads, N - dense, K), generator=g).to(index_dtype)
    else:
        index = topk_index(B, heads, N, K, dense, seed=seed, dtype=index_dtype)
    if seed % 2:  # a non-contiguous index, e.g. a slice of a larger one
        index = torch.cat([index, index], dim=-1)[..., ::2]
    old = torch_path.CHUNK_BYTES
    torch_path.CHUNK_BYTES = chunk_bytes
    try:
        check_against_reference("torch", q, k, v, index, 1e-10 if dtype == torch.float64 else 2e-5, seed=seed + 1,
                                dense_queries=dense)
    finally:
        torch_path.CHUNK_BYTES = old


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_path_half_precision(dtype):
    # The torch path computes in fp32 from the rounded inputs: only the stored output and gradients are rounded,
    # 2^-11 (fp16) and 2^-8 (bf16) relative; 1e-2 and 2e-2 leave margin.
    q, k, v = make_qkv(2, 11, 2, 8, 8, dtype)
    check_against_reference("torch", q, k, v, topk_index(2, 2, 11, 4, 1), 1e-2 if dtype == torch.float16 else 2e-2,
                            dense_queries=1)



def test_torch_path_under_cpu_autocast():
    """Inside a CPU bf16 autocast region (an AMP training step) the op still computes in fp32: autocast would push
    its sparse CSR matmuls to bf16, which torch does not implement on CPU. fp32 inputs give fp32 results equal to
    the same call outside autocast."""
    q, k, v = make_qkv(2, 11, 2, 8, 8)
    index = topk_index(2, 2, 11, 4, 1)
    grad_out = torch.randn(2, 11, 2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = run("torch", q, k, v, index, grad_out, dense_queries=1)
    expected, expected_grads = run("torch", q, k, v, index, grad_out, dense_queries=1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=0, atol=0)

def test_chunk_sizes_bound_memory():
    # Sparsifiner DeiT-S at 384, batch 64: 64 * 6 (image, head) pairs of 576 sparse queries x 145 keys + the cls row.
    step = torch_path.group_chunk(64 * 6, 576, 145, 1, 577)
    per_group = 576 * 145 * torch_path.BYTES_PER_ENTRY + 12 * 577
    assert step * per_group <= torch_path.CHUNK_BYTES < (step + 1) * per_group
    assert torch_path.group_chunk(3, 1, 1, 0, 1) == 3  # never more than the pairs
    assert torch_path.group_chunk(10, 10 ** 5, 10 ** 4, 1, 10 ** 5) == 1  # at least one


# ------------------------------------------------------------ (d) Triton (interpreter on CPU) vs reference

TRITON_CASES = [
    # id: (B, N, heads, dqk, dv, K, dense, layout, index dtype)
    pytest.param((1, 21, 2, 5, 7, 6, 1, "fused", torch.int64), id="N21-K6-cls-d5/7-fused-int64"),
    pytest.param((2, 9, 1, 24, 16, 9, 0, "heads_first", torch.int32), id="N9-K=N-d24/16-heads_first-int32"),
]


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_matches_reference(case, dtype):
    # fp32: fp32 products and sums over <= 21 terms: ~1e-6 relative; 1e-5 as in DESIGN.md. fp16/bf16: the
    # float64 reference runs on the same rounded inputs and the kernels compute in fp32, so the error is the
    # rounding of the stored output and gradients: 2^-11 (fp16) and 2^-8 (bf16) relative; 1e-2 and 2e-2 leave
    # margin, while index or layout bugs give O(1) errors. bf16 runs in the interpreter here: no tl.dot, only
    # bf16 loads converted to fp32.
    B, N, heads, dqk, dv, K, dense, layout, index_dtype = case
    q, k, v = make_qkv(B, N, heads, dqk, dv, dtype, layout=layout, device=TRITON_DEVICE)
    index = topk_index(B, heads, N, K, dense, device=TRITON_DEVICE, dtype=index_dtype)
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}[dtype]
    check_against_reference("triton", q, k, v, index, tol, dense_queries=dense)


@needs_triton
def test_triton_several_tiles_and_duplicates(monkeypatch):
    """16-entry tiles: 20-key lists span two tiles, the 2 dense rows loop over 40 keys (three tiles), key 0 is
    listed by every query (a 40-entry transposed list), and some rows repeat keys."""
    from visionzoo.kernels.sparse_attention import triton_kernel
    monkeypatch.setattr(triton_kernel, "tile_sizes", lambda kk, dq, dv: (16, 8, 8, 4))
    q, k, v = make_qkv(1, 40, 1, 8, 8, device=TRITON_DEVICE)
    index = topk_index(1, 1, 40, 20, dense=2, device=TRITON_DEVICE)
    index[..., 0] = 0
    index[0, 0, :5, 1] = 0  # key 0 twice in five rows
    check_against_reference("triton", q, k, v, index, 1e-5, dense_queries=2)  # fp32, see above


@needs_triton
def test_triton_strided_grad_output():
    """dO with arbitrary strides (autograd may pass any layout) is read through its strides."""
    q, k, v = make_qkv(1, 10, 2, 8, 8, device=TRITON_DEVICE)
    index = topk_index(1, 2, 10, 4, 1, device=TRITON_DEVICE)
    grad_out = torch.randn(1, 10, 8, 2, device=TRITON_DEVICE).transpose(-1, -2)
    out, grads = run("triton", q, k, v, index, grad_out, dense_queries=1)
    ref_out, ref_grads = run("reference", *upcast([q, k, v]), index, grad_out.double(), dense_queries=1)
    for a, b in zip([out, *grads], [ref_out, *ref_grads]):
        assert_rel(a, b, 1e-5)  # fp32, see test_triton_matches_reference


@needs_triton
def test_triton_ignores_out_of_range_entries_without_reading_them():
    """With the op's value check bypassed (as under torch.compile), entries outside [0, N) are masked, never
    loaded: they get no weight, and a row with no valid entry gives 0 and no gradient."""
    from visionzoo.kernels.sparse_attention.triton_kernel import sparse_attention_triton
    q, k, v = make_qkv(1, 6, 1, 4, 4, device=TRITON_DEVICE)
    index = torch.tensor([[[[0, 1, -1], [2, 10 ** 9, 3], [-5, -1, 6], [5, 4, 3], [1, 1, 6], [6, 6, 6]]]])
    grad_out = torch.randn(1, 6, 1, 4)
    out = sparse_attention_triton(q, k, v, index.to(TRITON_DEVICE), 0.5, 0)
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(TRITON_DEVICE))

    # Expected: attention over the valid entries only (counts), rows 2 and 5 (no valid entry) zero.
    qd, kd, vd = upcast([q, k, v])
    counts = torch.zeros(6, 6, dtype=torch.float64)
    for i, row in enumerate(index[0, 0].tolist()):
        for j in row:
            if 0 <= j < 6:
                counts[i, j] += 1
    empty = counts.sum(-1, keepdim=True) == 0
    s = (qd[0, :, 0] @ kd[0, :, 0].T) * 0.5 + counts.log()
    p = s.masked_fill(empty, 0.0).softmax(-1).masked_fill(empty, 0.0)
    expected = (p @ vd[0, :, 0])[None, :, None]
    assert_rel(out, expected, 1e-5)  # fp32
    for grad, ref_grad in zip(grads, torch.autograd.grad(expected, (qd, kd, vd), grad_out.double())):
        assert_rel(grad, ref_grad, 1e-5)
    assert grads[0][0, 2].abs().max() == 0 and grads[0][0, 5].abs().max() == 0


# ---------------------------------------------------------------------------------- (e) GPU-only Triton

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_triton_deit_s_384_gpu(dtype):
    # Sparsifiner DeiT-S at 384: 577 tokens, 6 heads x 64, K = ceil(0.25 * 577) = 145, dense cls row.
    q, k, v = make_qkv(2, 577, 6, 64, 64, dtype, device="cuda")
    index = topk_index(2, 6, 577, 145, 1, device="cuda")
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}[dtype]  # see test_triton_matches_reference
    check_against_reference("triton", q, k, v, index, tol, dense_queries=1)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_backward_deterministic_gpu(dtype):
    """No atomics: two backward passes give bitwise equal gradients."""
    q, k, v = make_qkv(8, 197, 6, 64, 64, dtype, device="cuda")
    index = topk_index(8, 6, 197, 50, 1, device="cuda")
    grad_out = torch.randn(v.shape, device="cuda", dtype=dtype)
    first = run("triton", q, k, v, index, grad_out, dense_queries=1)[1]
    second = run("triton", q, k, v, index, grad_out, dense_queries=1)[1]
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.gpu
@needs_gpu
def test_torch_path_gpu():
    q, k, v = make_qkv(2, 30, 2, 16, 8, device="cuda")
    index = topk_index(2, 2, 30, 8, 1, device="cuda")
    # fp32 matmuls on CUDA may use TF32 when enabled globally (off by default): 1e-4 tolerates either.
    check_against_reference("torch", q, k, v, index, 1e-4, dense_queries=1)


# ------------------------------------------------------------------------------------- (f) equivalences



def _device(backend):
    return TRITON_DEVICE if backend == "triton" else "cpu"


def full_attention(q, k, v, scale):
    out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), scale=scale)
    return out.transpose(1, 2)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_all_keys_is_full_attention(backend):
    """K = N (every key, in a shuffled order) and dense_queries = N both give plain full attention."""
    q, k, v = make_qkv(2, 12, 2, 8, 4, device=_device(backend))
    index = topk_index(2, 2, 12, 12, dense=3, device=q.device)
    expected = full_attention(q, k, v, 0.4)
    with use_backend(backend):
        out = sparse_attention(q, k, v, index, scale=0.4, dense_queries=3)
        all_dense = sparse_attention(q, k, v, index[:, :, :0], scale=0.4, dense_queries=12)
    assert_rel(out, expected, 1e-5)  # fp32 on both sides, different summation orders: ~1e-6
    assert_rel(all_dense, expected, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_window_lists_are_window_attention(backend):
    """Each token of a 4x6 map listing the tokens of its 2x3 window = block window attention."""
    H, W, wh, ww = 4, 6, 2, 3
    q, k, v = make_qkv(1, H * W, 2, 8, 8, device=_device(backend))
    rows, cols = torch.arange(H * W) // W, torch.arange(H * W) % W
    window = (rows // wh) * (W // ww) + cols // ww
    index = torch.stack([(window == window[i]).nonzero()[:, 0].flip(0) for i in range(H * W)])  # (N, 6)
    index = index.expand(1, 2, H * W, wh * ww).to(q.device)
    with use_backend(backend):
        out = sparse_attention(q, k, v, index, scale=0.3)
    with use_backend("torch"):
        expected = window_attention(*(t.unflatten(1, (H, W)) for t in (q, k, v)), (wh, ww), "block", scale=0.3)
    assert_rel(out, expected.flatten(1, 2), 1e-5)  # fp32, see above


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_slot_order_does_not_matter(backend):
    q, k, v = make_qkv(1, 10, 2, 16, 16, device=_device(backend))
    index = topk_index(1, 2, 10, 4, 1, device=q.device)
    with use_backend(backend):
        a = sparse_attention(q, k, v, index, dense_queries=1)
        b = sparse_attention(q, k, v, index.flip(-1), dense_queries=1)
    assert_rel(a, b, 1e-6)  # same sums in a different order, fp32


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_cls_recipe(backend):
    """dense_queries=1 = the two-call recipe: full attention for the cls query, the op for the patch queries."""
    q, k, v = make_qkv(2, 9, 2, 8, 8, device=_device(backend))
    index = topk_index(2, 2, 9, 3, 1, device=q.device)
    with use_backend(backend):
        out = sparse_attention(q, k, v, index, dense_queries=1)
    assert_rel(out[:, :1], full_attention(q[:, :1], k, v, 8 ** -0.5), 1e-5)  # fp32
    expected = loop_sparse_attention(*(t.detach().cpu() for t in (q, k, v)), index.cpu(), 8 ** -0.5, 1)
    assert_rel(out[:, 1:], expected[:, 1:], 1e-5)


# ------------------------------------------------------------------------------------------ (g) FLOPs

def gathered_attention(q, k, v, index, scale, dense):
    """The op's matmul work written out with gathers and einsum: the K key and value rows of every sparse query
    gathered ((B, heads, M, K, D) copies), one dot product and one weighted sum per entry; the dense rows against
    all keys. q, k, v: (B, N, heads, D)."""
    B, _, heads, _ = q.shape
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, N, D)

    def gather(x):
        rows = index.long().reshape(B, heads, -1, 1).expand(-1, -1, -1, x.shape[-1])
        return x.gather(2, rows).view(*index.shape, x.shape[-1])

    s = torch.einsum("bhmd,bhmkd->bhmk", qh[:, :, dense:], gather(kh)) * scale
    out_sparse = torch.einsum("bhmk,bhmkd->bhmd", s.softmax(-1), gather(vh))
    s = torch.einsum("bhid,bhjd->bhij", qh[:, :, :dense], kh) * scale
    out_dense = torch.einsum("bhij,bhjd->bhid", s.softmax(-1), vh)
    return torch.cat([out_dense, out_sparse], dim=2).transpose(1, 2)


@pytest.mark.parametrize("dense", [0, 1, 4])
def test_flops_match_flop_counter(dense):
    """The gathered formulation does exactly the counted matmul work, and computes the op. (The torch path's
    sparse products run inside custom ops, which FlopCounterMode does not see into.)"""
    q, k, v = make_qkv(2, 9, 2, 4, 6, torch.float64)
    index = topk_index(2, 2, 9, 3, dense)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = gathered_attention(q, k, v, index, 0.5, dense)
    assert counter.get_total_flops() == sparse_attention_flops(q, k, v, index, dense_queries=dense)
    assert sparse_attention_flops(q.shape, k.shape, v.shape, index.shape, dense_queries=dense) == \
        sparse_attention_flops(q, k, v, index, dense_queries=dense)
    assert_rel(out, sparse_attention_reference(q, k, v, index, 0.5, dense), 1e-12)  # float64


def test_flops_official_formulation_and_deit_s_384():
    """The official dense masked formulation does 4x the work at keep rate 1/4; the formula at DeiT-S 384."""
    N, heads, D, K = 20, 2, 4, 5
    q, k, v = make_qkv(1, N, heads, D, D, torch.float64)
    index = topk_index(1, heads, N, K, 1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        official_style_attention(*(t.transpose(1, 2) for t in (q, k, v)), index)
    assert counter.get_total_flops() == 4 * N * N * heads * D  # dense: every query against every key
    assert sparse_attention_flops(q, k, v, index, dense_queries=1) == 4 * heads * D * (N + (N - 1) * K)
    # 577 tokens, 6 heads x 64, K = 145, cls row dense: 2*6*(576*145 + 577)*128 per image.
    assert sparse_attention_flops((1, 577, 6, 64), (1, 577, 6, 64), (1, 577, 6, 64), (1, 6, 576, 145),
                                  dense_queries=1) == 129_172_992


# ---------------------------------------------------------------------------------- (h) torch.compile

def test_torch_path_compiles_without_graph_breaks():
    q, k, v = make_qkv(1, 7, 2, 4, 4)
    index = topk_index(1, 2, 7, 3, 1)
    f = torch.compile(lambda q, k, v, i: sparse_attention(q, k, v, i, dense_queries=1), fullgraph=True,
                      backend="aot_eager")
    out = f(q, k, v, index)
    out.sum().backward()
    assert_rel(out, sparse_attention_reference(*upcast([q, k, v]), index, 0.5, 1), 1e-5)  # fp32


def test_compiled_torch_path_still_checks_the_index():
    """The value check of the public function is skipped while tracing; the torch path's custom op checks where
    it reads the index, so a compiled call with an out-of-range id still raises the same clear error."""
    q, k, v = make_qkv(1, 5, 1, 4, 4)
    f = torch.compile(lambda q, k, v, i: sparse_attention(q, k, v, i), fullgraph=True, backend="aot_eager")
    index = topk_index(1, 1, 5, 2)
    f(q, k, v, index)
    with pytest.raises(ValueError, match=r"index values must be key ids in \[0, N=5\); index\[0, 0, 2, 1\] = 7"):
        f(q, k, v, index.index_put((torch.tensor(0), torch.tensor(0), torch.tensor(2), torch.tensor(1)),
                                   torch.tensor(7)))


# ---------------------------------------------------------------------------- (i) dispatch and validation

def test_default_backend_on_cpu_is_torch(monkeypatch):
    calls = []
    monkeypatch.setattr(sa_module, "sparse_attention_torch", lambda *a: calls.append("torch") or a[2])
    monkeypatch.delenv("VISIONZOO_KERNEL_BACKEND", raising=False)
    q = torch.randn(1, 4, 1, 8)
    sparse_attention(q, q, q, topk_index(1, 1, 4, 2))
    assert calls == ["torch"]


def test_forced_triton_refuses_float64():
    pytest.importorskip("triton")
    q = torch.randn(1, 4, 1, 8, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(ValueError, match="does not support.*float64"):
        sparse_attention(q, q, q, topk_index(1, 1, 4, 2))


def _q():
    return torch.randn(2, 5, 1, 8)


def _i(*shape, dtype=torch.int64):
    return torch.zeros(*shape, dtype=dtype) if shape else torch.zeros(2, 1, 5, 2, dtype=dtype)


@pytest.mark.parametrize("make_args,error,match", [
    (lambda q: (q[..., 0], q, q, _i()), ValueError, r"q must be \(B, N, heads, head_dim\), got a 3-D"),
    (lambda q: (q, q[..., :4], q, _i()), ValueError, r"q and k must have the same shape"),
    (lambda q: (q, q, q[:, :3], _i()), ValueError, r"v must be \(B, N, heads, Dv\) with q's"),
    (lambda q: (q.long(), q.long(), q.long(), _i()), TypeError, "must be a floating point tensor, got torch.int64"),
    (lambda q: (q, q.double(), q, _i()), ValueError, "q, k, v must share dtype and device"),
    (lambda q: (q[:0], q[:0], q[:0], _i(0, 1, 5, 2)), ValueError, "must not be empty"),
    (lambda q: (q, q, q, _i().float()), TypeError, "index must be an integer tensor .* got torch.float32"),
    (lambda q: (q, q, q, _i().bool()), TypeError, "got torch.bool \\(a boolean mask\\?"),
    (lambda q: (q, q, q, [[0]]), TypeError, "index must be an integer tensor .* got list"),
    (lambda q: (q, q, q, _i(2, 1, 5)), ValueError, r"index must be \(B, heads, N - dense_queries, K\), got a 3-D"),
    (lambda q: (q, q, q, _i(2, 1, 4, 2)), ValueError, r"= \(2, 1, 5, K\), got \(2, 1, 4, 2\)"),
    (lambda q: (q, q, q, _i(2, 1, 5, 6)), ValueError, r"K = 6 keys per query; K must be in \[1, N=5\]"),
    (lambda q: (q, q, q, _i(2, 1, 5, 0)), ValueError, r"K = 0 keys per query"),
    (lambda q: (q, q, q, _i().index_fill(-1, torch.tensor([1]), 5)), ValueError,
     r"index values must be key ids in \[0, N=5\); index\[0, 0, 0, 1\] = 5"),
    (lambda q: (q, q, q, _i().index_fill(2, torch.tensor([3]), -1)), ValueError, r"index\[0, 0, 3, 0\] = -1"),
])
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_bad_inputs(make_args, error, match, backend):
    with use_backend(backend), pytest.raises(error, match=match):
        sparse_attention(*make_args(_q()))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(dense_queries=-1), ValueError, r"dense_queries must be an int in \[0, N=5\]"),
    (dict(dense_queries=6), ValueError, r"dense_queries must be an int in \[0, N=5\] .*got 6"),
    (dict(dense_queries=True), ValueError, "dense_queries must be an int"),
    (dict(dense_queries=1), ValueError, r"index must be .* = \(2, 1, 4, K\), got \(2, 1, 5, 2\)"),
    (dict(scale="0.1"), TypeError, "scale must be a real number or None"),
])
def test_bad_keyword_inputs(kwargs, error, match):
    q = _q()
    with pytest.raises(error, match=match):
        sparse_attention(q, q, q, _i(), **kwargs)


def test_flops_validates_shapes():
    with pytest.raises(ValueError, match=r"K = 9 keys per query"):
        sparse_attention_flops((1, 5, 1, 8), (1, 5, 1, 8), (1, 5, 1, 8), (1, 1, 5, 9))
