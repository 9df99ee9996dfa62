"""MaxViT: Multi-Axis Vision Transformer (Tu et al., ECCV 2022, arXiv:2204.01697), the official TF models.

Architecture as google-research/maxvit. Details the published weights depend on, all reproduced here:

* TF ``padding='same'`` in the stem, the depthwise convs and the shortcut pools: asymmetric (bottom/right)
  at stride 2 on even sizes; pooled cells outside the map are left out of the average.
* BatchNorm eps 1e-3 (TF default; momentum 0.99 in TF = 0.01 here), LayerNorm eps 1e-5.
* GELU with the tanh approximation everywhere.
* MBConv: pre-norm BN, 1x1 expand (x4 of the output width), BN-GELU, depthwise 3x3 (stride 2 in a stage's
  first block), BN-GELU, squeeze-excite (0.25 of the output width, SiLU), 1x1 project with bias.
  Shortcut of a stride-2 block: 2x2 average pool, then a 1x1 conv with bias where the width changes.
* Attention: fused qkv projection laid out [q | k | v] (heads x head_dim inside each), head_dim 32,
  a relative-position table (heads, 2W-1, 2W-1) per attention layer (block and grid have their own).
* Head: global average pool -> LayerNorm -> Linear + tanh ("pre-logits", width of the last stage) -> Linear.

Beyond the official code (which only runs multiples of the training size): any input of at least 32x32,
non-square included, without rebuilding. The window (block) and grid sizes stay as constructed (7, 12 or 16);
each stage pads its map up to whole windows and masks the padded keys (``visionzoo.kernels.window_attention``),
and grid groups keep a fixed G x G grid, tokens ceil(H'/G) apart. At the training size nothing is padded and
the model is exactly the official one.

Weights: the official TF checkpoints are not loadable without TensorFlow; timm's converted
``maxvit_*_tf_*`` checkpoints use the same parameter names as this module, so ``checkpoint_filter_fn`` only
unwraps, resizes relative-position tables trained for another window, and checks every key.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from visionzoo.layers import (
    ClassifierHead, Mlp, PartitionAttention, SameConv2d, SqueezeExcite, avg_pool2x2_same, bn_affine,
    check_image_input, fold_bn, resize_rel_pos_table,
)

from ._checkpoint import PretrainedFileMixin, build_zoo_model, check_keys, unwrap_state_dict
from ._family import Family
from ._pyramid import PyramidMixin

__all__ = ["FAMILY", "MaxViT", "checkpoint_filter_fn"]

MIN_INPUT_SIZE = 32  # one token at stride 32

FAMILY = Family(
    name="maxvit",
    contract_model="vz_maxvit_tiny",
    reduced=dict(embed_dims=(32, 64, 64, 96), depths=(1, 1, 1, 1), stem_width=16, head_hidden_size=96),
    kernels=("window_attention",),
    det_seg_no_decay=("norm", "relative_position_bias_table"),
    smoke_configs=("mmdet/maxvit/mask-rcnn_maxvit-tiny_fpn_1x_coco.py",
                   "mmseg/maxvit/upernet_maxvit-tiny_160k_ade20k-512x512.py"),
)

BatchNorm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)
LayerNorm = partial(nn.LayerNorm, eps=1e-5)
GeluTanh = partial(nn.GELU, approximate="tanh")


class Stem(nn.Module):
    """conv3x3 s2 (bias) -> BN -> GELU -> conv3x3 s1 (bias); no norm after the second conv.

    Also the model's entry point: validates the input and switches to channels_last memory, which every
    later layer keeps (faster convolutions, and free NHWC views for the attention blocks).
    """

    def __init__(self, in_chans: int, width: int):
        super().__init__()
        self.in_chans = in_chans
        self.conv1 = SameConv2d(in_chans, width, 3, stride=2)
        self.norm1 = BatchNorm(width)
        self.act = GeluTanh()
        self.conv2 = SameConv2d(width, width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.conv1.weight.dtype, "MaxViT")
        x = x.contiguous(memory_format=torch.channels_last)
        if self.training:
            x = self.norm1(self.conv1(x))
        else:  # the BatchNorm folded into the conv: one pass less over the activations
            x = self.conv1.conv_with(x, *fold_bn(self.conv1.weight, self.conv1.bias, self.norm1))
        return self.conv2(self.act(x))


class PoolShortcut(nn.Module):
    """Shortcut of a stride-2 block: 2x2 average pool, then a 1x1 conv (bias) where the width changes."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.expand = nn.Conv2d(in_chs, out_chs, 1) if in_chs != out_chs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(avg_pool2x2_same(x))


