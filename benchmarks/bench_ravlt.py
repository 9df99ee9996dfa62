"""vz_ravlt_t against the official RAVLT_T (qhfan/RALA, classfication/RALA.py), in one process, on CPU, with the same
weights.

    .venv/bin/python benchmarks/bench_ravlt.py --official /path/to/RALA --extra-path /venv/lib/python3.11/site-packages
    .venv/bin/python benchmarks/bench_ravlt.py --official /path/to/RALA --sizes 512 --batch 2 --modes eval
    .venv/bin/python benchmarks/bench_ravlt.py --scaling                             # ours only, time per pixel

README's numbers: ``--threads 1 --sizes 224 512 --batch 1 1 --repeats 3 --no-memory`` and ``--scaling --threads 1
--repeats 3`` (plus ``--repeats 7 --shapes 224x224 1024x1024 224x400 576x1024`` for the end points).

The official file imports einops and fvcore (``--extra-path`` appends a site-packages folder that has them). Its
factory fixes drop path 0.1; the model is built here from the same RAVLT_T arguments with drop path 0, so that train
steps compare like with like. Weights: the official model's, redrawn so that logits are O(1-10)
(benchmarks/linear_families.py), loaded into ours through ``checkpoint_filter_fn``. Every row reports the largest
logit difference; bf16 rows also the difference bf16 autocast makes against fp32 (the official run trained in fp16
autocast). RAVLT is a hybrid: the sweep shows its linear stages (1-2) and softmax stages (3-4) separately.
"""
from __future__ import annotations

import os

import timm

import visionzoo  # noqa: F401  (registers vz_* models)
from linear_families import import_official, main, randomize_like_trained
from visionzoo.models.ravlt import checkpoint_filter_fn

RAVLT_T = dict(embed_dims=[64, 128, 256, 512], depths=[2, 2, 6, 2], num_heads=[1, 2, 4, 8], mlp_ratios=[3.5] * 4,
               projection=1024, layerscales=[True] * 4, layer_init_values=[1, 1, 1, 1])


def build_pair(official_dir, extra_paths):
    ours = timm.create_model("vz_ravlt_t")
    if official_dir is None:
        randomize_like_trained(ours)
        return ours, None
    module = import_official(os.path.join(official_dir, "classfication", "RALA.py"), extra_paths)
    official = module.RAVLT(drop_path_rate=0.0, **RAVLT_T)
    randomize_like_trained(official)
    ours.load_state_dict(checkpoint_filter_fn(official.state_dict(), ours))
    return ours, official


if __name__ == "__main__":
    main("vz_ravlt_t", "RAVLT-T: vz_ravlt_t vs the official RAVLT_T", build_pair, "/tmp/official-ravlt",
         "VZ_OFFICIAL_RALA", ["linear", "linear", "softmax", "softmax"], __doc__)
