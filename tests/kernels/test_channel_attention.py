"""Channel attention (DaViT v1, Florence-2 v2): reference, torch path and Triton kernels.

Tolerances are relative to the largest magnitude of the expected tensor (see ``assert_rel``), each
justified where it is used. The Triton tests run under TRITON_INTERPRET=1 (set in conftest.py) on CPU.
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():  # before anything imports triton_kernel (see conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import given, settings, strategies as st

from .conftest import BACKENDS_HERE, TRITON_DEVICE, needs_gpu, needs_triton, triton_runs_here
from visionzoo.kernels import channel_attention, channel_attention_flops, use_backend
from visionzoo.kernels.channel_attention.reference import channel_attention_reference

ca_module = importlib.import_module("visionzoo.kernels.channel_attention")





# ------------------------------------------------------------------------------------------------ helpers

def make_qkv(B, N, C, dtype=torch.float32, layout="fused", device="cpu", seed=0):
    """q, k, v of shape (B, N, C): leaf tensors with non-trivial strides.

    ``fused``: the three C-wide slices of one (B, N, 3C) tensor, as timm's qkv Linear produces them.
    ``permuted``: each from its own (C, B, N)-ordered buffer (every stride different from contiguous).
    ``contiguous``: plain tensors.
    """
    g = torch.Generator().manual_seed(seed)
    if layout == "fused":
        qkv = torch.randn(B, N, 3 * C, generator=g).to(device=device, dtype=dtype)
        q, k, v = qkv.view(B, N, 3, C).unbind(2)
    elif layout == "permuted":
        q, k, v = (torch.randn(C, B, N, generator=g).to(device=device, dtype=dtype).permute(1, 2, 0) for _ in range(3))
    else:
        q, k, v = (torch.randn(B, N, C, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    return [t.requires_grad_() for t in (q, k, v)]


def run(backend, q, k, v, groups, grad_out, scale=None, version=1):
    """Output and the gradients of q, k, v."""
    with use_backend(backend):
        out = channel_attention(q, k, v, groups, scale, version)
    return out, list(torch.autograd.grad(out, (q, k, v), grad_out))


def upcast(tensors, dtype=torch.float64):
    """Detached copies in ``dtype`` that require grad (the oracle runs on the same values)."""
    return [t.detach().to(dtype).requires_grad_() for t in tensors]


def assert_rel(actual, expected, tol, what=""):
    """max |actual - expected| <= tol * max(1, max |expected|), computed in float64."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual - expected).abs().max().item()
    bound = tol * max(1.0, expected.abs().max().item())
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"


def check_against_reference(backend, q, k, v, groups, tol, scale=None, version=1, seed=2):
    """Forward and every gradient of ``backend`` against the float64 reference on the same input values."""
    g = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(q.shape, generator=g).to(device=q.device, dtype=q.dtype)
    out, grads = run(backend, q, k, v, groups, grad_out, scale, version)
    assert out.dtype == q.dtype and out.shape == q.shape and out.is_contiguous()
    ref_out, ref_grads = run("reference", *upcast([q, k, v]), groups, grad_out.double(), scale, version)
    assert_rel(out, ref_out, tol, "out")
    for name, grad, ref_grad, t in zip(("dq", "dk", "dv"), grads, ref_grads, (q, k, v)):
        assert grad.dtype == t.dtype and grad.shape == t.shape, name
        assert_rel(grad, ref_grad, tol, name)


# --------------------------------------------------- (a) the reference against independent formulations