class MBConv(nn.Module):
    """Pre-norm inverted bottleneck with squeeze-excite (NCHW, channels_last memory)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_path: float):
        super().__init__()
        mid_chs = 4 * out_chs
        self.shortcut = PoolShortcut(in_chs, out_chs) if stride == 2 else nn.Identity()
        self.pre_norm = BatchNorm(in_chs)
        self.conv1_1x1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.norm1 = BatchNorm(mid_chs)
        self.conv2_kxk = SameConv2d(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs, bias=False)
        self.norm2 = BatchNorm(mid_chs)
        self.act = GeluTanh()
        self.se = SqueezeExcite(mid_chs, int(0.25 * out_chs), act_layer=nn.SiLU)
        self.conv3_1x1 = nn.Conv2d(mid_chs, out_chs, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        if self.training:  # batch statistics; in eval the BatchNorms are folded into the convs
            x = self.act(self.norm1(self.conv1_1x1(self.pre_norm(x))))
            x = self.act(self.norm2(self.conv2_kxk(x)))
        else:
            x = self.act(self._folded_expand(x))
            x = self.act(self.conv2_kxk.conv_with(x, *fold_bn(self.conv2_kxk.weight, None, self.norm2)))
        x = self.conv3_1x1(self.se(x))
        return self.drop_path(x) + shortcut

    def _folded_expand(self, x: torch.Tensor) -> torch.Tensor:
        """Eval mode: norm1(conv1_1x1(pre_norm(x))) as a single 1x1 conv. Both BatchNorms are affine maps
        around a linear map without padding, so they fold exactly; this saves two of the block's
        five passes over its largest activations (~10% of MaxViT-T's eval time on CPU)."""
        s0, t0 = bn_affine(self.pre_norm)
        s1, t1 = bn_affine(self.norm1)
        w = self.conv1_1x1.weight[:, :, 0, 0]
        weight = (s1[:, None] * w * s0[None, :])[:, :, None, None]
        return F.conv2d(x, weight, s1 * (w @ t0) + t1)


class PartitionBlock(nn.Module):
    """Pre-norm transformer layer on a (B, H, W, C) map: window or grid attention, then an MLP."""

    def __init__(self, dim: int, head_dim: int, window: Tuple[int, int], partition: str, drop_path: float):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = PartitionAttention(dim, dim // head_dim, window, partition)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim, act_layer=GeluTanh)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class MaxViTBlock(nn.Module):
    """MBConv, then block (local window) attention, then grid (dilated, global) attention."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, head_dim: int,
                 window: Tuple[int, int], grid: Tuple[int, int], drop_path: float):
        super().__init__()
        self.conv = MBConv(in_chs, out_chs, stride, drop_path)
        self.attn_block = PartitionBlock(out_chs, head_dim, window, "block", drop_path)
        self.attn_grid = PartitionBlock(out_chs, head_dim, grid, "grid", drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)  # a free view: x is channels_last
        x = self.attn_grid(self.attn_block(x))
        return x.permute(0, 3, 1, 2)


class MaxViTStage(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, depth: int, head_dim: int,
                 window: Tuple[int, int], grid: Tuple[int, int], drop_path: Sequence[float]):
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.Sequential(*[
            MaxViTBlock(in_chs if i == 0 else out_chs, out_chs, 2 if i == 0 else 1, head_dim, window, grid,
                        drop_path[i])
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def _pair(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class MaxViT(PyramidMixin, PretrainedFileMixin, nn.Module):
    """MaxViT backbone + classifier (see the module docstring).

    Args:
        embed_dims: width of each of the 4 stages.
        depths: MaxViT blocks per stage.
        stem_width: width of the stride-2 stem.
        window_size: block-attention window (7 for the 224 models, 12 for 384, 16 for 512).
        grid_size: grid-attention grid, defaults to ``window_size``.
        head_hidden_size: width of the tanh pre-logits layer (0 or None: no pre-logits layer).
        head_dim: channels per attention head.
        drop_path_rate: stochastic depth of the last block; earlier blocks get linearly less (official schedule).
    """

    def __init__(
            self,
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 5, 2),
            stem_width: int = 64,
            window_size: Union[int, Sequence[int]] = 7,
            grid_size: Optional[Union[int, Sequence[int]]] = None,
            head_hidden_size: Optional[int] = 512,
            head_dim: int = 32,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if len(embed_dims) != len(depths):
            raise ValueError(f"embed_dims {tuple(embed_dims)} and depths {tuple(depths)} must have the same length")
        bad = [d for d in embed_dims if d % head_dim]
        if bad:
            raise ValueError(f"every stage width must be a multiple of head_dim={head_dim}, got {tuple(embed_dims)}")
        self.window_size = _pair(window_size)
        self.grid_size = _pair(grid_size if grid_size is not None else window_size)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.num_features = embed_dims[-1]

        self.stem = Stem(in_chans, stem_width)
        self.feature_info = [dict(num_chs=stem_width, reduction=2, module="stem")]
        total = sum(depths)
        rates = [drop_path_rate * i / total for i in range(total)]
        stages, in_chs = [], stem_width
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            stage_rates, rates = rates[:depth], rates[depth:]
            stages.append(MaxViTStage(in_chs, dim, depth, head_dim, self.window_size, self.grid_size, stage_rates))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
            in_chs = dim
        self.stages = nn.Sequential(*stages)
        self.head = ClassifierHead(self.num_features, num_classes, global_pool, norm_layer=LayerNorm,
                                   hidden_size=head_hidden_size, act_layer=nn.Tanh, drop_rate=drop_rate)
        self.head_hidden_size = self.head.num_features
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        blocks = r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.blocks\.(\d+)"
        return dict(stem=r"^stem", blocks=[(blocks, None), (r"^head", (99999,))])

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features of the stem (index 0) and of each stage (1-4), plus the final features.

        ``norm`` is accepted for timm compatibility; MaxViT's only final norm sits in the head, after pooling.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        intermediates = []
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.stages[:max_index] if stop_early else self.stages
        for i, stage in enumerate(stages, start=1):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if output_fmt == "NHWC":
            intermediates = [t.permute(0, 2, 3, 1) for t in intermediates]
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last index in ``indices`` (and the head); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        self.stages = self.stages[:max_index]
        if max_index < len(self.feature_info) - 1:
            # the head was sized for the last stage; what remains ends at an earlier width
            self.num_features = self.feature_info[max_index]["num_chs"]
            self.head = ClassifierHead(self.num_features, 0, "")
        elif prune_head:
            self.reset_classifier(0, "")
        self.head_hidden_size = self.head.num_features
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: MaxViT) -> Dict[str, torch.Tensor]:
    """Map a checkpoint onto ``model``: timm's converted TF MaxViT weights (``maxvit_*_tf_*``), our own
    safetensors, or a Lightning/DDP/EMA checkpoint. Relative-position tables trained for another window
    are resized; keys that do not fit raise a ValueError naming them."""
    state = unwrap_state_dict(state_dict)
    if any(k.startswith("maxvit/") for k in state):
        raise ValueError("this is a TensorFlow MaxViT checkpoint layout; load timm's converted "
                         "maxvit_*_tf_* weights (hf-hub timm/...) instead")
    expected = model.state_dict()
    out = {}
    for key, value in state.items():
        target = expected.get(key)
        if target is not None and value.shape != target.shape:
            if key.endswith("relative_position_bias_table"):
                value = resize_rel_pos_table(value, ((target.shape[1] + 1) // 2, (target.shape[2] + 1) // 2))
            elif value.numel() == target.numel() and value.dim() != target.dim():
                value = value.reshape(target.shape)  # 1x1 conv <-> linear
        out[key] = value
    check_keys(out, model, f"MaxViT (window {model.window_size}, grid {model.grid_size})")
    return out


def _create_maxvit(variant: str, pretrained: bool = False, **kwargs) -> MaxViT:
    return build_zoo_model(MaxViT, variant, pretrained,
                           feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3, 4)), **kwargs)


def _cfg(timm_tag: str, size: int = 224, **kwargs) -> Dict[str, Any]:
    """timm's conversion of the official TF weights is the weight source (hf-hub ``timm/<timm_tag>``)."""
    cfg = dict(
        hf_hub_id=f"timm/{timm_tag}", num_classes=1000, input_size=(3, size, size), pool_size=(size // 32,) * 2,
        min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE), fixed_input_size=False, interpolation="bicubic",
        first_conv="stem.conv1", classifier="head.fc", license="apache-2.0",
        custom_load=True,  # files and URLs load through PretrainedFileMixin.load_pretrained (safe official reader)
        paper_name="MaxViT: Multi-Axis Vision Transformer", paper_ids="arXiv:2204.01697",
        origin_url="https://github.com/google-research/maxvit",
        notes=("official TensorFlow weights, converted by timm",),
    )
    if size == 224:  # the official 224 eval transform
        cfg.update(crop_pct=0.95, crop_mode="center")
    else:  # 384/512 fine-tunes: whole image, squashed, mean/std 0.5
        cfg.update(crop_pct=1.0, crop_mode="squash")
    cfg.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    cfg.update(kwargs)
    return cfg


_IN1K_224 = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
_IN21K = dict(num_classes=21843)

default_cfgs = generate_default_cfgs({
    "vz_maxvit_tiny.in1k": _cfg("maxvit_tiny_tf_224.in1k", **_IN1K_224),
    "vz_maxvit_tiny_384.in1k": _cfg("maxvit_tiny_tf_384.in1k", 384),
    "vz_maxvit_tiny_512.in1k": _cfg("maxvit_tiny_tf_512.in1k", 512),
    "vz_maxvit_small.in1k": _cfg("maxvit_small_tf_224.in1k", **_IN1K_224),
    "vz_maxvit_small_384.in1k": _cfg("maxvit_small_tf_384.in1k", 384),
    "vz_maxvit_small_512.in1k": _cfg("maxvit_small_tf_512.in1k", 512),
    "vz_maxvit_base.in1k": _cfg("maxvit_base_tf_224.in1k", **_IN1K_224),
    "vz_maxvit_base.in21k": _cfg("maxvit_base_tf_224.in21k", **_IN21K),
    "vz_maxvit_base_384.in1k": _cfg("maxvit_base_tf_384.in1k", 384),
    "vz_maxvit_base_384.in21k_ft_in1k": _cfg("maxvit_base_tf_384.in21k_ft_in1k", 384),
    "vz_maxvit_base_512.in1k": _cfg("maxvit_base_tf_512.in1k", 512),
    "vz_maxvit_base_512.in21k_ft_in1k": _cfg("maxvit_base_tf_512.in21k_ft_in1k", 512),
    "vz_maxvit_large.in1k": _cfg("maxvit_large_tf_224.in1k", **_IN1K_224),
    "vz_maxvit_large.in21k": _cfg("maxvit_large_tf_224.in21k", **_IN21K),
    "vz_maxvit_large_384.in1k": _cfg("maxvit_large_tf_384.in1k", 384),
    "vz_maxvit_large_384.in21k_ft_in1k": _cfg("maxvit_large_tf_384.in21k_ft_in1k", 384),
    "vz_maxvit_large_512.in1k": _cfg("maxvit_large_tf_512.in1k", 512),
    "vz_maxvit_large_512.in21k_ft_in1k": _cfg("maxvit_large_tf_512.in21k_ft_in1k", 512),
    "vz_maxvit_xlarge.in21k": _cfg("maxvit_xlarge_tf_224.in21k", **_IN21K),
    "vz_maxvit_xlarge_384.in21k_ft_in1k": _cfg("maxvit_xlarge_tf_384.in21k_ft_in1k", 384),
    "vz_maxvit_xlarge_512.in21k_ft_in1k": _cfg("maxvit_xlarge_tf_512.in21k_ft_in1k", 512),
})

# official configs (maxvit/models/hp): widths, blocks per stage, stem width; head_dim 32 everywhere
_ARCHS = dict(
    tiny=dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 5, 2), stem_width=64),
    small=dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 5, 2), stem_width=64),
    base=dict(embed_dims=(96, 192, 384, 768), depths=(2, 6, 14, 2), stem_width=64),
    large=dict(embed_dims=(128, 256, 512, 1024), depths=(2, 6, 14, 2), stem_width=128),
    xlarge=dict(embed_dims=(192, 384, 768, 1536), depths=(2, 6, 14, 2), stem_width=192),
)
_WINDOW = {224: 7, 384: 12, 512: 16}  # window = grid = training size / 32


