"""Isotropic NAT / DiNAT and ViT-rpb against the official code (``classification/isotropic.py``).

Parity fixture ``tests/fixtures/dinat_isotropic_official.safetensors``: the official ``NATIsotropic`` reduced to 2
layers of width 32 (2 heads, MLP ratio 2, 10 classes; the configuration is in the file's metadata), once with
``NATransformerLayer`` (k = 7, dilations 1 and 2, so k * d = 14 is the map side at 224) and once with
``VisionTransformerLayer`` (ViT-rpb), run at SHI-Labs/Neighborhood-Attention-Transformer@d334f5bb0bd73cad05e5aeaf7c14cce3876a9650
with the brute-force legacy-NATTEN stand-in described in ``tests/models/test_dinat.py`` (same recipe: parameters
redrawn and rounded to fp16 values, stored as fp16; the uint8 input mapped by ``x / 64 - 2``). The official code only
runs 224x224 (its forward reshapes the tokens to 14x14), so that is the only size. ViT-rpb's
``relative_position_index`` buffer is stored once (int16; it is the same in every layer).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from visionzoo.kernels import use_backend
from visionzoo.layers import relative_position_index
from visionzoo.models.dinat_isotropic import FAMILY, checkpoint_filter_fn, rel_pos_table_for

from ..conftest import meta_model, meta_param_count

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dinat_isotropic_official.safetensors"

OFFICIAL_PARAMS = {  # shared/anchors/param-counts.md
    "vz_nat_isotropic_small": 21_999_736, "vz_dinat_isotropic_small": 21_999_736, "vz_vitrpb_small": 22_080_376,
    "vz_nat_isotropic_base": 86_465_800, "vz_dinat_isotropic_base": 86_465_800, "vz_vitrpb_base": 86_627_080,
}
ALL_VARIANTS = timm.list_models("vz_*", module="dinat_isotropic")
_ARCH = {"small": (384, 12), "base": (768, 24)}


def official_layout(embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, table: int, num_classes: int,
                    vitrpb: bool, kernel_size: int = 7):
    """Key -> shape of an official isotropic state dict (``layers.{i}``; ViT-rpb adds the index buffer)."""
    C, hidden = embed_dim, int(embed_dim * mlp_ratio)
    s = {"patch_embed.proj.weight": (C, 3, 16, 16), "patch_embed.proj.bias": (C,),
         "patch_embed.norm.weight": (C,), "patch_embed.norm.bias": (C,)}
    rpb = (num_heads, 2 * table - 1, 2 * table - 1) if vitrpb else (num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1)
    for i in range(depth):
        b = f"layers.{i}."
        s.update({b + "norm1.weight": (C,), b + "norm1.bias": (C,), b + "attn.qkv.weight": (3 * C, C),
                  b + "attn.qkv.bias": (3 * C,), b + "attn.rpb": rpb, b + "attn.proj.weight": (C, C),
                  b + "attn.proj.bias": (C,), b + "norm2.weight": (C,), b + "norm2.bias": (C,),
                  b + "mlp.fc1.weight": (hidden, C), b + "mlp.fc1.bias": (hidden,), b + "mlp.fc2.weight": (C, hidden),
                  b + "mlp.fc2.bias": (C,)})
        if vitrpb:
            s[b + "attn.relative_position_index"] = (table ** 2, table ** 2)
    s.update({"norm.weight": (C,), "norm.bias": (C,), "head.weight": (num_classes, C), "head.bias": (num_classes,)})
    return s


def _fixture():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(FIXTURE))
    index = tensors.pop("vitrpb.state.layers.0.attn.relative_position_index").long()
    cfg = json.loads(meta["iso"])
    for i in range(cfg["depth"]):
        tensors[f"vitrpb.state.layers.{i}.attn.relative_position_index"] = index
    return tensors, meta


def _state(tensors, prefix):
    return {k[len(prefix):]: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()
            if k.startswith(prefix)}


def test_variants_registered():
    assert set(OFFICIAL_PARAMS) == set(ALL_VARIANTS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_and_official_keys(name):
    """Exact official count; the official layout (which holds that count) maps onto the model, nothing left over."""
    assert meta_param_count(name) == OFFICIAL_PARAMS[name]
    size = name.rsplit("_", 1)[1]
    dim, heads = _ARCH[size]
    layout = official_layout(dim, 12, heads, 4.0, 14, 1000, vitrpb="vitrpb" in name)
    params = {k: s for k, s in layout.items() if not k.endswith("relative_position_index")}
    assert sum(torch.Size(s).numel() for s in params.values()) == OFFICIAL_PARAMS[name]
    ours = meta_model(name)
    mapped = checkpoint_filter_fn({k: torch.empty(s, device="meta") for k, s in layout.items()}, ours)
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in ours.state_dict().items()}


def test_layout_matches_the_official_files():
    tensors, meta = _fixture()
    cfg = json.loads(meta["iso"])
    for name, vitrpb in (("iso", False), ("vitrpb", True)):
        state = _state(tensors, f"{name}.state.")
        layout = official_layout(cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["mlp_ratio"],
                                 cfg["img_size"] // cfg["patch_size"], int(meta["num_classes"]), vitrpb)
        assert {k: tuple(v.shape) for k, v in state.items()} == layout


@pytest.mark.parametrize("arch", ["iso", "vitrpb"])
def test_logits_match_official(arch, tmp_path):
    tensors, meta = _fixture()
    cfg = json.loads(meta["iso"])
    num_classes = int(meta["num_classes"])
    path = tmp_path / "official.pth"
    torch.save(_state(tensors, f"{arch}.state."), path)
    name = "vz_dinat_isotropic_small" if arch == "iso" else "vz_vitrpb_small"
    model = timm.create_model(name, pretrained=True, num_classes=num_classes, embed_dim=cfg["embed_dim"],
                              depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=num_classes)).eval()
    x = tensors["input.x224"].float() / 64 - 2
    with torch.no_grad():
        got = model(x)
    expected = tensors[f"{arch}.logits.x224"]
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max() < 1e-4  # fp32, the same maths in another order


def test_official_index_is_key_minus_query():
    """The official buffer (query minus key, flipped along both axes) is our key-minus-query index."""
    tensors, _ = _fixture()
    assert torch.equal(tensors["vitrpb.state.layers.0.attn.relative_position_index"], relative_position_index((14, 14)))


def test_vitrpb_table_for_other_sizes():
    table = torch.randn(2, 27, 27)
    assert torch.equal(rel_pos_table_for(table, 14, 14), table)
    assert torch.equal(rel_pos_table_for(table, 5, 9), table[:, 9:18, 5:22])
    big = rel_pos_table_for(table, 20, 9)
    assert big.shape == (2, 39, 17)
    model = timm.create_model("vz_vitrpb_small", **FAMILY.reduced_kwargs(kernel_size=7)).eval()
    x = torch.randn(1, 3, 330, 150)  # 21x10 tokens: taller than the 14x14 table, narrower
    with torch.no_grad():
        fast = model(x)
        with use_backend("reference"):
            ref = model(x)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)


def test_minimum_input_and_padding():
    model = timm.create_model("vz_dinat_isotropic_small", **FAMILY.reduced).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 40)).shape == (1, 2 * 3, 32)  # 40 px padded to 48
    with pytest.raises(ValueError, match="smaller than the minimum 32x32"):
        model(torch.randn(1, 3, 31, 64))
