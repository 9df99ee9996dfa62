"""Real mmdet / mmseg models from each family's smoke configs (FAMILY.smoke_configs), with the family's reduced
backbone (FAMILY.reduced): the config's init_cfg loading a classification checkpoint, a training step (loss +
backward) and a predict step on a fake batch at a reduced input size, on CPU."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from visionzoo.models import FAMILIES

from ..conftest import FAMILY_NAMES, reduced_model
from .conftest import (REPO, build_model, det_batch, has_mask_head, load_config, require_mm, scope_of, seg_batch,
                       set_backbone_channels)

require_mm()

SMOKE = [(name, REPO / "configs" / path) for name in FAMILY_NAMES for path in FAMILIES[name].smoke_configs]


@pytest.mark.parametrize("family_name, path", SMOKE, ids=[str(p.relative_to(REPO / "configs")) for _, p in SMOKE])
def test_train_step_and_predict(family_name, path, tmp_path):
    family = FAMILIES[family_name]
    cfg = load_config(path)
    backbone_cfg = cfg.model.backbone
    backbone_cfg.update(family.reduced_kwargs())
    # the config's init_cfg, pointed at a local classification checkpoint of the reduced model
    classifier_state = reduced_model(backbone_cfg.model_name).state_dict()
    save_file(classifier_state, str(tmp_path / "classifier.safetensors"))
    backbone_cfg.init_cfg = dict(type="Pretrained", checkpoint=str(tmp_path / "classifier.safetensors"))
    backbone_cfg.frozen_stages = 1  # freezing inside a real detector / segmentor
    with torch.device("meta"):
        channels = build_model(backbone_cfg, scope_of(path)).out_channels
    set_backbone_channels(cfg.model, channels)
    is_seg = scope_of(path) == "mmseg"
    if is_seg:
        cfg.model.data_preprocessor.size = (128, 128)  # reduced from the crop size
    elif "rcnn" in cfg.model.test_cfg:  # realistic heads; random weights give scores below the default thresholds
        cfg.model.test_cfg.rcnn.score_thr = 0.0
    else:
        cfg.model.test_cfg.score_thr = 0.0
    model = build_model(cfg.model, scope_of(path))
    model.init_weights()  # mmengine's recursive init: the backbone loads its checkpoint itself
    backbone_state = model.backbone.state_dict()
    inner = [k for k in backbone_state if k.startswith("model.")]
    assert inner and all(torch.equal(backbone_state[k], classifier_state[k[len("model."):]]) for k in inner)
    model.train()

    if is_seg:
        data = seg_batch(model, (128, 128))
    else:  # two sizes that are not multiples of 32: the data preprocessor pads the batch
        data = det_batch(model, [(128, 150), (112, 160)], with_masks=has_mask_head(cfg.model))
    losses = model(**data, mode="loss")
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss) and loss > 0
    if is_seg:
        assert "decode.loss_ce" in log_vars and (("aux.loss_ce" in log_vars) is bool(cfg.model.get("auxiliary_head")))
    else:
        assert any("loss_cls" in k for k in log_vars) and any("loss_bbox" in k for k in log_vars)
        assert any("loss_mask" in k for k in log_vars) is has_mask_head(cfg.model)
    loss.backward()

    frozen = [n for n, p in model.backbone.named_parameters() if not p.requires_grad]
    assert frozen and all(model.backbone.get_parameter(n).grad is None for n in frozen)
    assert not [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]

    model.eval()
    with torch.no_grad():
        if is_seg:
            data = seg_batch(model, (128, 128), n=1, training=False)
            (result,) = model(**data, mode="predict")
            assert result.pred_sem_seg.data.shape == (1, 128, 128)
            assert result.seg_logits.data.shape == (150, 128, 128)
        else:
            data = det_batch(model, [(120, 150)], with_masks=False, training=False)
            (result,) = model(**data, mode="predict")
            pred = result.pred_instances
            assert len(pred.bboxes) > 0 and pred.bboxes.shape[1] == 4
            assert pred.bboxes[:, 2].max() <= 150 + 1e-3 and pred.bboxes[:, 3].max() <= 120 + 1e-3
            if has_mask_head(cfg.model):
                assert pred.masks.shape[1:] == (120, 150)