def einsum_channel_attention(q, k, v, groups, scale, version):
    """The op's docstring with explicit indices: A[i, j] = softmax_j(scale * sum_n X[n, i] Y[n, j]),
    out[n, i] = sum_j A[i, j] Z[n, j], all groups at once (no per-group slicing, no transposes)."""
    B, N, C = q.shape
    x, y, z = (t.reshape(B, N, groups, C // groups) for t in ((k, v, q) if version == 1 else (q, k, v)))
    attn = (torch.einsum("bngi,bngj->bgij", x, y) * scale).softmax(-1)
    return torch.einsum("bgij,bngj->bngi", attn, z).reshape(B, N, C)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("B,N,C,groups", [(2, 7, 12, 3), (1, 1, 5, 1), (3, 10, 8, 8), (1, 13, 6, 2)])
def test_reference_matches_einsum_formulation(B, N, C, groups, version):
    # Both in float64, differing only in summation order: 1e-12 catches any index or transpose error.
    q, k, v = make_qkv(B, N, C, torch.float64, layout="permuted")
    expected = einsum_channel_attention(q, k, v, groups, 0.3, version)
    assert_rel(channel_attention_reference(q, k, v, groups, 0.3, version), expected, 1e-12)


def _timm_module(version, dim, heads, dynamic_scale=True):
    from timm.models.davit import ChannelAttention, ChannelAttentionV2
    torch.manual_seed(0)
    if version == 1:
        module = ChannelAttention(dim, num_heads=heads, qkv_bias=True)
    else:
        module = ChannelAttentionV2(dim, num_heads=heads, qkv_bias=True, dynamic_scale=dynamic_scale)
    return module.double().eval()


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("version,dynamic_scale", [(1, None), (2, True), (2, False)])
def test_matches_timm_modules(backend, version, dynamic_scale):
    """timm's ChannelAttention / ChannelAttentionV2 are the oracle: same qkv projection, our op in the
    middle (on the three views of the fused projection), same output projection."""
    B, N, dim, heads = 2, 11, 12, 3
    module = _timm_module(version, dim, heads, dynamic_scale)
    x = torch.randn(B, N, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    q, k, v = module.qkv(x).view(B, N, 3, dim).unbind(2)
    # The default scale is timm's default: v1 head_dim ** -0.5; v2 N ** -0.5 (dynamic_scale=True).
    scale = (dim // heads) ** -0.5 if dynamic_scale is False else None
    with use_backend(backend):
        out = module.proj(channel_attention(q, k, v, heads, scale=scale, version=version))
    # float64 on both sides; timm scales k (v1) or q (v2) before the matmul, we scale the product: 1e-12.
    assert_rel(out, module(x), 1e-12)


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("version", [1, 2])
def test_gradcheck(backend, version):
    # 2 groups of 2 channels over 5 tokens: 60 inputs, each perturbed twice (the reference is called per perturbation)
    q, k, v = make_qkv(1, 5, 4, torch.float64, layout="fused")

    def f(q, k, v):
        with use_backend(backend):
            return channel_attention(q, k, v, 2, version=version)

    assert torch.autograd.gradcheck(f, (q, k, v))


# ------------------------------------------------------------------- (b) torch path vs reference, random

@settings(deadline=None, max_examples=100)  # ~3 s on 2 idle cores
@given(
    B=st.integers(1, 3), N=st.integers(1, 70), groups=st.integers(1, 4), d=st.integers(1, 12),
    version=st.sampled_from([1, 2]), scale=st.one_of(st.none(), st.floats(0.01, 2.0)),
    layout=st.sampled_from(["fused", "permuted", "contiguous"]), dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2 ** 16),
)
def test_torch_path_matches_reference(B, N, groups, d, version, scale, layout, dtype, seed):
    # float64: only the summation order differs (1e-10). float32: sums of <= 70 products of O(1) values,
    # scores up to ~2 * 70 before the softmax: fp32 rounding ~1e-5 relative on the logits and hence on A;
    # 5e-5 leaves margin, while a wrong index or transpose gives O(1) errors.
    q, k, v = make_qkv(B, N, groups * d, dtype, layout=layout, seed=seed)
    check_against_reference("torch", q, k, v, groups, 1e-10 if dtype == torch.float64 else 5e-5, scale, version,
                            seed=seed + 1)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("version", [1, 2])
def test_torch_path_half_precision(dtype, tol, version):
    # The torch path keeps the scores, A and both matmul outputs in the input dtype (as timm does under
    # autocast): roundings of 2^-11 (fp16) resp. 2^-8 (bf16) relative each; measured ~1e-3 resp. ~5e-3.
    # fp16 1e-2, bf16 3e-2 (as for Triton below); a layout bug gives O(1).
    q, k, v = make_qkv(2, 30, 16, dtype, layout="fused")
    check_against_reference("torch", q, k, v, 2, tol, version=version)


@pytest.mark.parametrize("version", [1, 2])
def test_torch_path_compiles_without_graph_breaks(version):
    """fullgraph=True raises on any graph break (data-dependent control flow, unsupported calls); the
    ``eager`` backend checks the capture only (~0.5 s), not Inductor's code generation."""
    q, k, v = make_qkv(2, 10, 12)

    def f(q, k, v):
        with use_backend("torch"):
            return channel_attention(q, k, v, 3, version=version)

    out = torch.compile(f, backend="eager", fullgraph=True)(q, k, v)
    out.sum().backward()
    assert torch.equal(out, f(q, k, v))


# ------------------------------------------------------------ (c) Triton (interpreter on CPU) vs reference

TRITON_CASES = [
    # id: (B, N, C, groups, layout)
    pytest.param((2, 37, 15, 3, "fused"), id="N37-C15-g3-d5-fused"),
    pytest.param((1, 70, 48, 2, "permuted"), id="N70-C48-g2-d24-permuted"),
]


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES)
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_matches_reference(case, version, dtype):
    # fp32: fp32 ("ieee") dots accumulating <= 70 products: ~1e-6 relative; 1e-5 as in DESIGN.md.
    # fp16/bf16: the float64 reference runs on the same low-precision values; the kernel computes in fp32
    # (TF32 dots on a GPU: fp16/bf16 operands are exact in TF32, A and dS get TF32's 2^-11 rounding) and
    # rounds outputs and gradients once to the input dtype: 2^-11 (fp16) or 2^-8 (bf16) relative, so
    # 1e-2 (fp16) and 3e-2 (bf16) leave margin. The interpreter's dots are plain fp32.
    B, N, C, groups, layout = case
    q, k, v = make_qkv(B, N, C, dtype, layout=layout, device=TRITON_DEVICE)
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}[dtype]
    check_against_reference("triton", q, k, v, groups, tol, version=version)


@needs_triton
@pytest.mark.parametrize("version", [1, 2])
def test_triton_several_splits_and_tiles(monkeypatch, version):
    """N split across programs (deterministic partial reduction) with several 16-token tiles per split,
    a ragged last split and tile, and an explicit scale."""
    from visionzoo.kernels.channel_attention import triton_kernel
    monkeypatch.setattr(triton_kernel, "tile_sizes", lambda d: (16, max(16, 1 << (d - 1).bit_length()), 4))
    monkeypatch.setattr(triton_kernel, "MIN_TOKENS_PER_SPLIT", 32)
    assert triton_kernel.token_splits(75, 2, 16) == (3, 32)  # splits of 32, 32, 11 tokens
    q, k, v = make_qkv(1, 75, 14, layout="fused", device=TRITON_DEVICE)
    check_against_reference("triton", q, k, v, 2, 1e-5, scale=0.7, version=version)  # fp32, see above


@needs_triton
def test_triton_strided_grad_output_and_partial_grads():
    """dO with arbitrary strides is read through its strides; only the inputs that need a gradient get one."""
    q, k, v = make_qkv(2, 9, 8, device=TRITON_DEVICE, layout="contiguous")
    k.requires_grad_(False)
    grad_out = torch.randn(8, 9, 2, device=TRITON_DEVICE).permute(2, 1, 0)
    with use_backend("triton"):
        out = channel_attention(q, k, v, 2)
    dq, dv = torch.autograd.grad(out, (q, v), grad_out)
    rq, rk, rv = upcast([q, k, v])
    with use_backend("reference"):
        ref = channel_attention(rq, rk, rv, 2)
    ref_dq, ref_dv = torch.autograd.grad(ref, (rq, rv), grad_out.double())
    for a, b in zip((out, dq, dv), (ref, ref_dq, ref_dv)):
        assert_rel(a, b, 1e-5)  # fp32, see test_triton_matches_reference


def test_token_splits():
    pytest.importorskip("triton")
    from visionzoo.kernels.channel_attention import triton_kernel as tk
    # DaViT-T stage 1 (N = 3136, 3 groups of 32, BLOCK_N 64): batch 1 -> 13 splits of 256 tokens (39 programs);
    # batch 256 -> 768 matrices, 2 splits of 1600 tokens (1536 programs).
    assert tk.token_splits(3136, 3, 64) == (13, 256)
    assert tk.token_splits(3136, 768, 64) == (2, 1600)
    assert tk.token_splits(5, 1, 64) == (1, 64)  # never an empty split
    for n, mats in [(1, 1), (300, 7), (10 ** 5, 2), (4097, 4096)]:
        n_splits, per = tk.token_splits(n, mats, 64)
        assert per % 64 == 0 and (n_splits - 1) * per < n <= n_splits * per


# ---------------------------------------------------------------------------------- (d) GPU-only Triton

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 1e-2), (torch.float32, 1e-5)])
def test_triton_davit_stage1_gpu(version, dtype, tol):
    # DaViT-T stage 1 (N = 56 x 56, C = 96, 3 groups of 32), compiled for real: several splits per matrix.
    # Tolerances as in test_triton_matches_reference (the reduction is over 3136 tokens, in fp32).
    q, k, v = make_qkv(2, 3136, 96, dtype, device="cuda")
    check_against_reference("triton", q, k, v, 3, tol, version=version)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("C,groups", [(256, 2), (40, 8)])
