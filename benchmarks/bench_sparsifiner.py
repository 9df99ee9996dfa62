"""vz_sparsifiner_deit_small against the official masked-dense Sparsifiner and against timm's DeiT-S, on CPU.

    .venv/bin/python benchmarks/bench_sparsifiner.py                                  # 224 and 384, keep 0.25 / 0.5
    .venv/bin/python benchmarks/bench_sparsifiner.py --official-src /tmp/Sparsifiner/src   # also the official code

Runs, interleaved (medians over repeats), eval-mode forwards, fp32, same weights everywhere:

* ``ours``: ``vz_sparsifiner_deit_small`` (attention on ``sparse_attention``, cost N x K);
* ``masked``: the same model with ``attn_impl="masked_dense"`` (full N x N scores, the selection as an SDPA mask:
  the official formulation, in our code);
* ``official``: lim142857/Sparsifiner's ``Sparsifiner`` built as its ``main.py`` builds it with the default config,
  when ``--official-src`` points at a checkout's ``src`` folder (needs ``yacs``; not part of this repository);
* ``deit``: timm's ``deit_small_patch16_224`` (dense fused attention, no predictor) with the backbone weights.

Each model is built for the benchmarked size (``img_size``; the official code asserts it), so all share one state
dict (the official construction ties n_down to N: 32 at 224, 96 at 384). Prints a markdown table: img/s and the
ratios ours/official, ours/masked, ours/deit (above 1: ours is faster), and the largest logit difference to the
official model (or to ``masked``).
"""
from __future__ import annotations

import argparse
import sys

import timm
import torch

import visionzoo  # noqa: F401  (registers vz_* models)
from common import interleaved_medians, machine_line, make_step, markdown_table


def official_model(src: str, size: int, keep: float):
    sys.path.insert(0, src)
    import glob
    import os

    from config.default_config import get_cfg_defaults
    from models.sparsifiner import Sparsifiner

    cfg = get_cfg_defaults()
    yaml = glob.glob(os.path.join(src, "..", "experiments-results-analysis", "experiments",
                                  "sparsifiner_default_config.yaml"))[0]
    cfg.merge_from_file(yaml)
    cfg.SPAR.ATTN_KEEP_RATE = keep
    cfg.freeze()
    return Sparsifiner(img_size=size, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True,
                       distill=True, attn_keep_rate_list=[keep] * 12, token_keep_rate_list=[1.0] * 12,
                       token_pruning_loc_indicator=[False] * 12, reduce_n_factor=cfg.SPAR.REDUCE_N_FACTOR,
                       reduce_c_factor=cfg.SPAR.REDUCE_C_FACTOR, share_inout_proj=False, cfg=cfg)


class Logits(torch.nn.Module):
    """The official model returns a dict; the benchmark times its logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 384])
    parser.add_argument("--keep", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--official-src", default=None, help="path to a lim142857/Sparsifiner checkout's src folder")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    rows = []
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size)
        deit = timm.create_model("deit_small_patch16_224", img_size=size).eval()
        for keep in args.keep:
            torch.manual_seed(0)
            ours = timm.create_model("vz_sparsifiner_deit_small", img_size=size, attn_keep_rate=keep).eval()
            state = ours.state_dict()
            deit.load_state_dict({k: v for k, v in state.items() if ".mask_predictor." not in k})
            masked = timm.create_model("vz_sparsifiner_deit_small", img_size=size, attn_keep_rate=keep,
                                       attn_impl="masked_dense").eval()
            masked.load_state_dict(state)
            runs = {"ours": ours, "masked": masked, "deit": deit}
            if args.official_src:
                official = official_model(args.official_src, size, keep)
                official.load_state_dict(state)
                runs["official"] = Logits(official.eval())
            steps = [make_step(m, x, "eval", "fp32") for m in runs.values()]
            times = dict(zip(runs, interleaved_medians(steps, args.repeats)))
            with torch.no_grad():
                ref_name = "official" if "official" in runs else "masked"
                diff = (runs["ours"](x) - runs[ref_name](x)).abs().max().item()
            row = {"size": size, "keep": keep, "batch": args.batch}
            row.update({f"{n} img/s": f"{args.batch / t:.1f}" for n, t in times.items()})
            for n in ("official", "masked", "deit"):
                if n in times:
                    row[f"ours/{n}"] = f"{times[n] / times['ours']:.2f}x"
            row[f"max logit diff vs {ref_name}"] = f"{diff:.1e}"
            rows.append(row)
            print(row, flush=True)
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
