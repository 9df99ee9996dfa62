"""timm contract methods shared by the stage-pyramid models (a ``stages`` list whose stages carry a
``grad_checkpointing`` flag, a ``visionzoo.layers.ClassifierHead`` as ``head``)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


class PyramidMixin:
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)
        if global_pool is not None:
            self.global_pool = global_pool
