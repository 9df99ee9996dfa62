"""Shared test helpers. Importing visionzoo registers the zoo with timm before tests are collected."""
from __future__ import annotations

import functools
import os

import torch

# Without a GPU, the Triton kernel tests run on CPU tensors in Triton's interpreter. Triton decides once,
# when it is first imported, whether its library is interpreted; timm imports it (via torch._dynamo), so
# the variable must be set here, before timm. It has no effect on anything but Triton (inductor's CPU
# backend generates C++). Never set on a GPU machine, where the kernels must compile for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import timm  # noqa: E402

import visionzoo  # noqa: F401  (registers the vz_* models)

torch.set_num_threads(min(2, os.cpu_count() or 1))

ALL_MODELS = timm.list_models("vz_*")
FAMILIES = sorted({m for m in timm.list_modules() if timm.list_models("vz_*", module=m)})


@functools.lru_cache(maxsize=None)
def meta_param_count(name: str, **kwargs) -> int:
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def smallest_of_each_family() -> list[str]:
    """The smallest registered variant of every family: the models the heavier contract tests run on."""
    return [min(timm.list_models("vz_*", module=f), key=meta_param_count) for f in FAMILIES]


SMALLEST = smallest_of_each_family()


def small_input_size(name: str, size: int = 64) -> tuple[int, int, int]:
    """A small test input at or above the model's documented minimum."""
    cfg = timm.get_pretrained_cfg(name).to_dict()
    min_size = cfg.get("min_input_size") or cfg["input_size"]
    return (cfg["input_size"][0], max(size, min_size[1]), max(size, min_size[2]))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
