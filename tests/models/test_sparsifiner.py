"""Sparsifiner against the official code (lim142857/Sparsifiner@9a11e2639c350b99bca3fa3f9d5ce9616505ca71) and against
timm's DeiT (its backbone).

Parity fixture ``tests/fixtures/sparsifiner_parity.safetensors`` (740 KB): the official ``Sparsifiner`` class
(``src/models/sparsifiner.py``) built as ``src/main.py`` builds it, with the official default config
(``sparsifiner_default_config.yaml`` merged into ``config/default_config.py``: keep rate 0.25, basis threshold 2e-2,
basis top-8, reduce_c_factor 2, no token pruning) in a reduced configuration: embed 32, depth 2, 2 heads, mlp 4,
10 classes, ``reduce_n_factor=3`` (so that n_down > 8 and the coefficient top-k selects); two models:

* ``a``: img_size 112 (N = 50, n_down = 16, K = 13), ``proj_back_n`` drawn with std 0.01, so that most of the
  thresholded basis is 0 and many keys score exactly 0: 28 of 98 (layer 0) and 9 of 98 (layer 1) query rows have a
  tie that straddles the top-k boundary (the official selection keeps some of the tied keys and drops others);
* ``b``: img_size (80, 112), non-square (the official patch embedding takes a tuple; its ``proj_n`` then has
  5 * 7 + 1 rows), ``proj_back_n`` std 0.03 (no boundary ties).

Every tensor of the state dicts is redrawn from ``torch.Generator().manual_seed(0)`` (LayerNorm weights 1 + 0.1 N(0,1),
``proj_back_n`` as above, everything else 0.1 N(0,1)); one input per model (randn from the same generator); saved:
``{a,b}.state.<official key>``, ``{a,b}.input``, ``{a,b}.logits`` (the official ``out['x']`` in eval mode) and
``{a,b}.approx.<layer>`` (the official ``approx_attn_list``). The official code ran with this repository's torch
(2.14.1) and timm (its ``timm.models.layers`` imports still resolve), plus ``yacs`` 0.1.8, in a throwaway venv.

**Ties**: the tied keys break the same way as in the official code because the model computes the scores in the
official order and layout and selects with ``torch.topk(sorted=False)`` over the same (B, heads, N - 1, N) tensor
(see ``models/sparsifiner.py``); the approximate attention is compared exactly (rtol 0, atol 1e-6) and the logits
to < 1e-4, so one key selected differently (which moves the logits by ~1e-2 here) fails the test.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open

from visionzoo.models.sparsifiner import checkpoint_filter_fn

from ..conftest import meta_model, meta_param_count

FIXTURE = Path(__file__).parent.parent / "fixtures" / "sparsifiner_parity.safetensors"
LVVIT_FIXTURE = Path(__file__).parent.parent / "fixtures" / "sparsifiner_lvvit_parity.safetensors"

# param-counts.md, lim142857/Sparsifiner@9a11e26, num_classes 1000 (DeiT-B: the same construction, not shipped)
OFFICIAL_PARAMS = {"vz_sparsifiner_deit_small": 22_251_880, "vz_sparsifiner_deit_base": 86_768_872,
                   "vz_sparsifiner_lvvit_small": 26_420_112}
BACKBONE_PARAMS = {"vz_sparsifiner_deit_small": 22_050_664, "vz_sparsifiner_deit_base": 86_567_656,
                   "vz_sparsifiner_lvvit_small": 26_151_824}
DEPTH = {"vz_sparsifiner_deit_small": 12, "vz_sparsifiner_deit_base": 12, "vz_sparsifiner_lvvit_small": 16}
TIMM_DEIT = {"vz_sparsifiner_deit_small": "deit_small_patch16_224", "vz_sparsifiner_deit_base": "deit_base_patch16_224"}
ALL_VARIANTS = timm.list_models("vz_sparsifiner_*")


def _fixture(tag: str, path: Path = FIXTURE):
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k[len(tag) + 1:]: f.get_tensor(k) for k in f.keys() if k.startswith(tag + ".")}
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return meta, state, tensors


def _official_reduced(img_size, meta):
    return timm.create_model("vz_sparsifiner_deit_small", img_size=img_size, embed_dim=int(meta["embed_dim"]),
                             depth=int(meta["depth"]), num_heads=int(meta["num_heads"]),
                             mlp_ratio=float(meta["mlp_ratio"]), num_classes=int(meta["num_classes"]),
                             reduce_n_factor=int(meta["reduce_n_factor"]),
                             reduce_c_factor=int(meta["reduce_c_factor"])).eval()


def _official_keys(name: str) -> dict:
    """The official Sparsifiner state-dict layout (param-counts.md): timm's DeiT keys plus, per block,
    ``attn.mask_predictor.{proj_c_q, proj_c_k}`` Linear(head_dim -> head_dim / 2) and ``proj_n`` / ``proj_back_n``
    (197, 197 // 6)."""
    with torch.device("meta"):
        deit = timm.create_model(TIMM_DEIT[name])
    state = dict(deit.state_dict())
    head_dim = deit.embed_dim // deit.blocks[0].attn.num_heads
    for i in range(len(deit.blocks)):
        p = f"blocks.{i}.attn.mask_predictor."
        for proj in ("proj_c_q", "proj_c_k"):
            state[p + proj + ".weight"] = torch.empty(head_dim // 2, head_dim, device="meta")
            state[p + proj + ".bias"] = torch.empty(head_dim // 2, device="meta")
        state[p + "proj_n"] = torch.empty(197, 197 // 6, device="meta")
        state[p + "proj_back_n"] = torch.empty(197, 197 // 6, device="meta")
    return state


def test_variants_registered():
    assert set(ALL_VARIANTS) == set(OFFICIAL_PARAMS)


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_parameter_count_is_official(name):
    model = meta_model(name)
    assert meta_param_count(name) == OFFICIAL_PARAMS[name]
    predictor = sum(p.numel() for n, p in model.named_parameters() if ".mask_predictor." in n)
    assert predictor == DEPTH[name] * 16_768  # proj_c_q, proj_c_k Linear(64 -> 32) + proj_n, proj_back_n (197, 32)
    assert OFFICIAL_PARAMS[name] - predictor == BACKBONE_PARAMS[name]


def _lvvit_official_keys() -> dict:
    """The official SparsifinerLVViT layout (param-counts.md: 300 keys, 9 buffers): LV-ViT's release keys
    (``patch_embed.{conv1,bn1,conv2,bn2,conv3,bn3,proj}``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
    mlp.fc2}``, ``norm``, ``head``, ``aux_head``, ``cls_token``, ``pos_embed``) plus the predictors, written out."""
    meta = lambda *shape: torch.empty(*shape, device="meta")  # noqa: E731
    state = {"cls_token": meta(1, 1, 384), "pos_embed": meta(1, 197, 384), "patch_embed.conv1.weight": meta(64, 3, 7, 7),
             "patch_embed.proj.weight": meta(384, 64, 8, 8), "patch_embed.proj.bias": meta(384),
             "norm.weight": meta(384), "norm.bias": meta(384), "head.weight": meta(1000, 384), "head.bias": meta(1000),
             "aux_head.weight": meta(1000, 384), "aux_head.bias": meta(1000)}
    for c in (2, 3):
        state[f"patch_embed.conv{c}.weight"] = meta(64, 64, 3, 3)
    for c in (1, 2, 3):
        for t in ("weight", "bias", "running_mean", "running_var"):
            state[f"patch_embed.bn{c}.{t}"] = meta(64)
        state[f"patch_embed.bn{c}.num_batches_tracked"] = torch.empty((), dtype=torch.long, device="meta")
    for i in range(16):
        b = f"blocks.{i}."
        state.update({b + "norm1.weight": meta(384), b + "norm1.bias": meta(384), b + "attn.qkv.weight": meta(1152, 384),
                      b + "attn.proj.weight": meta(384, 384), b + "attn.proj.bias": meta(384),
                      b + "norm2.weight": meta(384), b + "norm2.bias": meta(384), b + "mlp.fc1.weight": meta(1152, 384),
                      b + "mlp.fc1.bias": meta(1152), b + "mlp.fc2.weight": meta(384, 1152), b + "mlp.fc2.bias": meta(384)})
        p = b + "attn.mask_predictor."
        for proj in ("proj_c_q", "proj_c_k"):
            state[p + proj + ".weight"], state[p + proj + ".bias"] = meta(32, 64), meta(32)
        state[p + "proj_n"], state[p + "proj_back_n"] = meta(197, 32), meta(197, 32)
    return state


def test_lvvit_official_layout_maps():
    ours = meta_model("vz_sparsifiner_lvvit_small")
    official = _lvvit_official_keys()
    assert len(official) == 300
    expected = ours.state_dict()
    mapped = checkpoint_filter_fn(official, ours)
    assert set(mapped) == set(expected) and all(mapped[k].shape == expected[k].shape for k in expected)
    backbone = {k: v for k, v in official.items() if ".mask_predictor." not in k}  # the LV-ViT-S release
    assert set(checkpoint_filter_fn(backbone, ours)) == set(expected)


def test_lvvit_parity_with_official_code():
    """Fixture ``c`` (``sparsifiner_lvvit_parity.safetensors``, 770 KB): the official ``SparsifinerLVViT``
    (``src/models/sparsifiner_lvvit.py``, built as ``main.py --model sparsifiner_lvvit`` with the default config)
    reduced to embed 16, depth 2, 2 heads, mlp 3, 10 classes, img 96, ``reduce_n_factor=3``; every tensor redrawn
    from ``torch.Generator().manual_seed(1)`` (BN running variances in [0.5, 1.5), conv stem He-scaled,
    ``proj_back_n`` std 0.01, the rest as fixture ``a``); the official eval output ``cls logits + 0.5 * max of the
    token-labeling logits``."""
    meta, state, tensors = _fixture("c", LVVIT_FIXTURE)
    model = timm.create_model("vz_sparsifiner_lvvit_small", img_size=96, embed_dim=16, depth=2, num_heads=2,
                              num_classes=10, reduce_n_factor=3).eval()
    model.load_state_dict(checkpoint_filter_fn(state, model), strict=True)
    with torch.no_grad():
        out = model.forward_train(tensors["input"])
        logits = model(tensors["input"])
    for i, approx in enumerate(out["attn"]):
        torch.testing.assert_close(approx, tensors[f"approx.{i}"], rtol=0, atol=1e-6)
    diff = (logits - tensors["logits"]).abs().max().item()
    assert diff < 1e-4, diff
    assert out["aux_logits"].shape == (1, 36, 10)


@pytest.mark.parametrize("name", ["vz_sparsifiner_deit_small", "vz_sparsifiner_deit_base"])
def test_official_and_deit_layouts_map_onto_every_variant(name):
    """The official layout maps key for key (same names, same shapes); timm's DeiT (the official initialisation)
    maps onto the backbone and leaves exactly the predictors at their initial values."""
    ours = meta_model(name)
    expected = ours.state_dict()
    official = _official_keys(name)
    mapped = checkpoint_filter_fn({"model": official}, ours)
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)
    deit = {k: v for k, v in official.items() if ".mask_predictor." not in k}
    mapped = checkpoint_filter_fn(deit, ours)
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)


def test_missing_predictor_part_is_refused():
    ours = meta_model("vz_sparsifiner_deit_small")
    official = _official_keys("vz_sparsifiner_deit_small")
    official.pop("blocks.3.attn.mask_predictor.proj_n")
    with pytest.raises(ValueError, match="missing keys: blocks.3.attn.mask_predictor.proj_n"):
        checkpoint_filter_fn(official, ours)


@pytest.mark.parametrize("tag, size", [("a", (112, 112)), ("b", (80, 112))])
def test_parity_with_official_code(tag, size):
    """The official model's outputs (eval, fp32) from its own state dict, loaded strictly through the filter."""
    meta, state, tensors = _fixture(tag)
    model = _official_reduced(size, meta)
    model.load_state_dict(checkpoint_filter_fn({"model": state}, model), strict=True)
    x = tensors["input"]
    assert tuple(x.shape[2:]) == size
    with torch.no_grad():
        out = model.forward_train(x)
    for i, approx in enumerate(out["attn"]):
        torch.testing.assert_close(approx, tensors[f"approx.{i}"], rtol=0, atol=1e-6)
    diff = (out["logits"] - tensors["logits"]).abs().max().item()
    assert diff < 1e-4, diff


def test_fixture_has_ties_at_the_boundary():
    """Fixture ``a`` exercises tie-breaking: in many rows the K-th score is shared by kept and dropped keys."""
    meta, state, tensors = _fixture("a")
    approx = tensors["approx.0"]
    K = math.ceil(0.25 * approx.shape[-1])
    kth = approx.topk(K, dim=-1).values[..., -1:]
    assert ((approx == kth).sum(-1) > 1).sum() >= 10


SMALL = dict(embed_dim=64, depth=4, num_heads=2, num_classes=10)  # a narrow DeiT-S at its 224 training size


def small_model(**kwargs):
    return timm.create_model("vz_sparsifiner_deit_small", **{**SMALL, **kwargs})


def _reduced_deit(seed: int = 0):
    """timm's DeiT-S class, narrow, every tensor redrawn."""
    deit = timm.create_model("deit_small_patch16_224", **SMALL).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in deit.state_dict().items():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if "norm" in k and k.endswith("weight") else 0.0))
    return deit


def test_deit_backbone_initialises_and_keep_rate_one_is_deit():
    """timm's ``deit_small_patch16_224`` layout loads as the backbone (predictors keep their init); at keep rate 1
    every query sees every key, so the model is exactly DeiT."""
    deit = _reduced_deit()
    model = small_model(attn_keep_rate=1.0).eval()
    init = {k: v.clone() for k, v in model.state_dict().items() if ".mask_predictor." in k}
    model.load_state_dict(checkpoint_filter_fn(deit.state_dict(), model), strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in init.items())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), deit(x), atol=1e-5, rtol=1e-5)


