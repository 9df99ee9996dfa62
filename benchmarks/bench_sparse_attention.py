"""sparse_attention's torch path against Sparsifiner's official formulation, on CPU, in one process.

    .venv/bin/python benchmarks/bench_sparse_attention.py                 # DeiT-S at 224 and 384, batch 8
    .venv/bin/python benchmarks/bench_sparse_attention.py --threads 1 --batches 4 --repeats 7

Shapes: DeiT-S attention (6 heads x 64), N = 197 (224 px) or 577 (384 px) tokens, K = ceil(0.25 N) keys per
patch query (Sparsifiner's default keep rate), the cls query dense; one attention layer, fp32, an index from
torch.topk over random scores. Runs, interleaved (medians over repeats):

* ``official``: the official attention core: the binary mask scattered from the top-k indices with an all-ones
  cls row prepended, the full N x N scores, masked_fill(-inf), softmax, nan_to_num, times v;
* ``ours``: ``sparse_attention(q, k, v, index, dense_queries=1)``, torch path;
* ``gathered``: the obvious N*K formulation, gathering the K key and value rows of every query
  ((B, heads, N, K, 64) copies) and contracting them with einsum;
* ``sdpa``: dense attention without any mask (what the layer would cost with sparsity off; not the same result).

``eval`` is a no-grad forward, ``train`` forward + backward of the sum. Peak memory: live CPU allocations during
one profiled call. Prints a markdown table; ratios are official / ours (above 1: ours is faster).
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from common import interleaved_medians, machine_line, markdown_table, peak_memory_mb
from visionzoo.kernels import sparse_attention, use_backend

HEADS, HEAD_DIM, KEEP = 6, 64, 0.25


def official(q, k, v, index):
    B, N, heads, D = q.shape
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    mask = torch.zeros(B, heads, N - 1, N, dtype=q.dtype).scatter_(-1, index, 1.0)
    mask = torch.cat([torch.ones(B, heads, 1, N, dtype=q.dtype), mask], dim=2)
    attn = (qh @ kh.transpose(-2, -1)) * D ** -0.5
    attn = torch.nan_to_num(attn.masked_fill(~mask.bool(), float("-inf")).softmax(dim=-1))
    return (attn @ vh).transpose(1, 2)


def ours(q, k, v, index):
    with use_backend("torch"):
        return sparse_attention(q, k, v, index, dense_queries=1)


def gathered(q, k, v, index):
    B, _, heads, D = q.shape
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    rows = index.reshape(B, heads, -1, 1).expand(-1, -1, -1, D)
    ks, vs = (x.gather(2, rows).view(*index.shape, D) for x in (kh, vh))
    p = (torch.einsum("bhmd,bhmkd->bhmk", qh[:, :, 1:], ks) * D ** -0.5).softmax(-1)
    out_sparse = torch.einsum("bhmk,bhmkd->bhmd", p, vs)
    out_cls = ((qh[:, :, :1] @ kh.transpose(-2, -1)) * D ** -0.5).softmax(-1) @ vh
    return torch.cat([out_cls, out_sparse], dim=2).transpose(1, 2)


def sdpa(q, k, v, index):
    return F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


RUNS = {"official": official, "ours": ours, "gathered": gathered, "sdpa": sdpa}


def make_step(fn, qkv, index, mode):
    def step():
        q, k, v = qkv.unbind(2)
        if mode == "eval":
            with torch.no_grad():
                return fn(q, k, v, index)
        qkv.grad = None
        out = fn(q, k, v, index)
        out.sum().backward()
        return out
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[197, 577])
    parser.add_argument("--batches", type=int, nargs="+", default=[8])
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the (profiled) peak-memory call")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    rows = []
    for n in args.tokens:
        kk = math.ceil(KEEP * n)
        for batch in args.batches:
            g = torch.Generator().manual_seed(0)
            qkv = torch.randn(batch, n, 3, HEADS, HEAD_DIM, generator=g).requires_grad_()
            index = torch.rand(batch, HEADS, n - 1, n, generator=g).topk(kk, dim=-1).indices
            ref = official(*qkv.detach().unbind(2), index)
            for name in args.runs:  # every run computes the op (sdpa excepted)
                if name != "sdpa":
                    err = (RUNS[name](*qkv.detach().unbind(2), index) - ref).abs().max().item()
                    assert err < 1e-4, (name, err)
            for mode in args.modes:
                steps = [make_step(RUNS[name], qkv, index, mode) for name in args.runs]
                times = interleaved_medians(steps, args.repeats)
                row = {"N": n, "K": kk, "batch": batch, "mode": mode}
                row.update({f"{name} ms": f"{t * 1e3:.1f}" for name, t in zip(args.runs, times)})
                if "official" in args.runs and "ours" in args.runs:
                    ratio = times[args.runs.index("official")] / times[args.runs.index("ours")]
                    row["official / ours"] = f"{ratio:.2f}"
                if not args.no_memory:
                    row.update({f"{name} MB": f"{peak_memory_mb(step):.0f}" for name, step in zip(args.runs, steps)})
                rows.append(row)
                print(row, flush=True)
    print()
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
