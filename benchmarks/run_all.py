"""One runner for the README's results table: every family against its anchor, and the resolution-scaling plot.

    .venv/bin/python benchmarks/run_all.py run --threads 1                  # every pair at 224 and 512, eval + train
    .venv/bin/python benchmarks/run_all.py run --families davit dinat --sizes 224 --modes eval
    .venv/bin/python benchmarks/run_all.py run --official biformer=/tmp/BiFormer --official l2vit=/tmp/L2ViT ...
    .venv/bin/python benchmarks/run_all.py run --compile                    # our models compiled, 224 eval only
    .venv/bin/python benchmarks/run_all.py scaling                          # time per pixel, 224^2 .. 1024^2
    .venv/bin/python benchmarks/run_all.py table                            # README's table from results.json
    .venv/bin/python benchmarks/run_all.py plot                             # benchmarks/scaling.png ([bench] extra)

Pairs (the family issues' anchors; the same weights on both sides wherever the anchor is the same architecture, and
then the largest output difference is reported): timm's ports where they exist (MaxViT, DaViT), the official code
from a checkout the user fetched (``--official FAMILY=PATH``: BiFormer, L2ViT, RAVLT, OverLoCK, Sparsifiner; never
shipped), and for DiNAT and the isotropic models, whose official code needs a NATTEN that no longer runs, the timm
model a user would take instead (Swin-T, ViT-S). A pair whose anchor is not given or cannot run at a size is
measured without it (ours alone), and the row says why.

Every measurement is a row in ``benchmarks/results.json``, keyed by (kind, family, size, batch, mode, dtype, exec):
a new run replaces the rows it measures and keeps the others, so runs can be spread over sessions, and each row
carries its date, machine, thread count, load average and commit. Timing: medians over interleaved repeats (the
order flips every repeat) of wall and process CPU time; on a machine shared with other jobs run ``--threads 1`` and
read the CPU-time ratio. Each row also gives the share of this CPU's fp32 (or bf16) matmul peak that the model
reaches, the peak measured by the runner itself (a 2048^2 GEMM, GFLOP per CPU-second), with FLOPs from
``visionzoo.flops`` (attention by each op's formula; a train step counted as 3x the forward).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import timm
import torch
import torch.nn.functional as F

import visionzoo  # noqa: F401  (registers vz_* models)
from common import autocast_context, peak_memory_mb
from linear_families import timed_medians
from visionzoo.bench import machine_line
from visionzoo.flops import count_model_flops

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
README = HERE.parent / "README.md"
PLOT = HERE / "scaling.png"
TABLE_BEGIN, TABLE_END = "<!-- results-table:begin -->", "<!-- results-table:end -->"
BATCH = {224: 8, 512: 2}  # the family issues' rows; other sizes: 1
SCALING_SIZES = (224, 320, 448, 512, 640, 768, 1024)
SPARSIFINER_KEEP = 0.25  # the official default configuration's attention keep rate
KEY = ("kind", "family", "size", "batch", "mode", "dtype", "exec")

Model = torch.nn.Module
Built = Tuple[Model, Optional[Model], str]  # ours, anchor (or None), why the anchor is missing


class MainAndAux(Model):
    """Train mode: (main logits, auxiliary logits) of a model with an auxiliary head; eval: the main logits."""

    def __init__(self, model: Model, train_outputs: Callable[[Model, torch.Tensor], Tuple[torch.Tensor, ...]]):
        super().__init__()
        self.model, self.train_outputs = model, train_outputs

    def forward(self, x):
        if self.training:
            return self.train_outputs(self.model, x)
        out = self.model(x)
        return out["main"] if isinstance(out, dict) else out


def _forget_models_package() -> None:
    """Several official repositories import their own top-level ``models`` package: forget the last one's."""
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        del sys.modules[name]


def _maxvit(size, paths) -> Built:
    import bench_maxvit
    ours, anchor = bench_maxvit.build_pair(224)
    if size % 224:  # timm's MaxViT asserts its training size (window 7 must divide every stage)
        return ours, None, "timm's maxvit_tiny_tf_224 runs only at multiples of 224"
    if size != 224:
        anchor = timm.create_model("maxvit_tiny_tf_224", img_size=size)
        anchor.load_state_dict(ours.state_dict())
    return ours, anchor, ""


def _davit(size, paths) -> Built:
    import bench_davit
    ours, anchor = bench_davit.build_pair("tiny")
    return ours, anchor, ""


def _biformer(size, paths) -> Built:
    import bench_biformer
    path = paths.get("biformer")
    auto_pad = size % 112 != 0  # the official code needs padding at sizes that are not multiples of 112
    if path is None:
        return timm.create_model("vz_biformer_small", auto_pad=auto_pad), None, "no --official biformer=PATH"
    _forget_models_package()
    ours, anchor = bench_biformer.build_pair(bench_biformer.official_module(path), auto_pad)
    return ours, anchor, ""


