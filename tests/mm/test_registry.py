"""Registration: both scopes, either one alone, and nothing mm-related in the core import."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .conftest import REPO, build_model, load_config, require_mm

require_mm()


def test_registered_in_both_scopes():
    import mmdet.registry
    import mmseg.registry

    import visionzoo.mm as vzmm
    assert vzmm.REGISTERED_IN == ["mmdet", "mmseg"]
    for registry in (mmdet.registry, mmseg.registry):
        assert registry.MODELS.get("VisionZooBackbone") is vzmm.VisionZooBackbone
        assert (registry.OPTIM_WRAPPER_CONSTRUCTORS.get("VisionZooLayerDecayOptimizerConstructor")
                is vzmm.VisionZooLayerDecayOptimizerConstructor)


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("missing, present", [("mmseg", "mmdet"), ("mmdet", "mmseg")])
def test_works_with_only_one_of_mmdet_mmseg(missing, present):
    """Also: importing visionzoo and building a model imports nothing of the mm stack."""
    out = _run(f"""
        import sys, timm, visionzoo
        timm.create_model("vz_maxvit_tiny", pretrained=False)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("mmcv", "mmdet", "mmseg", "mmengine")))
        sys.modules["{missing}"] = None  # as if {missing} were not installed: importing it raises ImportError
        import visionzoo.mm, {present}.registry
        print(visionzoo.mm.REGISTERED_IN, {present}.registry.MODELS.get("VisionZooBackbone").__name__)
    """)
    assert out.split() == ["[]", f"['{present}']", "VisionZooBackbone"]


def test_mmdet_and_mmseg_builds_in_either_order():
    """After mmseg.utils.register_all_modules() the global default scope is mmseg; scoped builds still work."""
    import mmseg.utils
    from mmengine.registry import DefaultScope
    mmseg.utils.register_all_modules(init_default_scope=True)
    assert DefaultScope.get_current_instance().scope_name == "mmseg"
    cfg = load_config(REPO / "configs/mmdet/maxvit/retinanet_maxvit-tiny_fpn_1x_coco.py")
    cfg.model.backbone.update(init_cfg=None, embed_dims=(32, 64, 64, 96), depths=(1, 1, 1, 1), stem_width=16)
    cfg.model.neck.in_channels = [64, 64, 96]
    assert type(build_model(cfg.model, "mmdet")).__name__ == "RetinaNet"