def test_attn_recon_phase_is_dense_in_training():
    """The official attention-reconstruction phase: dense attention in training (the logits are DeiT's), the
    approximate attention from the raw basis, and the predictor gets gradients from it."""
    deit = _reduced_deit()
    model = small_model()
    model.load_state_dict(checkpoint_filter_fn(deit.state_dict(), model), strict=True)
    model.set_attn_recon(True)
    model.train()
    x = torch.randn(2, 3, 224, 224)
    out = model.forward_train(x)
    torch.testing.assert_close(out["logits"], deit(x), atol=1e-5, rtol=1e-5)
    assert out["tokens"].shape == (2, 196, 64)
    assert [a.shape for a in out["attn"]] == [(2, 2, 196, 197)] * 4
    sum(a.square().mean() for a in out["attn"]).backward()
    pred = [p for n, p in model.named_parameters() if ".mask_predictor." in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pred)


def test_sparse_selection_budget():
    """Each patch query keeps ceil(0.25 N) keys, and the attention equals the official masked dense attention."""
    from visionzoo.models.sparsifiner import SparsifinerAttention

    torch.manual_seed(0)
    attn = SparsifinerAttention(64, 2, (14, 14)).eval()
    x = torch.randn(2, 197, 64)
    with torch.no_grad():
        out, approx = attn(x, (14, 14))
        q, k, v = attn.qkv(x).view(2, 197, 3, 2, 32).permute(2, 0, 3, 1, 4)
        index = approx.topk(math.ceil(0.25 * 197), dim=-1).indices
        mask = torch.zeros(2, 2, 196, 197, dtype=torch.bool).scatter_(-1, index, True)
        mask = torch.cat([torch.ones(2, 2, 1, 197, dtype=torch.bool), mask], dim=2)
        scores = (q @ k.transpose(-2, -1)) * 32 ** -0.5
        ref = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
        ref = attn.proj(ref.transpose(1, 2).reshape(2, 197, 64))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(384, 384), (160, 288)])