def test_triton_head_dims_gpu(C, groups):
    # d = 128 (largest supported: 32-token tiles, 8 warps) and d = 5 (padded to 16); fp32 tolerance as above.
    q, k, v = make_qkv(2, 500, C, device="cuda")
    check_against_reference("triton", q, k, v, groups, 1e-5)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_triton_deterministic_gpu(dtype):
    """No atomics: two runs give bitwise equal outputs and gradients (13 splits per matrix at batch 1)."""
    q, k, v = make_qkv(1, 3136, 96, dtype, device="cuda")
    grad_out = torch.randn(q.shape, device="cuda", dtype=dtype)
    first = run("triton", q, k, v, 3, grad_out)
    second = run("triton", q, k, v, 3, grad_out)
    for a, b in zip([first[0], *first[1]], [second[0], *second[1]]):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------- (e) equivalences



def _device(backend):
    return TRITON_DEVICE if backend == "triton" else "cpu"


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_v2_is_v1_with_roles_permuted(backend):
    # v2(q, k, v) = softmax(s q^T k) applied to v = v1(q'=v, k'=q, v'=k); same sums in the same order.
    q, k, v = make_qkv(2, 21, 12, device=_device(backend))
    with use_backend(backend):
        assert torch.equal(channel_attention(q, k, v, 3, 0.4, version=2), channel_attention(v, q, k, 3, 0.4, version=1))


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("version", [1, 2])
def test_one_channel_per_group_returns_the_applied_operand(backend, version):
    # C_g = 1: A is the 1 x 1 softmax of one score, exactly 1, so out = q (v1) or v (v2), bit for bit.
    q, k, v = make_qkv(1, 9, 6, device=_device(backend))
    with use_backend(backend):
        out = channel_attention(q, k, v, 6, version=version)
    assert torch.equal(out, (q if version == 1 else v).detach())


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("version", [1, 2])
def test_groups_are_independent_and_tokens_permute(backend, version):
    """Each group is its own op on its channel slice; the op commutes with any permutation of the tokens."""
    q, k, v = make_qkv(2, 19, 12, device=_device(backend))
    perm = torch.randperm(19, generator=torch.Generator().manual_seed(3))
    # fixed scale: v2's default N ** -0.5 is the same here (N unchanged) but keep the check explicit
    with use_backend(backend):
        out = channel_attention(q, k, v, 3, 0.3, version)
        sliced = torch.cat([channel_attention(q[..., c:c + 4], k[..., c:c + 4], v[..., c:c + 4], 1, 0.3, version)
                            for c in (0, 4, 8)], dim=-1)
        permuted = channel_attention(q[:, perm], k[:, perm], v[:, perm], 3, 0.3, version)
    # fp32, the same sums (in another order for the permutation): ~1e-7; 1e-5 as in DESIGN.md
    assert_rel(sliced, out, 1e-5)
    assert_rel(permuted, out[:, perm], 1e-5)


