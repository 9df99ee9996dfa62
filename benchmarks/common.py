"""Measuring helpers shared by the benchmark scripts: interleaved timing, peak CPU memory, tables.

Timings are medians over repeats, with the two models run alternately (A B A B ...) so that drift in the
machine's speed hits both alike. Peak memory is measured in a separate, profiled call: the highest sum of
live allocator bytes (activations, workspaces, gradients; not the weights, which exist before the call).
"""
from __future__ import annotations

import contextlib
import statistics
import subprocess
import time
from typing import Callable, Dict, List, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from visionzoo.bench import machine_line as bench_machine_line


def autocast_context(dtype: str):
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str, dtype: str) -> Callable[[], torch.Tensor]:
    """``eval``: a no-grad forward. ``train``: forward, cross-entropy, backward (gradients set to None first)."""
    labels = torch.randint(0, 1000, (x.shape[0],), generator=torch.Generator().manual_seed(0))

    if mode == "eval":
        def step():
            with torch.no_grad(), autocast_context(dtype):
                return model(x)
    else:
        def step():
            model.zero_grad(set_to_none=True)
            with autocast_context(dtype):
                out = model(x)
            torch.nn.functional.cross_entropy(out.float(), labels).backward()
            return out
    return step


def interleaved_medians(steps: Sequence[Callable[[], object]], repeats: int, warmup: int = 1) -> List[float]:
    """Median seconds per call of each step, measured alternately."""
    for step in steps:
        for _ in range(warmup):
            step()
    times: List[List[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            t0 = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def peak_memory_mb(step: Callable[[], object]) -> float:
    """Peak of live CPU allocations during one call, from the profiler's allocation events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2 ** 20


def fresh_memory_mb(step: Callable[[], object]) -> float:
    """MB of memory the OS handed the process during one call of ``step`` (minor page faults x page size, Linux):
    memory the allocator returned to the OS and asked for again, paid for by zero-filling every page on first touch."""
    import resource  # Unix only
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * resource.getpagesize() / 1e6


def machine_line() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return f"{bench_machine_line('cpu')}, commit {commit}"


def markdown_table(rows: List[Dict[str, object]]) -> str:
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(r[h]) for h in headers) + " |" for r in rows]
    return "\n".join(lines)
