"""Real mmdet / mmseg models from the config files, smallest variant of each family: a training step
(loss + backward) and a predict step on a fake batch at a reduced input size, on CPU."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from ..conftest import SMALLEST
from .conftest import ALL_CONFIGS, build_model, det_batch, load_config, require_mm, scope_of, seg_batch

require_mm()


def _smallest_configs():
    """The configs (not the family bases) whose backbone is the smallest registered variant of its family."""
    found = []
    for path in ALL_CONFIGS:
        if path.parent.name == "_base_":
            continue
        text = path.read_text()
        if any(f"model_name='{name}'" in text for name in SMALLEST):
            found.append(path)
    return found


SMALLEST_CONFIGS = _smallest_configs()


def _id(path):
    return path.name


def test_each_family_has_all_three_smallest_configs():
    assert len(SMALLEST_CONFIGS) == 3 * len(SMALLEST)


@pytest.mark.parametrize("path", SMALLEST_CONFIGS, ids=_id)
def test_train_step_and_predict(path, tmp_path):
    cfg = load_config(path)
    cfg.model.backbone.init_cfg = None
    classifier_state = None
    if "mask-rcnn" in path.name:  # the config's init_cfg with a local classification checkpoint of the model
        classifier_state = timm.create_model(cfg.model.backbone.model_name).state_dict()
        save_file(classifier_state, str(tmp_path / "classifier.safetensors"))
        cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(tmp_path / "classifier.safetensors"))
    is_seg = "mmseg" in path.parts
    is_retina = path.name.startswith("retinanet")
    if is_retina:
        cfg.model.backbone.frozen_stages = 1  # also checks freezing inside a real detector
    if "mask-rcnn" not in path.name:
        # the real model runs in the Mask R-CNN test; here one block per stage (same widths) keeps CI fast
        cfg.model.backbone.depths = (1,) * 4
    if is_seg:
        cfg.model.data_preprocessor.size = (128, 128)  # reduced from the 512x512 crop
    else:  # realistic heads; random weights give scores below the default thresholds
        if "rcnn" in cfg.model.test_cfg:
            cfg.model.test_cfg.rcnn.score_thr = 0.0
        else:
            cfg.model.test_cfg.score_thr = 0.0
    model = build_model(cfg.model, scope_of(path))
    model.init_weights()  # mmengine's recursive init: the backbone loads its checkpoint itself
    if classifier_state is not None:
        backbone_state = model.backbone.state_dict()
        inner = [k for k in backbone_state if k.startswith("model.")]
        assert inner and all(torch.equal(backbone_state[k], classifier_state[k[len("model."):]]) for k in inner)
    model.train()

    if is_seg:
        data = seg_batch(model, (128, 128))
    else:  # two sizes that are not multiples of 32: the data preprocessor pads the batch to 128x160
        data = det_batch(model, [(128, 150), (112, 160)], with_masks="mask-rcnn" in path.name)
    losses = model(**data, mode="loss")
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss) and loss > 0
    expected = {"decode.loss_ce", "aux.loss_ce"} if is_seg else (
        {"loss_cls", "loss_bbox"} if is_retina else {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"})
    assert expected <= set(log_vars)
    loss.backward()

    backbone = model.backbone
    for name, p in backbone.named_parameters():
        frozen = is_retina and (name.startswith(("model.stem.", "model.stages.0.")))
        assert p.requires_grad is not frozen, name
        assert (p.grad is None) is frozen, name
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
            if "mask-rcnn" in path.name:
                assert pred.masks.shape[1:] == (120, 150)
