"""The det/seg hook (models/_dense.py), on toy families built from reduced real models: official output-norm key
names, extra modules with a custom forward, and a plain ViT whose single-stride blocks feed mmseg's MultiLevelNeck.

The toy models are registered under names that do not start with ``vz_`` (so the zoo's own tests never see them);
each is a real model whose class gains a ``dense_hook``, exactly as a family declares one.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from timm.models import VisionTransformer, register_model

from visionzoo.models import family_of
from visionzoo.models._dense import DenseHook, ViTDenseHook

from ..conftest import CONTRACT_MODELS, reduced_model
from .conftest import REPO, build_model, load_config, require_mm, seg_batch

require_mm()

from visionzoo.mm import VisionZooBackbone  # noqa: E402

SUBJECT = CONTRACT_MODELS[0]


def _with_hook(model: nn.Module, hook: DenseHook) -> nn.Module:
    """The same model, its class extended by a ``dense_hook`` (same module: the family's checkpoint filter applies)."""
    cls = type(model)
    model.__class__ = type(f"Hooked{cls.__name__}", (cls,), {"dense_hook": hook, "__module__": cls.__module__})
    return model


class ContextHook(DenseHook):
    """Like OverLoCK's det/seg backbone: an extra module (a 1x1 projection of the last map) added back to it."""

    def extra_modules(self, model, out_indices):
        width = model.feature_info[-1]["num_chs"]
        return nn.ModuleDict({"ctx_proj": nn.Conv2d(width, width, 1)})

    def features(self, model, extras, x, levels):
        feats = super().features(model, extras, x, levels)
        return feats[:-1] + [feats[-1] + extras["ctx_proj"](feats[-1])]


@register_model
def hooktest_official_norms(pretrained=False, **kwargs):
    return _with_hook(reduced_model(SUBJECT, **kwargs), DenseHook(norm_eps=1e-5, official_norm_key="extra_norms.{i}"))


@register_model
def hooktest_context(pretrained=False, **kwargs):
    return _with_hook(reduced_model(SUBJECT, **kwargs), ContextHook())


@register_model
def hooktest_vit(pretrained=False, **kwargs):
    kwargs = {k: v for k, v in kwargs.items() if k in ("drop_path_rate", "num_classes", "in_chans", "global_pool")}
    model = VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=6, num_heads=2,
                              dynamic_img_size=True, **kwargs)
    return _with_hook(model, ViTDenseHook((1, 3, 4, 5)))


def test_official_det_checkpoint_keys_load_through_the_hook(tmp_path):
    """The backbone part of an official det checkpoint (classification keys + ``extra_norms.{i}``) loads, every key."""
    source = hooktest_official_norms()
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()
             if not k.startswith(source.pretrained_cfg.get("classifier", "head") + ".")}
    norms = {}
    for i, width in enumerate(VisionZooBackbone("hooktest_official_norms").out_channels):
        norms[f"extra_norms.{i}.weight"], norms[f"extra_norms.{i}.bias"] = torch.rand(width), torch.rand(width)
    state.update({f"backbone.{k}": v for k, v in norms.items()})
    state["neck.lateral.weight"] = torch.zeros(3)
    path = tmp_path / "official_det.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": state}, path)

    backbone = VisionZooBackbone("hooktest_official_norms", init_cfg=dict(type="Pretrained", checkpoint=str(path),
                                                                          prefix="backbone."))
    backbone.init_weights()
    assert backbone.init_report["new"] == []
    for i in range(4):
        norm = backbone.out_norms[str(i)]
        assert torch.equal(norm.weight, norms[f"extra_norms.{i}.weight"]) and norm.eps == 1e-5
    for k, v in source.state_dict().items():
        if f"model.{k}" in backbone.state_dict():
            assert torch.equal(backbone.state_dict()[f"model.{k}"], v), k


def test_extra_modules_train_and_round_trip(tmp_path):
    backbone = VisionZooBackbone("hooktest_context", out_indices=(1, 3))
    assert "extras.ctx_proj.weight" in backbone.state_dict()
    outs = backbone(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == backbone.out_channels
    sum(o.mean() for o in outs).backward()
    assert backbone.extras["ctx_proj"].weight.grad is not None
    assert not [n for n, p in backbone.named_parameters() if p.grad is None]

    # our own detector layout (model.* + out_norms.* + extras.*) loads back, extras included
    with torch.no_grad():
        backbone.extras["ctx_proj"].weight.normal_()
    path = tmp_path / "det.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, path)
    again = VisionZooBackbone("hooktest_context", out_indices=(1, 3),
                              init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    again.init_weights()
    assert again.init_report["new"] == []
    assert torch.equal(again.extras["ctx_proj"].weight, backbone.extras["ctx_proj"].weight)


def test_plain_vit_blocks_and_freezing():
    backbone = VisionZooBackbone("hooktest_vit", frozen_stages=2)
    x = torch.randn(2, 3, 80, 96)
    outs = backbone.train()(x)
    assert [tuple(o.shape) for o in outs] == [(2, 32, 5, 6)] * 4  # four blocks, all at stride 16
    sum(o.mean() for o in outs).backward()
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    # frozen_stages=2: the patch embedding and blocks up to the second output's block (blocks 0-3) are frozen
    assert "model.patch_embed.proj.weight" in frozen and "model.blocks.3.mlp.fc1.weight" in frozen
    assert "model.blocks.4.mlp.fc1.weight" not in frozen and "out_norms.0.weight" in frozen
    assert len(VisionZooBackbone("hooktest_vit", out_indices=(0, 1)).model.blocks) == 4  # blocks after 3 pruned
    with pytest.raises(ValueError, match=r"out_indices must be distinct output indices in 0\.\.3"):
        VisionZooBackbone("hooktest_vit", out_indices=(4,))


def test_plain_vit_in_mmseg_upernet_with_multilevel_neck():
    """mmseg's own ViT-UperNet wiring (MultiLevelNeck turns the four stride-16 maps into a pyramid)."""
    seg_config = next(c for c in family_of(SUBJECT).smoke_configs if c.startswith("mmseg/"))
    cfg = load_config(REPO / "configs" / seg_config)
    cfg.model.backbone = dict(type="VisionZooBackbone", model_name="hooktest_vit")
    # as in mmseg's configs/_base_/models/upernet_vit-b16_ln_mln.py
    cfg.model.neck = dict(type="MultiLevelNeck", in_channels=[32] * 4, out_channels=32, scales=[4, 2, 1, 0.5])
    cfg.model.decode_head.update(in_channels=[32] * 4, channels=16)
    cfg.model.auxiliary_head.update(in_channels=32, channels=16)
    cfg.model.data_preprocessor.size = (64, 64)
    model = build_model(cfg.model, "mmseg").train()
    loss, _ = model.parse_losses(model(**seg_batch(model, (64, 64)), mode="loss"))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.backbone.parameters())
