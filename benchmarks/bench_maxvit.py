"""vz_maxvit_* against timm's port of the official model (maxvit_*_tf_*), in one process, on CPU.

    .venv/bin/python benchmarks/bench_maxvit.py                      # everything (compiled runs take long)
    .venv/bin/python benchmarks/bench_maxvit.py --exec eager --dtypes fp32 --sizes 224
    .venv/bin/python benchmarks/bench_maxvit.py --scaling           # time per megapixel vs resolution

Both models get the same weights (timm's state dict loaded into ours); every configuration reports
the largest logit difference. Prints a markdown table; speedup = ours img/s / timm img/s.
"""
from __future__ import annotations

import argparse
import time

import timm
import torch

import visionzoo  # noqa: F401  (registers vz_* models)
from common import interleaved_medians, machine_line, make_step, markdown_table, peak_memory_mb

PAIRS = {224: ("vz_maxvit_tiny", "maxvit_tiny_tf_224"), 384: ("vz_maxvit_tiny_384", "maxvit_tiny_tf_384")}


def build_pair(size: int):
    ours_name, timm_name = PAIRS[size]
    anchor = timm.create_model(timm_name)
    ours = timm.create_model(ours_name)
    ours.load_state_dict(anchor.state_dict())
    return ours, anchor


def scaling(sizes, repeats: int) -> None:
    """Eval time per megapixel, batch 1, fp32 eager, vz_maxvit_tiny (window 7) across resolutions; timm's
    maxvit_tiny_tf_224 only where it runs (window 7 must divide every stage: multiples of 224)."""
    ours, anchor = build_pair(224)
    ours.eval(), anchor.eval()
    rows = []
    for size in sizes:
        x = torch.randn(1, 3, size, size)
        runs = [make_step(ours, x, "eval", "fp32")] + ([make_step(anchor, x, "eval", "fp32")] if size % 224 == 0 else [])
        times = interleaved_medians(runs, repeats)
        mpix = size * size / 1e6
        rows.append({"size": size, "ours ms": f"{times[0] * 1e3:.0f}", "ours ms/MPix": f"{times[0] * 1e3 / mpix:.0f}",
                     "timm ms/MPix": f"{times[1] * 1e3 / mpix:.0f}" if len(times) > 1 else "(asserts)"})
        print(rows[-1], flush=True)
    print()
    print(markdown_table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 384], choices=sorted(PAIRS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--exec", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"],
                        dest="executions")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the (profiled) peak-memory call")
    parser.add_argument("--scaling", type=int, nargs="*", default=None, metavar="SIZE",
                        help="only the resolution sweep (default sizes 160 224 288 352 448 512 640)")
    args = parser.parse_args()

    print(f"# MaxViT on CPU: {machine_line()}\n", flush=True)
    if args.scaling is not None:
        return scaling(args.scaling or [160, 224, 288, 352, 448, 512, 640], args.repeats)
    rows = []
    for size in args.sizes:
        ours, anchor = build_pair(size)
        for mode in args.modes:
            for m in (ours, anchor):
                m.train(mode == "train")
            for execution in args.executions:
                runners = (ours, anchor) if execution == "eager" else (torch.compile(ours), torch.compile(anchor))
                for batch in args.batches:
                    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
                    for dtype in args.dtypes:
                        steps = [make_step(r, x, mode, dtype) for r in runners]
                        t0 = time.perf_counter()
                        outs = [s() for s in steps]  # also the compile warm-up
                        warm = time.perf_counter() - t0
                        diff = (outs[0].float() - outs[1].float()).abs().max().item()
                        t_ours, t_timm = interleaved_medians(steps, args.repeats)
                        mem = ["-", "-"] if args.no_memory else [f"{peak_memory_mb(s):.0f}" for s in steps]
                        rows.append({
                            "size": size, "batch": batch, "mode": mode, "exec": execution, "dtype": dtype,
                            "timm img/s": f"{batch / t_timm:.1f}", "ours img/s": f"{batch / t_ours:.1f}",
                            "speedup": f"{t_timm / t_ours:.2f}x",
                            "peak MB timm": mem[1], "peak MB ours": mem[0],
                            "max logit diff": f"{diff:.1e}",
                        })
                        print(f"{rows[-1]}  (first call {warm:.1f} s)", flush=True)
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
