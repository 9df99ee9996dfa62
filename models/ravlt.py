"""RAVLT: the Rank-Augmented Vision Linear Transformer of "Breaking the Low-Rank Dilemma of Linear Attention"
(Qihang Fan, Huaibo Huang, Ran He; CVPR 2025; arXiv:2411.07635).

Architecture as qhfan/RALA (``classfication/RALA.py``, ``RAVLT_T/S/B/L``).

**RAVLT is a hybrid, not a purely linear-attention model.** Its official per-stage block types (the default
``flagss``) are RALA linear attention in stages 1-2 and full *softmax* attention over the whole map in stages 3-4
(``VanillaSelfAttention``), quadratic in the tokens of those stages; the author confirms it in qhfan/RALA#9
("following FLatten and InLine"). The official det/seg backbones use the same flags. Here the per-stage choice is
``stage_attention`` (default ``("linear", "linear", "softmax", "softmax")``, the only configuration with weights).

Block (every stage), on a channels-last (B, H, W, C) map::

    x = x + dwconv3x3(x)                                    (CPE, key ``pos``)
    x = x + gamma_1 * attn(LayerNorm(x))                    (eps 1e-6; layer scale shaped (1, C, 1, 1) officially)
    x = x + gamma_2 * ffn(LayerNorm(x))                     ffn: 1x1 -> GELU -> (x + dwconv3x3(x)) -> 1x1, ratio 3.5

Both attentions: ``qkvo = Conv1x1(C -> 4C)`` split [q | k | v | o] (heads x 64 inside each), ``lepe = dwconv5x5(v)``,
``out = proj((attention + lepe) * o)`` (the output gate ``o`` is not activated: "NoSilu"), 2D RoPE on the per-head
channels (rotate-every-two; frequencies ``1 / 10000 ** linspace(0, 1, head_dim / 4)``, each repeated twice; the first
half of the channels rotates by the row index, the second half by the column index; rebuilt for every (H, W)).

* RALA (``GateLinearAttentionNoSilu``): ELU + 1 features; keys re-weighted by ``N * softmax_n(d^-0.5 mean(q) . k_n)``
  (the "KV buffer" rank augmentation); RoPE on the numerator only:
  ``(rope(q) (rope(k)ᵀ/√N)(v/√N)) / (q . mean(k) + 1e-6)`` (``visionzoo.kernels.linear_attention`` with separate
  normaliser inputs, fp32 accumulation).
* softmax (``VanillaSelfAttention``): ``softmax(d^-0.5 rope(q) rope(k)ᵀ) v`` over the whole map
  (``visionzoo.kernels.window_attention`` with one window the size of the map: SDPA beyond 256 tokens).

Stem: 4 convs 3x3 (stride 2, 1, 1, 2; C/2, C/2, C/2, C) each followed by BatchNorm, GELU after the first three.
Downsampling: conv3x3 stride 2 + BatchNorm. Head: 1x1 conv to 1024 -> BatchNorm -> Swish -> average pool ->
1x1-conv classifier (a Linear here). The official factories ignore ``num_classes`` and ``drop_path``; these take them.

Beyond the official code: channels-last activations with Linear layers for the 1x1 convs (their weights reshaped by
``checkpoint_filter_fn``); the residual depthwise convs folded into one conv each; eval mode folds the stem's,
downsamplers' and head's BatchNorms into their convs; any input of at least 32 x 32, non-square included; the det/seg
backbone honours ``norm_eval`` for every BatchNorm kind (the official one builds SyncBatchNorm, which its
``norm_eval`` check for ``nn.BatchNorm2d`` silently skips); ``features_only`` / ``forward_intermediates``.

Weights (huggingface.co/aldjalkdf/RAVLT): DeiT-style training checkpoints (``model``, ``model_ema``, ``optimizer``,
``lr_scheduler``, ``scaler``, ``args`` ...). The official evaluation and fine-tuning read ``model``, so ``model`` is
loaded (``checkpoint_prefer``), not the EMA copy; the key used is logged. The RoPE ``angle`` buffers stored in the
files are checked against the formula and dropped (the tables are rebuilt per input size).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from visionzoo.kernels import linear_attention, rala_features, rala_key_weights, window_attention
from visionzoo.layers import (ClassifierHead, ConvPosEnc, Linear, check_image_input, depthwise_conv2d, fold_bn,
                              store_weight_channels_last)
from visionzoo.layers.linear import linear

from ._checkpoint import PretrainedFileMixin, build_zoo_model, check_keys, unwrap_state_dict
from ._dense import DenseHook
from ._family import Family
from ._official import OfficialCode, import_from_checkout
from ._pyramid import PyramidMixin

__all__ = ["FAMILY", "RAVLT", "checkpoint_filter_fn", "rope_tables", "apply_rope"]

MIN_INPUT_SIZE = 32  # one token at stride 32
RALA_EPS = 1e-6
ATTENTION_KINDS = ("linear", "softmax")
FFN_CHUNK_BYTES = 8 << 20  # eval FFN: hidden activation per band of rows (cache-sized, below glibc's mmap threshold)


def _official_ravlt(checkout: str, name: str, img_size: int) -> nn.Module:
    """The official ``classfication/RALA.py`` (sic) constructor ``RAVLT_<T|S|B|L>``; it imports einops and fvcore."""
    module = import_from_checkout(checkout, "classfication/RALA.py", "qhfan/RALA")
    return getattr(module, f"RAVLT_{name[len('vz_ravlt_'):].upper()}")()


FAMILY = Family(
    name="ravlt",
    contract_model="vz_ravlt_t",
    reduced=dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), projection=128),
    kernels=("linear_attention", "window_attention"),
    # timm's optimizer exempts 1-D parameters and biases, as the official DeiT-style one does; the layer scales are
    # (1, C, 1, 1)-shaped there and decayed, and keep a 4-D shape here for that reason
    no_weight_decay_may_be_empty=True,
    smoke_configs=("mmdet/ravlt/mask-rcnn_ravlt-t_fpn_1x_coco.py",
                   "mmseg/ravlt/fpn_ravlt-t_80k_ade20k-512x512.py"),
    official=OfficialCode("qhfan/RALA", ("vz_ravlt_t", "vz_ravlt_s", "vz_ravlt_b", "vz_ravlt_l"), _official_ravlt),
)


# ------------------------------------------------------------------------------------------------- 2D RoPE

def rope_angles(head_dim: int, device=None) -> torch.Tensor:
    """The official per-stage ``RoPE.angle`` buffer: ``1 / 10000 ** linspace(0, 1, head_dim // 4)``, each value
    twice (fp32), shape (head_dim // 2,)."""
    angle = 1.0 / (10000 ** torch.linspace(0, 1, head_dim // 4, device=device))
    return angle.repeat_interleave(2)


def rope_tables(height: int, width: int, head_dim: int, device=None, dtype=torch.float32) -> Tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """(cos, sin) of RAVLT's 2D RoPE, each (H, W, head_dim // 2): one angle per channel pair (2j, 2j + 1); the
    first head_dim / 4 pairs turn with the row index, the others with the column index (computed in fp32, as
    the official buffers are, then cast to ``dtype``)."""
    half = rope_angles(head_dim, device)[::2]  # one per pair: (head_dim // 4,)
    rows = torch.arange(height, device=device, dtype=torch.float32)[:, None] * half  # (H, d/4)
    cols = torch.arange(width, device=device, dtype=torch.float32)[:, None] * half  # (W, d/4)
    theta = torch.cat([rows[:, None, :].expand(height, width, -1), cols[None, :, :].expand(height, width, -1)], -1)
    return theta.cos().to(dtype), theta.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate every channel pair (x[2j], x[2j+1]) of the last dim by its angle: the official
    ``x * cos + rotate_every_two(x) * sin``. ``cos``/``sin`` broadcast against x's leading dims, last dim d / 2.

    fp32/fp64: one complex multiply, ``(x0 + i x1)(cos + i sin)``, a single pass over x (~10x faster on CPU than the
    real formulation, which is used for fp16/bf16, where complex types are missing or half-supported)."""
    if x.dtype in (torch.float32, torch.float64) and x.stride(-1) == 1:
        pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
        turn = torch.complex(cos.to(x.dtype), sin.to(x.dtype))
        return torch.view_as_real(pairs * turn).flatten(-2)
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(-2)


# ------------------------------------------------------------------------------------------------- layers

def _bn_nhwc(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """A BatchNorm2d on a channels-last (B, H, W, C) map (a free NCHW view of it)."""
    return bn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ConvBN(nn.Module):
    """conv (bias) -> BatchNorm, on NCHW maps (channels_last memory); eval folds the BatchNorm into the conv."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)
        store_weight_channels_last(self.conv)  # so forward's conversion below is a no-op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a channels-last weight for the channels-last input: with a contiguous one the weight is reordered on
        # every call (measured 3.5 ms of the 9 ms of the 256 -> 512 conv at 14x14, one thread)
        weight, stride = self.conv.weight, self.conv.stride[0]
        out_numel = x.shape[0] * weight.shape[0] * -(-x.shape[2] // stride) * -(-x.shape[3] // stride)
        if self.training or weight.numel() > out_numel:  # eval: fold the BN where the weight is the smaller
            weight = weight.contiguous(memory_format=torch.channels_last)
            return self.norm(F.conv2d(x, weight, self.conv.bias, self.conv.stride, self.conv.padding))
        weight, bias = fold_bn(self.conv.weight, self.conv.bias, self.norm)
        weight = weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, self.conv.stride, self.conv.padding)


class Stem(nn.Module):
    """Official ``PatchEmbed``: (conv3x3 -> BN -> GELU) with strides 2, 1, 1 at C/2, then conv3x3 s2 -> BN at C.
    Also the entry point: validates the input and returns a channels-last (B, H/4, W/4, C) map."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.in_chans = in_chans
        self.conv1 = ConvBN(in_chans, dim // 2, 2)
        self.conv2 = ConvBN(dim // 2, dim // 2, 1)
        self.conv3 = ConvBN(dim // 2, dim // 2, 1)
        self.conv4 = ConvBN(dim // 2, dim, 2)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans, MIN_INPUT_SIZE, self.conv1.conv.weight.dtype, "RAVLT")
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.act(self.conv3(self.act(self.conv2(self.act(self.conv1(x))))))
        return self.conv4(x).permute(0, 2, 3, 1)


class Downsample(nn.Module):
    """Official ``PatchMerging``: conv3x3 stride 2 + BatchNorm, (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C')."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.reduction = ConvBN(in_dim, dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class GatedAttention(nn.Module):
    """RAVLT's token mixer: ``qkvo`` projection, RALA linear attention (``kind="linear"``, official
    ``GateLinearAttentionNoSilu``) or softmax attention over the whole map (``kind="softmax"``, official
    ``VanillaSelfAttention``), both with 2D RoPE, plus LePE (dwconv5x5 of v) and the output gate o."""

    def __init__(self, dim: int, num_heads: int, kind: str):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kind = kind
        self.scale = self.head_dim ** -0.5
        self.qkvo = Linear(dim, 4 * dim)
        self.lepe = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, H, W, C = x.shape
        # [q | k | v | o], heads x head_dim inside each; one unbind: its backward stacks the four gradients (slicing
        # would zero-fill a (B, H, W, 4C) gradient per slice)
        q, k, v, o = self.qkvo(x).view(B, H, W, 4, C).unbind(3)
        # depthwise_conv2d: nn.Conv2d's 5x5 depthwise CPU backward is ~3x slower than this one
        lepe = depthwise_conv2d(v.permute(0, 3, 1, 2), self.lepe.weight, self.lepe.bias).permute(0, 2, 3, 1)
        cos, sin = (t.to(x.dtype) for t in rope)  # (H, W, d/2)
        if self.kind == "linear":
            N = H * W
            q, k, v = (t.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
                       for t in (q, k, v))  # (B, heads, N, d) views
            q, k = rala_features(q), rala_features(k)
            k = k * rala_key_weights(q, k, self.scale)
            cos, sin = cos.reshape(N, -1), sin.reshape(N, -1)
            out = linear_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, q_den=q, k_den=k,
                                   scale=1.0 / N, den_scale=1.0 / N, eps=RALA_EPS)
            out = out.transpose(1, 2).reshape(B, H, W, C)
        else:
            q, k, v = (t.view(B, H, W, self.num_heads, self.head_dim) for t in (q, k, v))  # views
            cos, sin = cos[:, :, None], sin[:, :, None]
            out = window_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, (H, W), "block",
                                   scale=self.scale).reshape(B, H, W, C)
        return self.proj((out + lepe) * o)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, num_heads={self.num_heads}"


class FeedForward(nn.Module):
    """1x1 -> GELU -> (x + dwconv3x3(x)) -> 1x1 (official ``FeedForwardNetwork`` with ``subconv=True``)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.dwconv = ConvPosEnc(hidden_dim, 3)
        self.fc2 = Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        rows = max(8, FFN_CHUNK_BYTES // max(1, B * W * self.fc1.out_features * x.element_size()))
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or rows >= H:
            return self.fc2(self.dwconv(self.act(self.fc1(x))))
        return self._forward_bands(x, rows)

    def _forward_bands(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """Eval on large maps: bands of ``rows`` map rows, each with its one-row halo for the 3x3 conv, so the
        hidden activation (3.5x the width) stays cache-sized instead of streaming from memory several times
        (at 1024x1024 stage 1 it is 58 MB): the same arithmetic per output row."""
        H = x.shape[1]
        weight, bias = self.dwconv.folded_weight(), self.dwconv.proj.bias  # the conv with its residual
        out = x.new_empty(x.shape[:3] + (self.fc2.out_features,))
        for r0 in range(0, H, rows):
            r1 = min(r0 + rows, H)
            a, b = max(r0 - 1, 0), min(r1 + 1, H)
            h = self.act(self.fc1(x[:, a:b])).permute(0, 3, 1, 2)
            h = F.pad(h, (0, 0, int(a == r0), int(b == r1)))  # zero rows only at the map's borders
            h = F.conv2d(h, weight, bias, padding=(0, 1), groups=weight.shape[0]).permute(0, 2, 3, 1)
            out[:, r0:r1] = self.fc2(h)
        return out


class RAVLTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, kind: str, mlp_ratio: float, drop_path: float,
                 layer_scale: Optional[float]):
        super().__init__()
        self.pos = ConvPosEnc(dim, 3)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GatedAttention(dim, num_heads, kind)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = FeedForward(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if layer_scale is not None:  # (1, 1, 1, C): the official (1, C, 1, 1) on channels-last maps, also 4-D
            self.gamma_1 = nn.Parameter(torch.full((1, 1, 1, dim), float(layer_scale)))
            self.gamma_2 = nn.Parameter(torch.full((1, 1, 1, dim), float(layer_scale)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor, rope: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = self.pos(x)
        y = self.attn(self.norm1(x), rope)
        x = x + self.drop_path(y if self.gamma_1 is None else self.gamma_1 * y)
        y = self.ffn(self.norm2(x))
        return x + self.drop_path(y if self.gamma_2 is None else self.gamma_2 * y)


class RAVLTStage(nn.Module):
    """Optional downsampling (stages 2-4), then the blocks, all of one attention kind, sharing the stage's RoPE
    tables (rebuilt for the map's size on every call)."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, kind: str, mlp_ratio: float,
                 drop_path: Sequence[float], layer_scale: Optional[float], downsample: bool):
        super().__init__()
        self.grad_checkpointing = False
        self.head_dim = dim // num_heads
        self.downsample = Downsample(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.ModuleList([RAVLTBlock(dim, num_heads, kind, mlp_ratio, drop_path[j], layer_scale)
                                     for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        rope = rope_tables(x.shape[1], x.shape[2], self.head_dim, device=x.device)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope)
        return x


def _per_stage(value: Union[Any, Sequence], n: int, name: str) -> Tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * n
    if len(values) != n:
        raise ValueError(f"{name} needs one value per stage ({n}), got {values}")
    return values


class RAVLT(PyramidMixin, PretrainedFileMixin, nn.Module):
    """RAVLT backbone + classifier (see the module docstring).

    Args:
        embed_dims: width of each stage.
        depths: blocks per stage.
        num_heads: heads per stage (default width / 64: head_dim 64, as every official variant).
        stage_attention: ``"linear"`` (RALA) or ``"softmax"`` per stage; the official models are
            ``("linear", "linear", "softmax", "softmax")``.
        mlp_ratio: FFN hidden width / width (3.5 officially).
        layer_scale_init: initial layer scale per stage (None: no layer scale).
        projection: width of the 1x1 conv before the classifier (1024).
        drop_path_rate: stochastic depth of the last block (``linspace(0, rate, total)``).
    """

    checkpoint_prefer = ("model", "state_dict", "model_ema", "state_dict_ema")  # the official eval reads `model`
    # the official det/seg backbone's output norms: LayerNorm2d wrapping nn.LayerNorm(eps=1e-6) as `.norm`
    dense_hook = DenseHook(norm_eps=1e-6, official_norm_key="extra_norms.{i}.norm")

    def __init__(
            self,
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Optional[Sequence[int]] = None,
            stage_attention: Sequence[str] = ("linear", "linear", "softmax", "softmax"),
            mlp_ratio: Union[float, Sequence[float]] = 3.5,
            layer_scale_init: Union[Optional[float], Sequence[Optional[float]]] = 1.0,
            projection: int = 1024,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        n = len(embed_dims)
        depths = _per_stage(depths, n, "depths")
        num_heads = _per_stage(num_heads if num_heads is not None else [max(1, d // 64) for d in embed_dims], n,
                               "num_heads")
        stage_attention = _per_stage(stage_attention, n, "stage_attention")
        mlp_ratio = _per_stage(mlp_ratio, n, "mlp_ratio")
        layer_scale_init = _per_stage(layer_scale_init, n, "layer_scale_init")
        bad = [k for k in stage_attention if k not in ATTENTION_KINDS]
        if bad:
            raise ValueError(f"stage_attention entries must be one of {ATTENTION_KINDS}, got {stage_attention}")
        for d, h in zip(embed_dims, num_heads):
            if h < 1 or d % h or (d // h) % 4:
                raise ValueError(f"every stage width must be its head count times a multiple of 4 (2D RoPE splits "
                                 f"each head into row and column pairs), got widths {tuple(embed_dims)} and heads "
                                 f"{num_heads}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.stage_attention = stage_attention

        self.stem = Stem(in_chans, embed_dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths), dtype=torch.float64, device="cpu").tolist()
        stages, self.feature_info, in_dim = [], [], embed_dims[0]
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            stage_rates, rates = rates[:depth], rates[depth:]
            stages.append(RAVLTStage(in_dim, dim, depth, num_heads[i], stage_attention[i], mlp_ratio[i], stage_rates,
                                     layer_scale_init[i], downsample=i > 0))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}"))
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        # official head: 1x1 conv -> BatchNorm -> Swish (per position), pool, 1x1-conv classifier
        self.head_proj = Linear(embed_dims[-1], projection)
        self.head_norm = nn.BatchNorm2d(projection)
        self.head_act = nn.SiLU()
        self.num_features = self.head_hidden_size = projection
        self.head = ClassifierHead(projection, num_classes, global_pool, drop_rate=drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # ---- timm contract ------------------------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        if coarse:
            blocks = [(r"^stages\.(\d+)", None), (r"^head_(?:proj|norm)", (99999,))]
        else:
            blocks = [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                      (r"^head_(?:proj|norm)", (99999,))]
        return dict(stem=r"^stem", blocks=blocks)

    def _head_features(self, x: torch.Tensor) -> torch.Tensor:
        """1x1 conv -> BatchNorm -> Swish on a (B, H, W, C) map (eval: the BatchNorm folded into the conv)."""
        if isinstance(self.head_proj, nn.Identity):  # pruned
            return x
        if self.training:
            x = _bn_nhwc(self.head_norm, self.head_proj(x))
        else:
            w = self.head_proj.weight
            weight, bias = fold_bn(w.view(*w.shape, 1, 1), self.head_proj.bias, self.head_norm)
            x = linear(x, weight.view(w.shape), bias)
        return self.head_act(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The output of each stage (strides 4, 8, 16, 32). ``norm`` is accepted for timm compatibility: RAVLT has no
        final norm (its head projection is not one)."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x if output_fmt == "NHWC" else x.permute(0, 3, 1, 2))
        if intermediates_only:
            return intermediates
        return self._head_features(x).permute(0, 3, 1, 2), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last index in ``indices`` and the head (with ``prune_norm`` or an earlier last
        index, the head projection too); returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.head_proj, self.head_norm, self.head_act = nn.Identity(), nn.Identity(), nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.head = ClassifierHead(self.num_features, 0, "")
            self.num_classes, self.global_pool = 0, ""
        elif prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, projection, H/32, W/32) map after the head's 1x1 conv, BatchNorm and Swish (timm's EfficientNet
        convention: the per-position head layers belong to the features)."""
        return self._head_features(self.stages(self.stem(x))).permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------- official weights

_STEM = {"0": "conv1.conv", "1": "conv1.norm", "3": "conv2.conv", "4": "conv2.norm", "6": "conv3.conv",
         "7": "conv3.norm", "9": "conv4.conv", "10": "conv4.norm"}


def _official_key(key: str) -> Optional[str]:
    """One key of the official layout (``RAVLT`` in classfication/RALA.py, or the ``GLTA`` det/seg backbone) in ours;
    None for the RoPE angle buffers."""
    parts = key.split(".")
    if key.startswith("patch_embed.proj."):
        return f"stem.{_STEM[parts[2]]}.{parts[3]}"
    if key.startswith("layers."):
        stage = int(parts[1])
        if parts[2] == "RoPE":
            return None
        if parts[2] == "downsample":  # the official stage i ends with the downsampling that starts our stage i + 1
            sub = {"reduction": "conv", "norm": "norm"}[parts[3]]
            return f"stages.{stage + 1}.downsample.reduction.{sub}.{parts[4]}"
        rest = ".".join(parts[4:])
        for old, new in (("pos.", "pos.proj."), ("ffn.dwconv.", "ffn.dwconv.proj."), ("norm1.norm.", "norm1."),
                         ("norm2.norm.", "norm2.")):
            if rest.startswith(old):
                rest = new + rest[len(old):]
        return f"stages.{stage}.blocks.{parts[3]}.{rest}"
    if key.startswith("proj."):
        return "head_proj." + parts[1]
    if key.startswith("norm."):
        return "head_norm." + parts[1]
    if key.startswith("head."):
        return "head.fc." + parts[1]
    return key


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: RAVLT) -> Dict[str, torch.Tensor]:
    """Map a checkpoint onto ``model``: the official RAVLT layout (``patch_embed.*``, ``layers.{i}.*``, 1x1 convs,
    (1, C, 1, 1) layer scales, ``RoPE.angle`` buffers) or ours (safetensors, Lightning, EMA). The angle buffers must
    equal the formula's (then they are dropped); keys that do not fit raise a ValueError naming them."""
    state = unwrap_state_dict(state_dict)
    if not any(k.startswith(("patch_embed.", "layers.")) for k in state):
        check_keys(state, model, "RAVLT", classifier="head.fc", first_conv="stem.conv1.conv")
        return state
    expected = model.state_dict()
    out = {}
    for key, value in state.items():
        new = _official_key(key)
        if new is None:  # layers.{i}.RoPE.angle
            if value.device.type != "meta":
                stage = int(key.split(".")[1])
                if stage < len(model.stages):
                    ref = rope_angles(model.stages[stage].head_dim)
                    if value.shape != ref.shape or not torch.allclose(value.float(), ref, rtol=1e-6, atol=0):
                        raise ValueError(f"checkpoint {key} {tuple(value.shape)} is not RAVLT's RoPE frequency table "
                                         f"for head_dim {model.stages[stage].head_dim}")
            continue
        target = expected.get(new)
        if target is not None and value.shape != target.shape and value.numel() == target.numel():
            value = value.reshape(target.shape)  # 1x1 conv -> Linear, (1, C, 1, 1) -> (1, 1, 1, C) layer scales
        out[new] = value
    check_keys(out, model, "RAVLT", classifier="head.fc", first_conv="stem.conv1.conv")
    return out


def _create_ravlt(variant: str, pretrained: bool = False, **kwargs) -> RAVLT:
    return build_zoo_model(RAVLT, variant, pretrained,
                           feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)), **kwargs)


def _cfg(file: str, **kwargs) -> Dict[str, Any]:
    cfg = dict(
        url=f"https://huggingface.co/aldjalkdf/RAVLT/resolve/main/{file}", num_classes=1000, input_size=(3, 224, 224),
        pool_size=(7, 7), min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE), fixed_input_size=False,
        crop_pct=0.875, crop_mode="center", interpolation="bicubic",  # classfication/datasets.py: 256 -> 224
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv="stem.conv1.conv", classifier="head.fc",
        license="unknown",  # qhfan/RALA has no LICENSE file
        custom_load=True,  # files and URLs load through PretrainedFileMixin (safe official reader)
        paper_name="Breaking the Low-Rank Dilemma of Linear Attention", paper_ids="arXiv:2411.07635",
        origin_url="https://github.com/qhfan/RALA",
        notes=("a hybrid: RALA linear attention in stages 1-2, softmax attention in stages 3-4 (qhfan/RALA#9)",),
    )
    cfg.update(kwargs)
    return cfg


default_cfgs = generate_default_cfgs({
    "vz_ravlt_t.in1k": _cfg("RAVLT_T.pth"),
    "vz_ravlt_s.in1k": _cfg("RAVLT_S.pth"),
    "vz_ravlt_b.in1k": _cfg("RAVLT_B.pth"),
    "vz_ravlt_l.in1k": _cfg("RAVLT_L.pth"),
})

# classfication/RALA.py: RAVLT_T/S/B/L (mlp ratio 3.5, projection 1024, head_dim 64, layer scale everywhere)
_ARCHS = dict(
    t=dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8), layer_scale_init=1.0),
    s=dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8), layer_scale_init=1.0),
    b=dict(embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8),
           layer_scale_init=(1.0, 1.0, 1e-6, 1e-6)),
    l=dict(embed_dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(1, 2, 7, 10), layer_scale_init=1e-6),
)
# the official training drop-path rates (the factories fix them; the recipes use them)
OFFICIAL_DROP_PATH = dict(t=0.1, s=0.15, b=0.4, l=0.55)


def _ravlt(arch: str, pretrained: bool, **kwargs) -> RAVLT:
    return _create_ravlt(f"vz_ravlt_{arch}", pretrained, **dict(_ARCHS[arch], **kwargs))


@register_model
def vz_ravlt_t(pretrained: bool = False, **kwargs) -> RAVLT:
    return _ravlt("t", pretrained, **kwargs)


@register_model
def vz_ravlt_s(pretrained: bool = False, **kwargs) -> RAVLT:
    return _ravlt("s", pretrained, **kwargs)


@register_model
def vz_ravlt_b(pretrained: bool = False, **kwargs) -> RAVLT:
    return _ravlt("b", pretrained, **kwargs)


@register_model
def vz_ravlt_l(pretrained: bool = False, **kwargs) -> RAVLT:
    return _ravlt("l", pretrained, **kwargs)
