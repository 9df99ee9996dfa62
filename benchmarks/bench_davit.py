"""vz_davit_* against timm's davit.py (the port of the official DaViT and of Florence-2's tower), in one process, on CPU.

    .venv/bin/python benchmarks/bench_davit.py                                  # every row (takes a while)
    .venv/bin/python benchmarks/bench_davit.py --models tiny --sizes 224 --dtypes fp32 --modes eval train
    .venv/bin/python benchmarks/bench_davit.py --threads 1                      # a shared machine: see below

Pairs: ``vz_davit_tiny`` / ``davit_tiny`` and ``vz_davit_base_fl`` / ``davit_base_fl``, the same weights (timm's
state dict loaded into ours, randomized so that every layer matters); every row reports the largest output
difference. ``eval``: a no-grad forward; ``train``: forward, cross-entropy, backward. Times are medians over
interleaved repeats (ours, timm, ours, timm ...). Besides wall-clock time, the process CPU time of each call is
measured: on a machine shared with other jobs, a process waits for a core for part of every call, which wall-clock
time counts and CPU time does not, so the CPU-time ratio is the steadier figure there (run with ``--threads 1``:
a second OpenMP thread that is descheduled stalls every parallel region of the first).
"""
from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import visionzoo  # noqa: F401  (registers vz_* models)
from common import machine_line, make_step, markdown_table, peak_memory_mb

PAIRS = {"tiny": ("vz_davit_tiny", "davit_tiny"), "base_fl": ("vz_davit_base_fl", "davit_base_fl")}
# batch per (model, size): the row the issue asks for (tiny, 224, batch 8) and what fits the time on 2 cores
BATCH = {("tiny", 224): 8, ("tiny", 512): 8, ("base_fl", 224): 8, ("base_fl", 512): 1}


def build_pair(which: str):
    ours_name, timm_name = PAIRS[which]
    anchor = timm.create_model(timm_name, num_classes=1000)
    g = torch.Generator().manual_seed(0)
    anchor.load_state_dict({k: torch.randn(v.shape, generator=g) * 0.02 + (1.0 if k.endswith("norm.weight") else 0.0)
                            for k, v in anchor.state_dict().items()})
    ours = timm.create_model(ours_name, num_classes=1000)
    ours.load_state_dict(anchor.state_dict())
    return ours, anchor


def interleaved(steps, repeats: int):
    """(wall medians, CPU-time medians) per step, measured alternately (the order flips every repeat)."""
    wall, cpu = [[] for _ in steps], [[] for _ in steps]
    for r in range(repeats):
        order = range(len(steps)) if r % 2 == 0 else reversed(range(len(steps)))
        for i in order:
            w0, c0 = time.perf_counter(), time.process_time()
            steps[i]()
            cpu[i].append(time.process_time() - c0)
            wall[i].append(time.perf_counter() - w0)
    return [statistics.median(t) for t in wall], [statistics.median(t) for t in cpu]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "base_fl"], choices=sorted(PAIRS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512], choices=[224, 512])
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=None, help="override the per-row batch sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the (profiled) peak-memory call")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"# DaViT on CPU: {machine_line()}\n", flush=True)
    rows = []
    for which in args.models:
        ours, anchor = build_pair(which)
        for size in args.sizes:
            batch = args.batch or BATCH[(which, size)]
            x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))
            for mode in args.modes:
                for m in (ours, anchor):
                    m.train(mode == "train")
                for dtype in args.dtypes:
                    steps = [make_step(m, x, mode, dtype) for m in (ours, anchor)]
                    outs = [s() for s in steps]  # warm-up, and the outputs compared
                    diff = (outs[0].float() - outs[1].float()).abs().max().item()
                    (w_ours, w_timm), (c_ours, c_timm) = interleaved(steps, args.repeats)
                    mem = ["-", "-"] if args.no_memory else [f"{peak_memory_mb(s):.0f}" for s in steps]
                    rows.append({
                        "model": PAIRS[which][0], "size": size, "batch": batch, "mode": mode, "dtype": dtype,
                        "timm img/s": f"{batch / w_timm:.2f}", "ours img/s": f"{batch / w_ours:.2f}",
                        "speedup (wall)": f"{w_timm / w_ours:.2f}x", "speedup (CPU time)": f"{c_timm / c_ours:.2f}x",
                        "peak MB timm": mem[1], "peak MB ours": mem[0], "max out diff": f"{diff:.1e}",
                    })
                    print(rows[-1], flush=True)
        del ours, anchor
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
