"""vz_biformer_small against the official BiFormer-S (rayleizhu/BiFormer, legacy BRA), in one process, on CPU.

    git clone https://github.com/rayleizhu/BiFormer /tmp/official-biformer   # pure PyTorch; needs einops
    .venv/bin/python benchmarks/bench_biformer.py --official /tmp/official-biformer
    .venv/bin/python benchmarks/bench_biformer.py --official /tmp/official-biformer --cases 224 --modes eval

The official code is imported from ``--official`` (never part of this repository); ``fairscale`` (only its
checkpoint wrapper, unused here) is stubbed when it is not installed. Both models get the same weights: the official
model's state dict, random BatchNorm statistics included, converted by our ``checkpoint_filter_fn``; every row
reports the largest logit difference. Cases:

* 224, batch 8 and 448, batch 2: multiples of 112, so the official code runs unpadded (n_win 7) and both models
  compute exactly the same function;
* 512, batch 2: not whole regions at n_win 7 (128/64/32 px maps), so both run in ``auto_pad`` mode (the official
  zero padding before qkv; ours ``auto_pad=True``), again the same function.

Timings are medians of interleaved repeats (ours, official, ours, ...); peak memory is the highest sum of live CPU
allocations during one profiled call (activations, workspaces and gradients; the weights exist before).
speedup = official time / our time; memory ratio = our peak / official peak.

``--clock cpu`` measures the CPU time the process consumed (``time.process_time``) instead of wall time: on a shared
machine whose cores other jobs keep busy, wall times mostly measure the waiting. Use it with ``--threads 1``
(idle OpenMP threads spin and would be counted); img/s is then images per CPU-second.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import types

import timm
import torch

import visionzoo  # noqa: F401  (registers vz_* models)
from common import machine_line, make_step, markdown_table, peak_memory_mb
from visionzoo.models.biformer import checkpoint_filter_fn

CASES = {"224": (224, 8, False), "448": (448, 2, False), "512": (512, 2, True)}  # size, batch, auto_pad


def official_module(path: str):
    sys.path.insert(0, path)
    try:
        import fairscale.nn.checkpoint  # noqa: F401
    except ImportError:  # the official models import its checkpoint_wrapper at module level; unused here
        for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["fairscale.nn.checkpoint"].checkpoint_wrapper = lambda module, *a, **k: module
    import models.biformer as official  # noqa: E402  (rayleizhu/BiFormer/models/biformer.py)
    return official


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (init values would hide a swapped tensor)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def build_pair(official, auto_pad: bool):
    torch.manual_seed(0)
    anchor = official.biformer_small(auto_pad=auto_pad)
    with torch.no_grad():
        randomize_bn(anchor)
    ours = timm.create_model("vz_biformer_small", auto_pad=auto_pad)
    ours.load_state_dict(checkpoint_filter_fn({"model": anchor.state_dict()}, ours))
    return ours, anchor


def interleaved_medians(steps, repeats: int, clock) -> list:
    """Median time per call of each step on ``clock``, measured alternately after one warm-up call each."""
    for step in steps:
        step()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            t0 = clock()
            step()
            times[i].append(clock() - t0)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="a checkout of rayleizhu/BiFormer")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the (profiled) peak-memory calls")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    official = official_module(args.official)
    print(f"# BiFormer-S on CPU: {machine_line()}, {args.clock} clock\n", flush=True)
    rows = []
    for case in args.cases:
        size, batch, auto_pad = CASES[case]
        ours, anchor = build_pair(official, auto_pad)
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))
        for mode in args.modes:
            for m in (ours, anchor):
                m.train(mode == "train")
            for dtype in args.dtypes:
                steps = [make_step(m, x, mode, dtype) for m in (ours, anchor)]
                if mode == "train":  # the same function: compared in eval mode (no drop path, running statistics)
                    ours.eval(), anchor.eval()
                    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bf16"):
                        diff = (ours(x).float() - anchor(x).float()).abs().max().item()
                    ours.train(), anchor.train()
                else:
                    outs = [s() for s in steps]
                    diff = (outs[0].float() - outs[1].float()).abs().max().item()
                t_ours, t_off = interleaved_medians(steps, args.repeats, clock)
                mem = [None, None] if args.no_memory else [peak_memory_mb(s) for s in steps]
                rows.append({
                    "size": size, "batch": batch, "auto_pad": auto_pad, "mode": mode, "dtype": dtype,
                    "official img/s": f"{batch / t_off:.2f}", "ours img/s": f"{batch / t_ours:.2f}",
                    "speedup": f"{t_off / t_ours:.2f}x",
                    "peak MB official": "-" if mem[1] is None else f"{mem[1]:.0f}",
                    "peak MB ours": "-" if mem[0] is None else f"{mem[0]:.0f}",
                    "memory ratio": "-" if mem[0] is None else f"{mem[0] / mem[1]:.2f}",
                    "max logit diff": f"{diff:.1e}",
                })
                print(rows[-1], flush=True)
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