# ----------------------------------------------------------------------------------------------- (f) flops

@pytest.mark.parametrize("version", [1, 2])
def test_flops_match_flop_counter(version):
    from torch.utils.flop_counter import FlopCounterMode
    B, N, C, groups = 2, 50, 24, 3
    q, k, v = make_qkv(B, N, C, layout="fused")
    with FlopCounterMode(display=False) as counter, use_backend("torch"):
        channel_attention(q, k, v, groups, version=version)  # the torch path: exactly the two matmuls
    expected = counter.get_total_flops()
    assert channel_attention_flops(q, k, v, groups, version=version) == expected == 4 * B * N * C * (C // groups)
    meta = torch.empty(256, 3136, 96, device="meta")  # DaViT-T stage 1: 38.5 MFLOP per image
    assert channel_attention_flops(meta, meta, meta, 3) == 256 * 38_535_168


# ---------------------------------------------------------------------------- (g) dispatch and validation

@pytest.fixture
def spies(monkeypatch):
    """Replace the three implementations with recorders; returns the list of backends called."""
    calls = []
    for name, attr in (("reference", "channel_attention_reference"), ("torch", "channel_attention_torch")):
        monkeypatch.setattr(ca_module, attr, lambda *a, _n=name: calls.append((_n, *a[3:])) or a[0])
    if triton_runs_here():
        from visionzoo.kernels.channel_attention import triton_kernel
        monkeypatch.setattr(triton_kernel, "channel_attention_triton",
                            lambda *a: calls.append(("triton", *a[3:])) or a[0])
    monkeypatch.delenv("VISIONZOO_KERNEL_BACKEND", raising=False)
    return calls


def test_default_backend_and_default_scales(spies):
    q = torch.randn(1, 16, 12)
    channel_attention(q, q, q, 3)
    channel_attention(q, q, q, 3, version=2)
    channel_attention(q, q, q, 3, scale=2, version=2)
    # CPU -> torch path; v1 default C_g ** -0.5 = 0.5, v2 default N ** -0.5 = 0.25, an explicit scale as float
    assert spies == [("torch", 3, 0.5, 1), ("torch", 3, 0.25, 2), ("torch", 3, 2.0, 2)]


@pytest.mark.parametrize("name", BACKENDS_HERE)
def test_env_var_selects_backend(spies, monkeypatch, name):
    monkeypatch.setenv("VISIONZOO_KERNEL_BACKEND", name)
    q = torch.randn(1, 4, 8)
    channel_attention(q, q, q, 2)
    assert [c[0] for c in spies] == [name]


def test_forced_triton_refuses_float64_and_wide_groups():
    pytest.importorskip("triton")
    q = torch.randn(1, 4, 8, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(ValueError, match="does not support.*float64"):
        channel_attention(q, q, q, 2)
    q = torch.randn(1, 4, 258)
    with use_backend("triton"), pytest.raises(ValueError, match="channels per group 258 > 128"):
        channel_attention(q, q, q, 1)


@pytest.mark.parametrize("make_args,error,match", [
    (lambda q: (q, q, q, 5), ValueError,
     r"groups=5 does not divide the channel count C=12.*allowed groups for C=12: \[1, 2, 3, 4, 6, 12\]"),
    (lambda q: (q, q, q, 24), ValueError, "groups=24 does not divide the channel count C=12"),
    (lambda q: (q, q, q, 0), ValueError, "groups must be a positive int, got 0"),
    (lambda q: (q, q, q, 2.0), ValueError, "groups must be a positive int, got 2.0"),
    (lambda q: (q, q, q, True), ValueError, "groups must be a positive int, got True"),
    (lambda q: (q, q, q, 3, None, 3), ValueError, r"version must be 1 \(DaViT\) or 2 \(Florence-2\), got 3"),
    (lambda q: (q, q, q, 3, None, True), ValueError, "version must be .*got True"),
    (lambda q: (q, q, q, 3, torch.tensor(0.5)), TypeError, "scale must be None or a finite Python number"),
    (lambda q: (q, q, q, 3, float("nan")), TypeError, "scale must be None or a finite Python number, got nan"),
    (lambda q: (q[0], q[0], q[0], 3), ValueError, r"q must be \(B, N, C\), got a 2-D tensor"),
    (lambda q: (q, q[:, :3], q, 3), ValueError, "q, k, v must have the same shape"),
    (lambda q: (q.long(), q.long(), q.long(), 3), TypeError, "must be a floating point tensor, got torch.int64"),
    (lambda q: (q, q.double(), q, 3), ValueError, "q, k, v must share dtype and device"),
    (lambda q: (q[:, :0], q[:, :0], q[:, :0], 3), ValueError, "must not be empty"),
    (lambda q: ("q", q, q, 3), TypeError, "q must be a torch.Tensor, got str"),
])
def test_bad_inputs(make_args, error, match):
    q = torch.randn(2, 5, 12)
    with pytest.raises(error, match=match):
        channel_attention(*make_args(q))
    with pytest.raises(error, match=match):  # the FLOP count validates the same way
        channel_attention_flops(*make_args(q))
