"""vz_l2vit_tiny against the official L2ViT_Tiny (ChuanyangZheng/L2ViT, classification/models/l2vit.py), in one
process, on CPU, with the same weights.

    .venv/bin/python benchmarks/bench_l2vit.py --official /path/to/L2ViT            # 224 (batch 8) and 512 (batch 2)
    .venv/bin/python benchmarks/bench_l2vit.py --official /path/to/L2ViT --sizes 224 --batch 8 --dtypes fp32
    .venv/bin/python benchmarks/bench_l2vit.py --scaling                             # ours only, time per pixel

README's numbers: ``--official /tmp/official-l2vit --threads 1 --sizes 224 512 --batch 1 1 --repeats 3 --no-memory``
and ``--scaling --threads 1 --repeats 3`` (one thread: on a shared machine the CPU-time ratio is the steady one).

Weights: the official model's, redrawn so that logits are O(1-10) (benchmarks/linear_families.py), loaded into ours
through ``checkpoint_filter_fn``. Every row reports the largest logit difference between the two; bf16 rows also the
difference bf16 autocast makes against fp32 (L2ViT was trained in fp32 only: ``--use_amp=false``). The official
code needs timm; it runs unmodified.
"""
from __future__ import annotations

import os

import timm

import visionzoo  # noqa: F401  (registers vz_* models)
from linear_families import import_official, main, randomize_like_trained
from visionzoo.models.l2vit import checkpoint_filter_fn


def build_pair(official_dir, extra_paths):
    ours = timm.create_model("vz_l2vit_tiny")
    if official_dir is None:
        randomize_like_trained(ours)
        return ours, None
    module = import_official(os.path.join(official_dir, "classification", "models", "l2vit.py"), extra_paths)
    official = module.L2ViT_Tiny(drop_path_rate=0.0)
    randomize_like_trained(official)
    ours.load_state_dict(checkpoint_filter_fn(official.state_dict(), ours))
    return ours, official


if __name__ == "__main__":
    main("vz_l2vit_tiny", "L2ViT-T: vz_l2vit_tiny vs the official L2ViT_Tiny", build_pair, "/tmp/official-l2vit",
         "VZ_OFFICIAL_L2VIT", ["local+linear"] * 4, __doc__)