def _maxvit(arch: str, size: int, pretrained: bool, **kwargs) -> MaxViT:
    variant = f"vz_maxvit_{arch}" + ("" if size == 224 else f"_{size}")
    model_args = dict(_ARCHS[arch], window_size=_WINDOW[size], head_hidden_size=_ARCHS[arch]["embed_dims"][-1])
    return _create_maxvit(variant, pretrained, **dict(model_args, **kwargs))


@register_model
def vz_maxvit_tiny(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("tiny", 224, pretrained, **kwargs)


@register_model
def vz_maxvit_tiny_384(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("tiny", 384, pretrained, **kwargs)


@register_model
def vz_maxvit_tiny_512(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("tiny", 512, pretrained, **kwargs)


@register_model
def vz_maxvit_small(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("small", 224, pretrained, **kwargs)


@register_model
def vz_maxvit_small_384(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("small", 384, pretrained, **kwargs)


@register_model
def vz_maxvit_small_512(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("small", 512, pretrained, **kwargs)


@register_model
def vz_maxvit_base(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("base", 224, pretrained, **kwargs)


@register_model
def vz_maxvit_base_384(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("base", 384, pretrained, **kwargs)


@register_model
def vz_maxvit_base_512(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("base", 512, pretrained, **kwargs)


@register_model
def vz_maxvit_large(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("large", 224, pretrained, **kwargs)


@register_model
def vz_maxvit_large_384(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("large", 384, pretrained, **kwargs)


@register_model
def vz_maxvit_large_512(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("large", 512, pretrained, **kwargs)


@register_model
def vz_maxvit_xlarge(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("xlarge", 224, pretrained, **kwargs)


@register_model
def vz_maxvit_xlarge_384(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("xlarge", 384, pretrained, **kwargs)


@register_model
def vz_maxvit_xlarge_512(pretrained: bool = False, **kwargs) -> MaxViT:
    return _maxvit("xlarge", 512, pretrained, **kwargs)