def _user_alternative(ours_name: str, anchor_name: str):
    def build(size, paths) -> Built:  # another architecture: no shared weights, no output comparison
        return timm.create_model(ours_name), timm.create_model(anchor_name, img_size=size), ""
    return build


def _linear(script: str, family: str):
    def build(size, paths) -> Built:
        module = __import__(script)
        ours, anchor = module.build_pair(paths.get(family), [])
        return ours, anchor, "" if anchor is not None else f"no --official {family}=PATH"
    return build


def _overlock(size, paths) -> Built:
    import bench_overlock
    path = paths.get("overlock")
    ours_train = lambda m, x: tuple(m.forward_train(x)[k] for k in ("logits", "aux_logits"))  # noqa: E731
    if path is None:
        return MainAndAux(timm.create_model("vz_overlock_t"), ours_train), None, "no --official overlock=PATH"
    ours, anchor = bench_overlock.build_pair(bench_overlock.load_official(path, []))
    official_train = lambda m, x: tuple(m(x)[k] for k in ("main", "aux"))  # noqa: E731
    return MainAndAux(ours, ours_train), MainAndAux(anchor, official_train), ""


def _sparsifiner(size, paths) -> Built:
    import bench_sparsifiner
    torch.manual_seed(0)
    ours = timm.create_model("vz_sparsifiner_deit_small", img_size=size, attn_keep_rate=SPARSIFINER_KEEP)
    path = paths.get("sparsifiner")
    if path is None:
        return ours, None, "no --official sparsifiner=PATH (a checkout's src folder)"
    _forget_models_package()
    official = bench_sparsifiner.official_model(path, size, SPARSIFINER_KEEP)
    official.load_state_dict(ours.state_dict())
    return ours, bench_sparsifiner.Logits(official), ""


@dataclass
class Pair:
    ours: str
    anchor: str
    build: Callable[[int, Dict[str, str]], Built]
    aux_weight: float = 0.0  # a train step's loss: main + aux_weight * auxiliary cross-entropy
    same_weights: bool = True


PAIRS: Dict[str, Pair] = {
    "maxvit": Pair("vz_maxvit_tiny", "timm maxvit_tiny_tf_224", _maxvit),
    "davit": Pair("vz_davit_tiny", "timm davit_tiny", _davit),
    "biformer": Pair("vz_biformer_small", "official biformer_small", _biformer),
    "dinat": Pair("vz_dinat_tiny", "timm swin_tiny_patch4_window7_224",
                  _user_alternative("vz_dinat_tiny", "swin_tiny_patch4_window7_224"), same_weights=False),
    "dinat_isotropic": Pair("vz_dinat_isotropic_small", "timm vit_small_patch16_224",
                            _user_alternative("vz_dinat_isotropic_small", "vit_small_patch16_224"), same_weights=False),
    "l2vit": Pair("vz_l2vit_tiny", "official L2ViT_Tiny", _linear("bench_l2vit", "l2vit")),
    "ravlt": Pair("vz_ravlt_t", "official RAVLT_T", _linear("bench_ravlt", "ravlt")),
    "overlock": Pair("vz_overlock_t", "official overlock_t", _overlock, aux_weight=0.4),
    "sparsifiner": Pair("vz_sparsifiner_deit_small", "official Sparsifiner (masked dense)", _sparsifiner),
}


def make_step(model: Model, x: torch.Tensor, mode: str, dtype: str, aux_weight: float):
    """``eval``: a no-grad forward; ``train``: forward, cross-entropy (+ the auxiliary term), backward. Returns the
    main logits."""
    labels = torch.randint(0, 1000, (x.shape[0],), generator=torch.Generator().manual_seed(0))

    def step():
        if mode == "eval":
            with torch.no_grad(), autocast_context(dtype):
                return model(x)
        model.zero_grad(set_to_none=True)
        with autocast_context(dtype):
            out = model(x)
        main, aux = out if isinstance(out, tuple) else (out, None)
        loss = F.cross_entropy(main.float(), labels)
        if aux is not None:
            loss = loss + aux_weight * F.cross_entropy(aux.float(), labels)
        loss.backward()
        return main
    return step


