"""What a model family declares about itself, in one place (``FAMILY`` in ``models/<family>.py``).

The generic tests (contract, det/seg configs, recipes), the training and det/seg code, the command line and the
results table read these declarations; none of them branches on a family's name. CONTRIBUTING.md says how to
fill one in when a family is added.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ._official import OfficialCode

FEATURE_KINDS = ("pyramid", "vit")
PENDING_PARTS = ("recipes", "mmdet", "mmseg")
DENSE_TASKS = ("mmdet", "mmseg")


@dataclass(frozen=True)
class Family:
    """Declarations of one model family.

    Args:
        name: the module name under ``visionzoo.models`` (also the folder name under ``configs/mmdet`` etc.).
        contract_model: the variant the full contract tests run on: the smallest training-form variant (never a
            deploy-only one, whatever its parameter count).
        reduced: ``timm.create_model`` kwargs that shrink ``contract_model`` for fast tests (e.g. one block per
            stage, narrow widths); per-block lists (dilations, kernel sizes) go here too. The reduced model keeps
            the family's code paths: the contract, compile and det/seg smoke tests run on it.
        kernels: the ``visionzoo.kernels`` ops the family's attention runs on (each op provides its FLOPs formula).
        features: ``"pyramid"``: ``forward_features`` returns an NCHW map at stride 32 and ``feature_info`` has levels
            at strides 4, 8, 16 and 32 (a stride-2 stem level may precede them); ``"vit"``: a plain ViT whose
            ``forward_features`` returns tokens (B, prefix + N, C) at one stride (``vit_stride``).
        vit_stride: the patch size of a ``"vit"`` family.
        aux_outputs: names of the extra outputs ``model.forward_train(x)`` returns besides ``"logits"`` (e.g. an
            auxiliary classifier's ``"aux_logits"``); recipes weight them with ``model.aux_loss_weights``.
        headless: variants whose default ``num_classes`` is 0 (feature towers released without a classifier).
        deploy_only: inference-only variants (e.g. re-parameterised): no training recipe, never the contract model.
        no_weight_decay_may_be_empty: the family has no parameter that ``no_weight_decay()`` must exempt.
        det_seg_no_decay: parameter-name substrings without weight decay in the family's det/seg recipes
            (``paramwise_cfg.custom_keys`` with ``decay_mult=0``); the config tests check every backbone parameter.
        smoke_configs: det/seg configs (paths relative to ``configs/``) that a test builds and runs for real (loss,
            backward, predict) with the reduced backbone; one per task the family has is plenty.
        tasks: the det/seg tasks the family has (by design; ``pending`` says which have not landed yet). A family
            leaves one out when it cannot have it, e.g. a plain ViT has no detection while mmdet ships no ViTDet
            simple pyramid: the config tests then require no configs (and no smoke config) for it.
        official: how to build the official implementation from a checkout of its repository
            (``models/_official.OfficialCode``), for ``visionzoo bench --anchor official=PATH`` and the benchmarks;
            None where timm has the port (MaxViT, DaViT) or the official code cannot run on current torch (NATTEN).
        pending: parts of the family that have not landed yet (``"recipes"``, ``"mmdet"``, ``"mmseg"``); their tests
            are skipped with a message naming the family. The family's issue stays open while this is not empty.
    """

    name: str
    contract_model: str
    reduced: Mapping[str, Any]
    kernels: Tuple[str, ...]
    features: str = "pyramid"
    vit_stride: int = 16
    aux_outputs: Tuple[str, ...] = ()
    headless: Tuple[str, ...] = ()
    deploy_only: Tuple[str, ...] = ()
    no_weight_decay_may_be_empty: bool = False
    det_seg_no_decay: Tuple[str, ...] = ("norm",)
    smoke_configs: Tuple[str, ...] = ()
    tasks: Tuple[str, ...] = DENSE_TASKS
    official: Optional[OfficialCode] = None
    pending: Tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.features not in FEATURE_KINDS:
            raise ValueError(f"Family {self.name}: features must be one of {FEATURE_KINDS}, got {self.features!r}")
        unknown = set(self.pending) - set(PENDING_PARTS)
        if unknown:
            raise ValueError(f"Family {self.name}: pending parts must be among {PENDING_PARTS}, got {sorted(unknown)}")
        if not set(self.tasks) <= set(DENSE_TASKS):
            raise ValueError(f"Family {self.name}: tasks must be among {DENSE_TASKS}, got {self.tasks}")
        if self.contract_model in self.deploy_only:
            raise ValueError(f"Family {self.name}: the contract model {self.contract_model} is deploy-only")

    def reduced_kwargs(self, **overrides: Any) -> Dict[str, Any]:
        """The reduced configuration's kwargs (a fresh dict), with ``overrides`` applied."""
        return {**dict(self.reduced), **overrides}
