"""Routing attention (BiFormer BRA core): reference, torch path and Triton kernels.

Tolerances are relative to the largest magnitude of the expected tensor (see ``assert_rel``), each justified
where it is used. The Triton tests run under TRITON_INTERPRET=1 (set in conftest.py) when no GPU is present.
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():  # before anything imports triton_kernel (see conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import given, settings, strategies as st
from torch.utils.flop_counter import FlopCounterMode

from .conftest import BACKENDS_HERE, TRITON_DEVICE, needs_gpu, needs_triton
from visionzoo.kernels import region_routing, routing_attention, routing_attention_flops, use_backend, window_attention
from visionzoo.kernels.routing_attention.reference import region_routing_reference, routing_attention_reference

ra_module = importlib.import_module("visionzoo.kernels.routing_attention")
torch_path = importlib.import_module("visionzoo.kernels.routing_attention.torch_path")





# ------------------------------------------------------------------------------------------------ helpers

def make_qkv(B, H, W, heads, dqk, dv, dtype=torch.float32, layout="fused", device="cpu", seed=0):
    """Leaf q, k (B, H, W, heads, dqk) and v (B, H, W, heads, dv) with non-trivial strides.

    ``fused``: views of one (B, H, W, heads*(2*dqk + dv)) tensor, as BiFormer's qkv projection produces them
    ([q | k | v] along channels, each heads x dim). ``permuted``: each from a (B, heads, D, H, W) buffer.
    ``contiguous``: plain tensors.
    """
    g = torch.Generator().manual_seed(seed)
    if layout == "fused":
        qkv = torch.randn(B, H, W, heads * (2 * dqk + dv), generator=g).to(device=device, dtype=dtype)
        q, k, v = qkv.split([heads * dqk, heads * dqk, heads * dv], dim=-1)
        q, k, v = q.unflatten(-1, (heads, dqk)), k.unflatten(-1, (heads, dqk)), v.unflatten(-1, (heads, dv))
    elif layout == "permuted":
        q, k, v = (torch.randn(B, heads, d, H, W, generator=g).to(device=device, dtype=dtype).permute(0, 3, 4, 1, 2)
                   for d in (dqk, dqk, dv))
    else:
        q, k, v = (torch.randn(B, H, W, heads, d, generator=g).to(device=device, dtype=dtype) for d in (dqk, dqk, dv))
    return [t.requires_grad_() for t in (q, k, v)]


def run(backend, q, k, v, num_regions, topk, grad_out, **kwargs):
    """Output and the gradients of q, k, v."""
    with use_backend(backend):
        out = routing_attention(q, k, v, num_regions, topk, **kwargs)
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


def check_against_reference(backend, q, k, v, num_regions, topk, tol, padding="mask", seed=2, index=None):
    """Forward and every gradient of ``backend`` against the float64 reference, on the same inputs and routing.

    The routing is computed once (float64 reference) and passed to both sides, so near-ties in the region
    affinities cannot make the two sides route differently; the routing itself is tested separately."""
    if index is None:
        with use_backend("reference"):
            index = region_routing(*upcast([q, k]), num_regions, topk, padding=padding)
        index = index.to(q.device)
    g = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(v.shape, generator=g).to(device=q.device, dtype=q.dtype)
    out, grads = run(backend, q, k, v, num_regions, topk, grad_out, padding=padding, index=index)
    assert out.dtype == q.dtype and out.shape == v.shape and out.is_contiguous()
    ref_out, ref_grads = run("reference", *upcast([q, k, v]), num_regions, topk, grad_out.double(), padding=padding,
                             index=index)
    assert_rel(out, ref_out, tol, "out")
    for name, grad, ref_grad, t in zip(("dq", "dk", "dv"), grads, ref_grads, (q, k, v)):
        assert grad.dtype == t.dtype and grad.shape == t.shape, name
        assert_rel(grad, ref_grad, tol, name)


def regions_of(H, W, n):
    """Token coordinates (inside the map or not) of every region, in region order."""
    nh, nw = n
    rh, rw = -(-H // nh), -(-W // nw)
    return [[(i * rh + a, j * rw + c) for a in range(rh) for c in range(rw)] for i in range(nh) for j in range(nw)]


# ------------------------------------------------ (a) the reference against independent formulations

def loop_routing(q, k, n, topk, scale, padding):
    """Routing as the docstring states it, region by region from explicit coordinates."""
    B, H, W, heads, D = q.shape
    regions = regions_of(H, W, n)
    index = []
    for b in range(B):
        means = []
        for x in (q[b], k[b]):
            m = []
            for cells in regions:
                real = [x[y, c].reshape(-1) for y, c in cells if y < H and c < W]
                if not real:
                    m.append(None)
                else:
                    m.append(sum(real) / (len(real) if padding == "mask" else len(cells)))
            means.append(m)
        zero = torch.zeros(heads * D, dtype=q.dtype)
        routable = [s for s in range(len(regions)) if means[1][s] is not None or padding == "zeros"]
        rows = []
        for r in range(len(regions)):
            qm = means[0][r] if means[0][r] is not None else zero
            logits = torch.full((len(regions),), float("-inf"), dtype=q.dtype)
            for s in routable:
                logits[s] = (qm * scale) @ (means[1][s] if means[1][s] is not None else zero)
            rows.append(logits.topk(min(topk, len(routable))).indices)
        index.append(torch.stack(rows))
    return torch.stack(index)


def loop_routing_attention(q, k, v, n, index, scale, padding):
    """Attention as the docstring states it: per query region, the explicit list of its routed key tokens."""
    B, H, W, heads, _ = q.shape
    regions = regions_of(H, W, n)
    out = torch.zeros(*q.shape[:4], v.shape[-1], dtype=q.dtype)
    for b in range(B):
        for r, cells in enumerate(regions):
            queries = [(y, c) for y, c in cells if y < H and c < W]
            if not queries:
                continue
            keys, values = [], []
            for s in index[b, r].tolist():
                for y, c in regions[s]:
                    if y < H and c < W:
                        keys.append(k[b, y, c])
                        values.append(v[b, y, c])
                    elif padding == "zeros":
                        keys.append(torch.zeros_like(k[b, 0, 0]))
                        values.append(torch.zeros_like(v[b, 0, 0]))
            qs = torch.stack([q[b, y, c] for y, c in queries])  # (M, heads, Dqk)
            attn = (torch.einsum("mhd,lhd->hml", qs, torch.stack(keys)) * scale).softmax(-1)
            o = torch.einsum("hml,lhd->mhd", attn, torch.stack(values))
            for i, (y, c) in enumerate(queries):
                out[b, y, c] = o[i]
    return out


ODD_CASES = [  # (B, H, W, heads, dqk, dv, num_regions, topk)
    (2, 6, 8, 2, 3, 5, (3, 4), 3),  # whole regions
    (1, 7, 10, 2, 3, 4, (3, 4), 4),  # padded along both axes
    (1, 6, 5, 1, 2, 3, 4, 5),  # empty regions (rh = 2: region row 3 and column 3 hold no real token)
    (1, 3, 2, 2, 2, 2, (5, 3), 40),  # more regions than rows, topk clamped
]


@pytest.mark.parametrize("padding", ["mask", "zeros"])
@pytest.mark.parametrize("case", ODD_CASES)
def test_reference_matches_loop_formulation(case, padding):
    B, H, W, heads, dqk, dv, n, topk = case
    n = n if isinstance(n, tuple) else (n, n)
    q, k, v = make_qkv(B, H, W, heads, dqk, dv, torch.float64, layout="contiguous")
    index = region_routing_reference(q, k, n, topk, 0.6, padding)
    expected_index = loop_routing(q, k, n, topk, 0.6, padding)
    # Rows of regions without a real token are arbitrary (ties): compare the rows that have queries.
    live = torch.tensor([any(y < H and c < W for y, c in cells) for cells in regions_of(H, W, n)])
    assert torch.equal(comparable(index, live), comparable(expected_index, live))
    # float64 on both sides, only the summation order differs: 1e-12 catches any indexing error.
    assert_rel(routing_attention_reference(q, k, v, n, index, 0.6, padding),
               loop_routing_attention(q, k, v, n, index, 0.6, padding), 1e-12)


def official_style_bra(q, k, v, n, topk):
    """BiFormer's legacy BRA core on a whole-region map, written from its description (anchors, section 3.3):
    region partition, detached region means over qk_dim = heads*Dqk, affinity with scale qk_dim**-0.5, topk,
    K/V gathered per query region (the copy the kernels avoid), multi-head attention with the same scale."""
    B, H, W, heads, dqk = q.shape
    dv = v.shape[-1]
    rh, rw, R, T = H // n, W // n, n * n, (H // n) * (W // n)
    scale = (heads * dqk) ** -0.5

    def regions(x):  # (B, H, W, heads, d) -> (B, R, T, heads*d)
        return x.reshape(B, n, rh, n, rw, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, R, T, -1)

    qr, kr, vr = regions(q), regions(k), regions(v)
    q_win, k_win = qr.detach().mean(2), kr.detach().mean(2)
    index = ((q_win * scale) @ k_win.transpose(-1, -2)).topk(topk, dim=-1).indices  # (B, R, topk)
    k_sel = torch.stack([kr[b][index[b]] for b in range(B)]).reshape(B, R, topk * T, heads, dqk)
    v_sel = torch.stack([vr[b][index[b]] for b in range(B)]).reshape(B, R, topk * T, heads, dv)
    qh = qr.reshape(B, R, T, heads, dqk).transpose(2, 3)  # (B, R, heads, T, dqk)
    attn = ((qh * scale) @ k_sel.permute(0, 1, 3, 4, 2)).softmax(-1)
    out = attn @ v_sel.transpose(2, 3)  # (B, R, heads, T, dv)
    out = out.reshape(B, n, n, heads, rh, rw, dv).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, heads, dv)
    return out, index


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_official_formulation(backend):
    """Default scale, built-in routing: the same routing indices and output as the gathered formulation."""
    q, k, v = make_qkv(2, 8, 12, 2, 4, 6, torch.float64, layout="fused")
    expected, expected_index = official_style_bra(q, k, v, 4, 3)
    with use_backend(backend):
        out, index = routing_attention(q, k, v, 4, 3, return_index=True)
    assert torch.equal(index, expected_index)
    assert_rel(out, expected, 1e-12)  # float64, summation order only
    grad_out = torch.randn(out.shape, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), grad_out), torch.autograd.grad(expected, (q, k, v), grad_out)):
        assert_rel(a, b, 1e-12)


def comparable(index, live):
    """Rows of query regions that hold a token. Empty regions have affinity exactly 0 with everything (zero
    means), so with padding='zeros' ties among them are broken arbitrarily: compare those as a set."""
    index = index[:, live]
    if live.all():
        return index
    return torch.where(live[index], index, -1).sort(-1).values


@pytest.mark.parametrize("padding", ["mask", "zeros"])
def test_torch_routing_matches_reference(padding):
    # 9x7 map in 4x3 regions of 3x3: padded, and region row 3 is empty. float64: no near-ties.
    q, k, _ = make_qkv(2, 9, 7, 2, 3, 1, torch.float64, layout="permuted")
    with use_backend("reference"):
        expected = region_routing(q, k, (4, 3), 6, padding=padding)
    got = region_routing(q, k, (4, 3), 6, padding=padding)
    live = torch_path.region_grid(9, 7, (4, 3)).live_regions()
    assert got.shape == expected.shape == (2, 12, 6)
    if padding == "mask":  # exact order: by decreasing affinity
        assert torch.equal(got[:, live], expected[:, live])
    assert torch.equal(comparable(got, live), comparable(expected, live))


# ----------------------------------------------------------------------------------------- (b) gradcheck

@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("padding", ["mask", "zeros"])
def test_gradcheck(backend, padding):
    # 3x3 map in 2x2 regions of 2x2: padded rows and columns, so masked/zero keys and dropped queries are
    # exercised; 2 of 4 regions routed. Tiny, as gradcheck evaluates the op twice per input element.
    q, k, v = make_qkv(1, 3, 3, 1, 2, 2, torch.float64, layout="fused")
    with use_backend("reference"):
        index = region_routing(q, k, 2, 2, padding=padding)

    def f(q, k, v):
        with use_backend(backend):
            return routing_attention(q, k, v, 2, 2, padding=padding, index=index)

    assert torch.autograd.gradcheck(f, (q, k, v))


# ------------------------------------------------------------------- (c) torch path vs reference, random

@settings(deadline=None, max_examples=40)  # 1-10 s on the 2 shared cores, depending on their load
@given(
    B=st.integers(1, 2), H=st.integers(1, 12), W=st.integers(1, 12), nh=st.integers(1, 5), nw=st.integers(1, 5),
    topk=st.integers(1, 30), heads=st.integers(1, 3), dqk=st.integers(1, 9), dv=st.integers(1, 9),
    padding=st.sampled_from(["mask", "zeros"]), layout=st.sampled_from(["fused", "permuted", "contiguous"]),
    dtype=st.sampled_from([torch.float32, torch.float64]), chunk_bytes=st.sampled_from([1, 4096, 2 ** 25]),
    dense=st.booleans(), seed=st.integers(0, 2 ** 16),
)
def test_torch_path_matches_reference(B, H, W, nh, nw, topk, heads, dqk, dv, padding, layout, dtype, chunk_bytes,
                                      dense, seed):
    # float64: the two paths differ only in summation order (1e-10). float32: fp32 rounding of sums over at
    # most a few hundred O(1) products and of softmax: ~1e-6 relative; 2e-5 leaves margin but any wrong
    # index or mask gives O(1) errors. chunk_bytes 1 forces one query region per chunk. dense=False keeps every
    # case on the chunked gather; True lets the small maps with a large routed share take the dense route.
    q, k, v = make_qkv(B, H, W, heads, dqk, dv, dtype, layout=layout, seed=seed)
    old = torch_path.CHUNK_BYTES, torch_path.DENSE_MAX_TOKENS
    torch_path.CHUNK_BYTES = chunk_bytes
    torch_path.DENSE_MAX_TOKENS = old[1] if dense else 0
    try:
        check_against_reference("torch", q, k, v, (nh, nw), topk, 1e-10 if dtype == torch.float64 else 2e-5,
                                padding=padding, seed=seed + 1)
    finally:
        torch_path.CHUNK_BYTES, torch_path.DENSE_MAX_TOKENS = old


@pytest.mark.parametrize("padding", ["mask", "zeros"])
def test_dense_route_matches_the_chunked_gather(padding, monkeypatch):
    """BiFormer-S stage 3 shapes (14x14 in 7x7 regions, topk 16 of 49; and a padded 13x11 map): the dense route
    (taken here) and the chunked gather agree, forward and every gradient."""
    dense_default = torch_path.DENSE_MAX_TOKENS
    for H, W in [(14, 14), (13, 11)]:
        q, k, v = (t.requires_grad_() for t in make_qkv(2, H, W, 4, 8, 6, torch.float64, seed=H))
        grid = torch_path.region_grid(H, W, (7, 7))
        assert torch_path.use_dense(grid, 16)
        outs, grads = [], []
        for dense_max in (dense_default, 0):
            monkeypatch.setattr(torch_path, "DENSE_MAX_TOKENS", dense_max)
            out = routing_attention(q, k, v, 7, 16, padding=padding)
            outs.append(out)
            grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
        assert_rel(outs[0], outs[1], 1e-10)  # float64: summation order only
        for a, b in zip(*grads):
            assert_rel(a, b, 1e-10)
        monkeypatch.setattr(torch_path, "DENSE_MAX_TOKENS", dense_default)
    assert not torch_path.use_dense(torch_path.region_grid(56, 56, (7, 7)), 1)  # stage 1: 1 of 49 regions
    assert not torch_path.use_dense(torch_path.region_grid(56, 56, (7, 7)), 49)  # 3136 positions: too many


def test_torch_path_chunks_bound_memory():
    # BiFormer-S stage 3 at batch 64: 196 tokens in 49 regions of 2x2, topk 16, 8 heads x 32, fp32.
    step = torch_path.chunk_size(64 * 49, 8, 16, 4, 32, 32, 4)
    per_region = 8 * (16 * 4 * 64 * 4 + 3 * 4 * 64 * 4)
    assert step * per_region <= torch_path.CHUNK_BYTES < (step + 1) * per_region
    assert torch_path.chunk_size(3, 1, 1, 1, 1, 1, 4) == 3  # never more than the regions
    assert torch_path.chunk_size(10, 64, 64, 4096, 256, 256, 4) == 1  # at least one region


# ------------------------------------------------------------ (d) Triton (interpreter on CPU) vs reference

TRITON_CASES = [
    # id: (B, H, W, heads, dqk, dv, num_regions, topk, padding, layout)
    pytest.param((1, 9, 11, 2, 5, 7, (3, 4), 3, "mask", "fused"), id="9x11-r3x4-padW-mask-d5/7"),
    pytest.param((1, 7, 6, 1, 24, 16, 3, 2, "zeros", "permuted"), id="7x6-r3-zeros-d24/16-perm"),
    pytest.param((2, 6, 5, 1, 8, 8, 4, 20, "mask", "fused"), id="6x5-r4-empty-regions-topk-clamped"),
]


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matches_reference(case, dtype):
    # fp32: fp32 dots (input_precision="ieee") and fp32 accumulation over <= 60 terms: ~1e-6 relative;
    # 1e-5 as in DESIGN.md. fp16: the float64 reference runs on the same fp16 values, so the error is the
    # kernel's own: fp16 outputs (2^-11 relative) and P / dS rounded to fp16 before their dots give ~1e-3;
    # 1e-2 leaves margin, while layout or index bugs give O(1) errors.
    B, H, W, heads, dqk, dv, n, topk, padding, layout = case
    q, k, v = make_qkv(B, H, W, heads, dqk, dv, dtype, layout=layout, device=TRITON_DEVICE)
    check_against_reference("triton", q, k, v, n, topk, 1e-5 if dtype == torch.float32 else 1e-2, padding=padding)


@needs_triton
@pytest.mark.parametrize("padding", ["mask", "zeros"])
def test_triton_several_tiles(monkeypatch, padding):
    """16-position tiles: 20-token regions span two query/key tiles, the 3*20 routed keys four key tiles, and
    key regions routed from several query regions give several tiles of routing queries."""
    from visionzoo.kernels.routing_attention import triton_kernel
    monkeypatch.setattr(triton_kernel, "tile_sizes", lambda t, l, dq, dv: (16, 16, 16, 16, 4))
    q, k, v = make_qkv(1, 8, 14, 1, 6, 6, device=TRITON_DEVICE)  # 2x3 regions of 4x5, last column padded
    check_against_reference("triton", q, k, v, (2, 3), 3, 1e-5, padding=padding)  # fp32, see above


@needs_triton
def test_triton_strided_grad_output():
    """dO with arbitrary strides (autograd may pass any layout) is read through its strides."""
    q, k, v = make_qkv(1, 6, 6, 2, 8, 8, device=TRITON_DEVICE)
    index = region_routing(q, k, 3, 2)
    grad_out = torch.randn(1, 6, 6, 8, 2, device=TRITON_DEVICE).transpose(-1, -2)
    out, grads = run("triton", q, k, v, 3, 2, grad_out, index=index)
    ref_out, ref_grads = run("reference", *upcast([q, k, v]), 3, 2, grad_out.double(), index=index)
    for a, b in zip([out, *grads], [ref_out, *ref_grads]):
        assert_rel(a, b, 1e-5)  # fp32, see test_triton_matches_reference


def test_transposed_routing_drops_regions_without_queries():
    pytest.importorskip("triton")
    from visionzoo.kernels.routing_attention.triton_kernel import transposed_routing
    grid = torch_path.region_grid(3, 3, (2, 2))  # regions of 2x2: region 3 holds (2, 2) only; all live
    assert transposed_routing(torch.tensor([[[1], [1], [0], [1]]]), grid).offsets.tolist() == [[0, 1, 4, 4, 4]]
    grid = torch_path.region_grid(2, 2, (3, 1))  # regions of 1x2: region 2 (row 2) is padding only
    result = transposed_routing(torch.tensor([[[1], [0], [0]]]), grid)
    assert result.offsets.tolist() == [[0, 1, 2, 2]] and result.sources[0, :2].tolist() == [1, 0]


# ---------------------------------------------------------------------------------- (e) GPU-only Triton

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("padding", ["mask", "zeros"])
@pytest.mark.parametrize("case", [(2, 56, 56, 2, 32, 32, 7, 1), (1, 28, 28, 4, 32, 32, 7, 4),
                                  (2, 14, 14, 8, 32, 32, 7, 16), (1, 30, 26, 3, 24, 40, 7, 5)])
def test_triton_bf16_gpu(case, padding):
    # BiFormer-S stages 1-3 at 224 plus an odd map. bf16 has 8 mantissa bits (2^-9 relative per rounding):
    # outputs, P and dS rounded to bf16 give ~1e-2; 3e-2 leaves margin against the float64 reference.
    B, H, W, heads, dqk, dv, n, topk = case
    q, k, v = make_qkv(B, H, W, heads, dqk, dv, torch.bfloat16, device="cuda")
    check_against_reference("triton", q, k, v, n, topk, 3e-2, padding=padding)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_backward_deterministic_gpu(dtype):
    """No atomics: two backward passes give bitwise equal gradients."""
    q, k, v = make_qkv(8, 28, 28, 4, 32, 32, dtype, device="cuda")
    grad_out = torch.randn(v.shape, device="cuda", dtype=dtype)
    index = region_routing(q, k, 7, 4)
    first = run("triton", q, k, v, 7, 4, grad_out, index=index)[1]
    second = run("triton", q, k, v, 7, 4, grad_out, index=index)[1]
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.gpu
@needs_gpu
def test_torch_path_gpu():
    q, k, v = make_qkv(2, 9, 11, 2, 16, 8, device="cuda")
    # fp32 matmuls on CUDA may use TF32 when enabled globally (off by default): 1e-4 tolerates either.
    check_against_reference("torch", q, k, v, 3, 4, 1e-4)


# ------------------------------------------------------------------------------------- (f) equivalences



def _device(backend):
    return TRITON_DEVICE if backend == "triton" else "cpu"


def full_attention(q, k, v, scale):
    qf, kf, vf = (t.flatten(1, 2).transpose(1, 2) for t in (q, k, v))  # (B, heads, HW, D)
    out = (qf @ kf.transpose(-1, -2) * scale).softmax(-1) @ vf
    return out.transpose(1, 2).reshape(*q.shape[:4], v.shape[-1])


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_identity_routing_is_window_attention(backend):
    """Each region routed to itself only = block window attention with rh x rw windows (padded keys masked)."""
    q, k, v = make_qkv(1, 7, 9, 2, 8, 8, device=_device(backend))
    index = torch.arange(9, device=q.device).view(1, 9, 1)  # 3x3 regions of 3x3, the last row/col padded
    with use_backend(backend):
        out = routing_attention(q, k, v, 3, 1, scale=0.3, index=index)
    with use_backend("torch"):
        expected = window_attention(q, k, v, (3, 3), "block", scale=0.3)
    assert_rel(out, expected, 1e-5)  # fp32 on both sides, different summation orders: ~1e-6


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("num_regions,H,W", [(1, 5, 7), (3, 7, 5)])
def test_all_regions_is_full_attention(backend, num_regions, H, W):
    # topk >= regions (clamped): every real key is attended, so padding masked = plain full attention.
    q, k, v = make_qkv(2, H, W, 2, 8, 4, device=_device(backend))
    with use_backend(backend):
        out = routing_attention(q, k, v, num_regions, 100)
    assert_rel(out, full_attention(q, k, v, 16 ** -0.5), 1e-5)  # fp32, see above


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_zeros_padding_is_masking_of_the_zero_padded_map(backend):
    """padding='zeros' on an odd map = padding='mask' on the map explicitly zero-padded to whole regions."""
    q, k, v = make_qkv(2, 7, 10, 2, 4, 3, torch.float64)
    padded = [torch.nn.functional.pad(t, (0, 0, 0, 0, 0, 2, 0, 2)) for t in (q, k, v)]  # 9 x 12: 3x4 regions
    with use_backend(backend):
        out, index = routing_attention(q, k, v, (3, 4), 5, padding="zeros", return_index=True)
        expected, expected_index = routing_attention(*padded, (3, 4), 5, padding="mask", return_index=True)
    assert torch.equal(index, expected_index)
    assert_rel(out, expected[:, :7, :10], 1e-12)  # float64


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_regions_beyond_the_map_are_empty(backend):
    """With padding='mask', 5x5 regions on a 3x3 map give 1x1 regions and empty ones: same as 3x3 regions."""
    q, k, v = make_qkv(1, 3, 3, 2, 4, 4, torch.float64)
    with use_backend(backend):
        out, index = routing_attention(q, k, v, 5, 20, return_index=True)
        expected = routing_attention(q, k, v, 3, 2)
        expected_more = routing_attention(q, k, v, 3, 20)
    assert index.shape == (1, 25, 9)  # topk clamped to the 9 regions holding a token
    assert_rel(out, expected_more, 1e-12)
    with use_backend(backend):
        out_k2 = routing_attention(q, k, v, 5, 2)
    assert_rel(out_k2, expected, 1e-12)  # same routing (affinities are the same numbers), float64


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_slot_order_does_not_matter(backend):
    q, k, v = make_qkv(1, 6, 6, 1, 16, 16, device=_device(backend))
    index = region_routing(q, k, 3, 4)
    with use_backend(backend):
        a = routing_attention(q, k, v, 3, 4, index=index)
        b = routing_attention(q, k, v, 3, 4, index=index.flip(-1))
    assert_rel(a, b, 1e-6)  # same sums in a different order, fp32


# ------------------------------------------------------------------------------------------ (g) FLOPs

@pytest.mark.parametrize("H,W,n,topk", [(8, 12, 4, 3), (7, 10, (3, 4), 20)])
def test_flops_match_flop_counter(H, W, n, topk, monkeypatch):
    """The torch path does exactly the counted matmul work (chunked), padded map included. (Its dense route for small
    maps with a large routed share, off here, computes regions/kk times the score work by design.)"""
    monkeypatch.setattr(torch_path, "DENSE_MAX_TOKENS", 0)
    q, k, v = make_qkv(2, H, W, 2, 4, 6)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        routing_attention(q, k, v, n, topk)
    assert counter.get_total_flops() == routing_attention_flops(q, k, v, n, topk)
    index = region_routing(q, k, n, topk)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        routing_attention(q, k, v, n, topk, index=index)
    assert counter.get_total_flops() == routing_attention_flops(q.shape, k.shape, v.shape, n, topk, index=index)


def test_flops_match_official_formulation():
    """The gathered (official-style) formulation's matmuls count the same, and the formula at BiFormer-S stage 1."""
    q, k, v = make_qkv(1, 8, 8, 2, 4, 4, torch.float64)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        official_style_bra(q, k, v, 2, 2)
    assert counter.get_total_flops() == routing_attention_flops(q, k, v, 2, 2)
    # 56x56, 7x7 regions of 64 tokens, topk 1, 2 heads x 32: 2*49*49*64 + 2*2*49*64*64*64 per image.
    shape = (1, 56, 56, 2, 32)
    assert routing_attention_flops(shape, shape, shape, 7, 1) == 307_328 + 51_380_224