def test_other_resolutions_resample_like_set_input_size(size):
    """At another input size the position embedding and the predictor's token projections are resampled on the
    fly (n_down stays as trained); ``set_input_size`` resamples the parameters once, the same way, so the outputs
    agree. At the training size nothing is resampled."""
    torch.manual_seed(0)
    tiny = dict(embed_dim=32, depth=2, num_heads=1)
    model = small_model(**tiny).eval()
    resized = small_model(**tiny).eval()
    resized.load_state_dict(model.state_dict())
    resized.set_input_size(size)
    grid = (size[0] // 16, size[1] // 16)
    proj_n = resized.blocks[0].attn.mask_predictor.proj_n
    assert proj_n.shape == (grid[0] * grid[1] + 1, 32) and resized.pos_embed.shape == (1, grid[0] * grid[1] + 1, 32)
    # proj_n keeps its mass: patch rows scaled by (training patches / input patches)
    src = model.blocks[0].attn.mask_predictor.proj_n
    torch.testing.assert_close(proj_n[1:].sum(0), src[1:].sum(0), atol=0.05, rtol=0.05)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), resized(x), atol=1e-5, rtol=1e-5)
        assert model.forward_features(x).shape == (1, grid[0] * grid[1] + 1, 32)
    # the training-size weights load into the resized model through the filter (which resamples the same way)
    again = small_model(**tiny).eval()
    again.set_input_size(size)
    again.load_state_dict(checkpoint_filter_fn(model.state_dict(), again), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(again(x), resized(x), atol=1e-5, rtol=1e-5)


def test_model_built_at_another_size_is_another_architecture():
    """The official construction ties n_down to N: DeiT-S built for 384 has (577, 96) projections, so 224 weights
    do not fit it (use ``set_input_size`` or just feed 384 inputs to the 224 model)."""
    ours = meta_model("vz_sparsifiner_deit_small", img_size=384)
    assert ours.blocks[0].attn.mask_predictor.proj_n.shape == (577, 96)
    with pytest.raises(ValueError, match="shape mismatch"):
        checkpoint_filter_fn(_official_keys("vz_sparsifiner_deit_small"), ours)


def test_bad_configurations():
    with pytest.raises(ValueError, match="basis_topk=8 must be in"):
        small_model(img_size=64, reduce_n_factor=6)  # n_down = 17 // 6 = 2
    with pytest.raises(ValueError, match="attn_keep_rate"):
        small_model(attn_keep_rate=0.0)


def test_dense_hook_takes_mmseg_vit_blocks():
    """The det/seg hook returns blocks 2, 5, 8, 11 (mmseg's ViT-UperNet) of the 12-block models, all at stride 16."""
    from visionzoo.models.sparsifiner import Sparsifiner

    hook = Sparsifiner.dense_hook
    info = meta_model("vz_sparsifiner_deit_small").feature_info
    assert hook.levels("vz_sparsifiner_deit_small", info) == [2, 5, 8, 11]
    assert hook.out_strides(info, [2, 5, 8, 11]) == [16] * 4
    assert hook.levels("reduced", info[:4]) == [0, 1, 2, 3]


def test_masked_dense_option_gives_the_same_model():
    """``attn_impl="masked_dense"`` (SDPA over the full scores, the selection as a mask) computes the same function."""
    torch.manual_seed(0)
    model = small_model().eval()
    dense = small_model(attn_impl="masked_dense").eval()
    dense.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attn_impl"):
        small_model(attn_impl="flash")
