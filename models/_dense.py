"""The det/seg hook: how a family's classification model becomes its official detection / segmentation backbone.

``visionzoo.mm.VisionZooBackbone`` is generic: it asks the model class for its hook (the class attribute
``dense_hook``; ``DenseHook()`` when the class has none) and never branches on a family's name. A hook says

* which feature levels are the backbone's outputs (``levels``) and their widths (``out_channels``);
* how to compute them (``features``; default ``forward_intermediates``) and which extra modules that needs
  (``extra_modules``, e.g. OverLoCK's context projection);
* the per-output norm the official det/seg backbone adds (``out_norm``: LayerNorm2d by default, with the official eps);
* how the official det/seg checkpoints name the backbone's own modules (``official_keys``), so that the backbone
  part of those checkpoints loads: e.g. BiFormer's ``extra_norms.{i}``, DaViT's / DiNAT's ``norm{i}``.

Families whose det/seg backbone differs override a method or two in a subclass that lives beside the model
(CONTRIBUTING.md). Two hooks are ready to use: ``DenseHook`` (a 4-level pyramid at strides 4-32) and
``ViTDenseHook`` (a plain ViT: four chosen blocks, all at the patch stride, for a neck that builds the pyramid,
e.g. mmseg's MultiLevelNeck).
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d

PYRAMID_STRIDES = (4, 8, 16, 32)


class DenseHook:
    """A 4-level pyramid (strides 4, 8, 16, 32) from ``feature_info``, one LayerNorm2d per output.

    Args:
        norm_eps: eps of the output norms (the official det/seg backbone's: timm's LayerNorm2d uses 1e-6,
            ``nn.LayerNorm`` 1e-5).
        official_norm_key: how the official det/seg checkpoints name output norm ``i`` (a format string with
            ``{i}``, e.g. ``"extra_norms.{i}"`` or ``"norm{i}"``); None when there is no official det/seg backbone.
    """

    num_outputs = len(PYRAMID_STRIDES)

    def __init__(self, norm_eps: float = 1e-6, official_norm_key: Optional[str] = None):
        self.norm_eps = norm_eps
        self.official_norm_key = official_norm_key

    # ---- structure --------------------------------------------------------------------------------------------

    def levels(self, model_name: str, feature_info: Sequence[Mapping]) -> List[int]:
        """The ``forward_intermediates`` indices of the backbone's outputs 0..num_outputs-1."""
        levels = []
        for stride in PYRAMID_STRIDES:
            found = [i for i, info in enumerate(feature_info) if info["reduction"] == stride]
            if not found:
                have = [info["reduction"] for info in feature_info]
                raise ValueError(f"{model_name} has no feature level at stride {stride} (its strides: {have}); "
                                 f"a pyramid backbone needs levels at strides {PYRAMID_STRIDES}")
            levels.append(found[-1])
        return levels

    def out_channels(self, feature_info: Sequence[Mapping], levels: Sequence[int]) -> List[int]:
        return [feature_info[level]["num_chs"] for level in levels]

    def out_strides(self, feature_info: Sequence[Mapping], levels: Sequence[int]) -> List[int]:
        return [feature_info[level]["reduction"] for level in levels]

    def out_norm(self, channels: int) -> nn.Module:
        return LayerNorm2d(channels, eps=self.norm_eps)

    def extra_modules(self, model: nn.Module, out_indices: Sequence[int]) -> Optional[nn.Module]:
        """Modules the backbone needs besides the model and the output norms (registered as ``extras``)."""
        return None

    def prune(self, model: nn.Module, levels: Sequence[int]) -> None:
        """Drop what no requested level needs (later stages, final norm, classifier)."""
        if hasattr(model, "prune_intermediate_layers"):
            model.prune_intermediate_layers(list(levels), prune_norm=True, prune_head=True)

    # ---- forward ----------------------------------------------------------------------------------------------

    def features(self, model: nn.Module, extras: Optional[nn.Module], x: torch.Tensor,
                 levels: Sequence[int]) -> List[torch.Tensor]:
        """The NCHW feature maps at ``levels`` (before the output norms)."""
        return model.forward_intermediates(x, indices=list(levels), intermediates_only=True)

    def outputs(self, model: nn.Module, extras: Optional[nn.Module], norms: nn.ModuleDict, x: torch.Tensor,
                levels: Sequence[int], out_indices: Sequence[int]) -> List[torch.Tensor]:
        """The backbone's outputs: ``features`` at ``levels``, each through its output norm (``norms[str(i)]`` for
        output index i, where present). Override to combine maps after their norms (OverLoCK's detection backbone
        adds a projection of its context to the normed stride-32 map)."""
        features = self.features(model, extras, x, levels)
        return [norms[str(i)](f) if str(i) in norms else f for i, f in zip(out_indices, features)]

    # ---- official det/seg checkpoints -------------------------------------------------------------------------

    def official_keys(self, state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """Split the backbone part of an official det/seg checkpoint (prefix removed) into the classification
        model's keys (for the family's ``checkpoint_filter_fn``) and the backbone's own keys (``out_norms.{i}.*``,
        ``extras.*``), renamed."""
        if not self.official_norm_key:
            return dict(state), {}
        pattern = re.compile("^" + re.escape(self.official_norm_key).replace(r"\{i\}", r"(\d+)") + r"\.(.+)$")
        model_state, own = {}, {}
        for key, value in state.items():
            match = pattern.match(key)
            if match:
                own[f"out_norms.{match.group(1)}.{match.group(2)}"] = value
            else:
                model_state[key] = value
        return model_state, own


class ViTDenseHook(DenseHook):
    """A plain ViT (one stride-``patch`` token map): the outputs of four chosen blocks as NCHW maps, for a neck
    that builds the pyramid (mmseg's MultiLevelNeck, as mmseg's own ViT-UperNet does).

    Args:
        block_indices: the blocks whose outputs are the backbone's outputs 0..3 (e.g. (3, 5, 7, 11)).
    """

    def __init__(self, block_indices: Sequence[int], norm_eps: float = 1e-6, official_norm_key: Optional[str] = None):
        super().__init__(norm_eps, official_norm_key)
        self.block_indices = tuple(block_indices)
        self.num_outputs = len(self.block_indices)

    def levels(self, model_name: str, feature_info: Sequence[Mapping]) -> List[int]:
        bad = [i for i in self.block_indices if not 0 <= i < len(feature_info)]
        if bad:
            raise ValueError(f"{model_name} has {len(feature_info)} blocks; block indices {bad} do not exist")
        return list(self.block_indices)