# ---------------------------------------------------------------------------------- (h) torch.compile

def test_torch_path_compiles_without_graph_breaks():
    q, k, v = make_qkv(1, 5, 6, 2, 4, 4)
    f = torch.compile(lambda q, k, v: routing_attention(q, k, v, 2, 2, padding="mask"), fullgraph=True,
                      backend="aot_eager")
    out = f(q, k, v)
    out.sum().backward()
    expected = routing_attention(*upcast([q, k, v]), 2, 2)
    assert_rel(out, expected, 1e-5)  # fp32


# ---------------------------------------------------------------------------- (i) dispatch and validation

def test_default_backend_on_cpu_is_torch(monkeypatch):
    calls = []
    monkeypatch.setattr(ra_module, "routing_attention_torch", lambda *a: calls.append("torch") or a[2])
    monkeypatch.delenv("VISIONZOO_KERNEL_BACKEND", raising=False)
    q = torch.randn(1, 4, 4, 1, 8)
    routing_attention(q, q, q, 2, 1)
    assert calls == ["torch"]


def test_forced_triton_refuses_float64():
    pytest.importorskip("triton")
    q = torch.randn(1, 4, 4, 1, 8, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(ValueError, match="does not support.*float64"):
        routing_attention(q, q, q, 2, 1)


def _q(*shape):
    return torch.randn(*shape) if shape else torch.randn(2, 4, 4, 1, 8)


@pytest.mark.parametrize("make_args,error,match", [
    (lambda q: (q[..., 0], q, q, 2, 1), ValueError, r"q must be \(B, H, W, heads, head_dim\), got a 4-D"),
    (lambda q: (q, q[..., :4], q, 2, 1), ValueError, r"q and k must have the same shape"),
    (lambda q: (q, q, q[:, :3], 2, 1), ValueError, r"v must be \(B, H, W, heads, Dv\) with q's"),
    (lambda q: (q.long(), q.long(), q.long(), 2, 1), TypeError, "must be a floating point tensor, got torch.int64"),
    (lambda q: (q, q.double(), q, 2, 1), ValueError, "q, k, v must share dtype and device"),
    (lambda q: (q[:0], q[:0], q[:0], 2, 1), ValueError, "must not be empty"),
    (lambda q: (q, q, q, 0, 1), ValueError, "num_regions must be a positive int or a pair of positive ints, got 0"),
    (lambda q: (q, q, q, (2, 2, 2), 1), ValueError, r"num_regions must be .*got \(2, 2, 2\)"),
    (lambda q: (q, q, q, 2.0, 1), ValueError, "num_regions must be .*got 2.0"),
    (lambda q: (q, q, q, 2, 0), ValueError, "topk must be a positive int .*got 0"),
    (lambda q: (q, q, q, 2, -2), ValueError, r"topk must be a positive int .*got -2 \(BiFormer's topk -1/-2"),
    (lambda q: (q, q, q, 2, True), ValueError, "topk must be a positive int"),
])
def test_bad_inputs(make_args, error, match):
    with pytest.raises(error, match=match):
        routing_attention(*make_args(_q()))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(padding="reflect"), ValueError, r"padding must be one of \('mask', 'zeros'\), got 'reflect'"),
    (dict(scale="0.1"), TypeError, "scale must be a real number or None"),
    (dict(index=torch.zeros(2, 4, 1)), TypeError, "index must be an integer tensor"),
    (dict(index=torch.zeros(2, 4, dtype=torch.long)), ValueError, r"index must be \(B, regions, kk\) = \(2, 4, 1..4\)"),
    (dict(index=torch.zeros(2, 4, 5, dtype=torch.long)), ValueError, r"= \(2, 4, 1..4\), got \(2, 4, 5\)"),
    (dict(index=torch.full((2, 4, 1), 4)), ValueError, r"index values must lie in \[0, 4\)"),
    (dict(index=torch.tensor([[0, 0], [1, 2], [2, 3], [3, 0]]).expand(2, 4, 2)), ValueError, "distinct region ids"),
])
def test_bad_keyword_inputs(kwargs, error, match):
    q = _q()
    with pytest.raises(error, match=match):
        routing_attention(q, q, q, 2, 1, **kwargs)


def test_index_naming_an_empty_region():
    q = _q(1, 3, 3, 1, 4)  # 4x4 regions of 1x1 on a 3x3 map: region 3 (row 0, column 3) is padding only
    index = torch.arange(16).view(1, 16, 1).roll(1, dims=1)  # region 4 routes to region 3
    with pytest.raises(ValueError, match="names a region that holds no real token"):
        routing_attention(q, q, q, 4, 1, index=index)
    routing_attention(q, q, q, 4, 1, index=index, padding="zeros")  # a zero region: allowed
    with pytest.raises(ValueError, match=r"= \(1, 16, 1..9\)"):  # topk clamped to the 9 regions with a token
        routing_attention(q, q, q, 4, 1, index=torch.zeros(1, 16, 10, dtype=torch.long))