def matmul_peak_gflops(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """This CPU's GEMM throughput in GFLOP per CPU-second (the best of a few n x n matmuls): the peak that the
    models' shares are taken of, on the same clock as their CPU-time figures (a loaded machine does not lower it)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    if dtype == "bf16":
        a, b = a.bfloat16(), b.bfloat16()
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        a @ b
        best = min(best, time.process_time() - t0)
    return 2 * n ** 3 / best / 1e9


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    results = f":!{RESULTS.relative_to(HERE.parent)}"  # the results file aside: the runs write it
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", results],
                           capture_output=True, text=True, cwd=HERE.parent).stdout.strip()
    return (out.stdout.strip() or "?") + ("+dirty" if dirty else "")


def _context() -> Dict[str, object]:
    return {"date": datetime.date.today().isoformat(), "machine": machine_line("cpu").split(", ", 1)[1],
            "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 1), "commit": _commit()}


def _gflops(name: str, size: int, kwargs=None) -> float:
    total, _ = count_model_flops(name, (3, size, size), **(kwargs or {}))
    return total / 1e9


def run_pairs(families, sizes, modes, dtypes, repeats: int, paths, memory: bool, compiled: bool,
              batch_override: Optional[int] = None) -> Iterator[Dict]:
    """Yields one row per (family, size, mode, dtype), as soon as it is measured."""
    peaks = {dtype: matmul_peak_gflops(dtype) for dtype in dtypes}
    for family in families:
        pair = PAIRS[family]
        for size in sizes:
            ours, anchor, missing = pair.build(size, paths)
            if compiled:
                ours, anchor, missing = torch.compile(ours), None, "compiled rows: ours only"
            batch = batch_override or BATCH.get(size, 1)
            x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))
            gflops = _gflops(pair.ours, size)
            initial = {id(m): {k: v.clone() for k, v in m.state_dict().items()} for m in (ours, anchor) if m is not None}
            for mode in modes:
                for dtype in dtypes:
                    models = [m for m in (ours, anchor) if m is not None]
                    for m in models:  # train steps move BatchNorm statistics: every row starts from the same
                        m.load_state_dict(initial[id(m)])
                        m.train(mode == "train")
                    steps = [make_step(m, x, mode, dtype, pair.aux_weight) for m in models]
                    outs = [s().detach().float() for s in steps]
                    wall, cpu = timed_medians(steps, repeats)
                    mem = [peak_memory_mb(s) for s in steps] if memory else [None] * len(steps)
                    flops = gflops * (3 if mode == "train" else 1)
                    row = {"kind": "pair", "family": family, "ours": pair.ours, "anchor": pair.anchor,
                           "size": size, "batch": batch, "mode": mode, "dtype": dtype,
                           "exec": "compiled" if compiled else "eager", "gflops_per_image": round(gflops, 3),
                           "ours_img_s": round(batch / wall[0], 3), "ours_cpu_img_s": round(batch / cpu[0], 3),
                           "ours_peak_mb": None if mem[0] is None else round(mem[0], 1),
                           "matmul_peak_gflops": round(peaks[dtype], 1),
                           "share_of_peak": round(flops * batch / cpu[0] / peaks[dtype], 3)}
                    if anchor is not None:
                        row.update(anchor_img_s=round(batch / wall[1], 3), anchor_cpu_img_s=round(batch / cpu[1], 3),
                                   anchor_peak_mb=None if mem[1] is None else round(mem[1], 1),
                                   speedup_wall=round(wall[1] / wall[0], 3), speedup_cpu=round(cpu[1] / cpu[0], 3),
                                   max_out_diff=(float(f"{(outs[0] - outs[1]).abs().max().item():.2e}")
                                                 if pair.same_weights else None))
                    else:
                        row["anchor_missing"] = missing
                    row.update(_context())
                    yield row


def run_scaling(families, sizes, repeats: int) -> Iterator[Dict]:
    """Our models' eval time per megapixel (batch 1, fp32, eager) from 224^2 to 1024^2, one row per size."""
    for family in families:
        name = PAIRS[family].ours
        model = timm.create_model(name, **({"img_size": 224} if family == "sparsifiner" else {})).eval()
        for size in sizes:
            if family == "sparsifiner":  # its token down-projection is built for one grid: rebuild per size
                model = timm.create_model(name, img_size=size).eval()
            step = make_step(model, torch.randn(1, 3, size, size), "eval", "fp32", 0.0)
            wall, cpu = timed_medians([step], repeats)
            row = {"kind": "scaling", "family": family, "ours": name, "size": size, "batch": 1, "mode": "eval",
                   "dtype": "fp32", "exec": "eager", "cpu_ms": round(cpu[0] * 1e3, 2),
                   "ms_per_mpix": round(cpu[0] * 1e3 / (size * size / 1e6), 1)}
            row.update(_context())
            yield row


def load_results(path: Path) -> List[Dict]:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def save_results(path: Path, new_rows: List[Dict]) -> None:
    """Merge ``new_rows`` into the results file: a row replaces the stored row with the same key."""
    rows = {tuple(r[k] for k in KEY): r for r in load_results(path)}
    rows.update({tuple(r[k] for k in KEY): r for r in new_rows})
    ordered = sorted(rows.values(), key=lambda r: tuple(str(r[k]) for k in KEY))
    path.write_text(json.dumps({"rows": ordered}, indent=1) + "\n")


def _fmt(value, spec: str = "", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def results_table(rows: List[Dict]) -> str:
    """The README's markdown table of the pair rows."""
    head = ["family", "ours", "anchor", "size", "batch", "mode", "dtype", "exec", "ours img/s", "anchor img/s",
            "speedup (CPU time)", "speedup (wall)", "peak MB ours / anchor", "max out diff", "share of matmul peak",
            "measured"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in (r for r in rows if r["kind"] == "pair"):
        anchor = r["anchor"] if "anchor_missing" not in r else f"({r['anchor']}: {r['anchor_missing']})"
        memory = f"{_fmt(r.get('ours_peak_mb'), '.0f')} / {_fmt(r.get('anchor_peak_mb'), '.0f')}"
        measured = f"{r['date']}, {r['machine'].split(',')[0]}, {r['threads']} thr, load {r['load']}, {r['commit']}"
        cells = [r["family"], f"`{r['ours']}`", anchor, f"{r['size']}", f"{r['batch']}", r["mode"], r["dtype"],
                 r["exec"], _fmt(r["ours_cpu_img_s"], ".2f"), _fmt(r.get("anchor_cpu_img_s"), ".2f"),
                 _fmt(r.get("speedup_cpu"), ".2f", "x"), _fmt(r.get("speedup_wall"), ".2f", "x"), memory,
                 _fmt(r.get("max_out_diff"), ".1e"), _fmt(100 * r["share_of_peak"], ".1f", " %"), measured]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(results: Path, readme: Path) -> None:
    text = readme.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise SystemExit(f"{readme} has no {TABLE_BEGIN} ... {TABLE_END} block for the results table")
    before, rest = text.split(TABLE_BEGIN, 1)
    _, after = rest.split(TABLE_END, 1)
    table = results_table(load_results(results))
    readme.write_text(f"{before}{TABLE_BEGIN}\n{table}\n{TABLE_END}{after}")


def write_plot(results: Path, out: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in load_results(results) if r["kind"] == "scaling"]
    if not rows:
        raise SystemExit(f"{results} has no scaling rows: run `run_all.py scaling` first")
    fig, ax = plt.subplots(figsize=(8, 5))
    for family in sorted({r["family"] for r in rows}):
        mine = sorted((r for r in rows if r["family"] == family), key=lambda r: r["size"])
        ax.plot([r["size"] for r in mine], [r["ms_per_mpix"] for r in mine], marker="o",
                label=f"{mine[0]['ours']}")
    ax.set_xlabel("input side (square, px)")
    ax.set_ylabel("CPU ms per megapixel (eval, batch 1, fp32; log scale)")
    ax.set_yscale("log")
    ax.set_xticks(sorted({r["size"] for r in rows}))
    first = rows[0]
    ax.set_title(f"time per pixel vs resolution ({first['machine'].split(',')[0]}, {first['threads']} thread(s), "
                 f"{first['date']})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _paths(items: List[str]) -> Dict[str, str]:
    paths = {}
    for item in items:
        family, sep, path = item.partition("=")
        if not sep or family not in list(PAIRS) + ["extra"]:
            raise SystemExit(f"--official takes FAMILY=PATH with FAMILY among {sorted(PAIRS)} (or extra=DIR:DIR for "
                             f"site-packages the official code needs), got {item!r}")
        paths[family] = path
    sys.path.extend(p for p in paths.pop("extra", "").split(":") if p)  # what the official code imports
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "scaling", "table", "plot"])
    parser.add_argument("--families", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=None, help="override the per-size batch (8 at 224, 2 at 512)")
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the (profiled) peak-memory calls")
    parser.add_argument("--compile", action="store_true", help="our models under torch.compile (224 eval only)")
    parser.add_argument("--official", action="append", default=[], metavar="FAMILY=PATH")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "run":
        sizes, modes = args.sizes or [224, 512], args.modes
        if args.compile:  # a cold compile takes minutes here: the compiled rows are 224 eval only
            sizes, modes = [224], ["eval"]
        rows = run_pairs(args.families, sizes, modes, args.dtypes, args.repeats, _paths(args.official),
                         not args.no_memory, args.compile, args.batch)
    elif args.command == "scaling":
        rows = run_scaling(args.families, args.sizes or SCALING_SIZES, args.repeats)
    if args.command in ("run", "scaling"):
        for row in rows:  # stored one by one: an interrupted run keeps what it measured
            print(json.dumps(row), flush=True)
            save_results(args.results, [row])
        return
    if args.command == "table":
        write_table(args.results, args.readme)
    else:
        write_plot(args.results, args.plot)


if __name__ == "__main__":
    sys.exit(main())
