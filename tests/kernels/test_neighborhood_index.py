"""The shared neighbourhood indexing (``visionzoo.kernels._neighborhood``).

Checked against two independent statements of the rule: a transcription of NATTEN v0.14.6's own index
formulas (map units, written the way its C++ computes them, with its a/b arithmetic for the residue
classes), and the "nearest window" characterisation (the window is the k consecutive class positions
that contain the query and whose centre is closest to it). All integer arithmetic: exact comparisons.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():  # before anything imports triton (see conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import given, settings, strategies as st

from .conftest import triton_runs_here
from visionzoo.kernels import _neighborhood as nb


# ------------------------------------------------------- NATTEN v0.14.6 formulas (natten_cpu_commons.h)

def natten_window_start(index, length, k, d):
    ns = k // 2
    if d <= 1:
        return max(index - ns, 0) + (index + ns >= length) * (length - index - ns - 1)
    ni = index - ns * d
    if ni < 0:
        return index % d
    if index + ns * d >= length:
        imodd = index % d
        a = (length // d) * d
        b = length - a
        if imodd < b:
            return length - b + imodd - 2 * ns * d
        return a + imodd - k * d
    return ni


def natten_pb_start(index, length, k, d):
    ns = k // 2
    if d <= 1:
        return ns + (index < ns) * (ns - index) + (index + ns >= length) * (length - index - 1 - ns)
    if index - ns * d < 0:
        return k - 1 - index // d
    if index + ns * d >= length:
        return (length - index - 1) // d
    return ns


def natten_backward_range(index, length, k, d):
    """[start, end) in map units, stepping by d, of the queries whose window holds key ``index``."""
    ns = k // 2
    start = index % d if index < k * d else index - ns * d
    end = length if index >= length - k * d else index + (ns + 1) * d
    return start, end


axis_cases = st.tuples(st.integers(1, 6), st.integers(1, 5)).flatmap(
    lambda kd: st.tuples(st.just(2 * kd[0] - 1), st.just(kd[1]), st.integers((2 * kd[0] - 1) * kd[1],
                                                                               (2 * kd[0] - 1) * kd[1] + 3 * kd[1] + 5)))


@settings(deadline=None, max_examples=150)
@given(case=axis_cases)
def test_axis_builders_match_natten_formulas(case):
    k, d, n = case
    nbr = nb.axis_neighbors(n, k, d)
    rpb = nb.axis_rpb_index(n, k, d)
    first, last = nb.axis_inverse_range(n, k, d)
    assert nbr.shape == rpb.shape == (n, k)
    for i in range(n):
        s = natten_window_start(i, n, k, d)
        assert nbr[i].tolist() == [s + t * d for t in range(k)], (i, n, k, d)
        assert rpb[i].tolist() == [natten_pb_start(i, n, k, d) + t for t in range(k)], (i, n, k, d)
        start, end = natten_backward_range(i, n, k, d)
        assert (first[i].item(), last[i].item()) == (start, start + d * ((end - 1 - start) // d)), (i, n, k, d)
        # and the range is exactly the set of queries that list i among their neighbours
        seers = [q for q in range(n) if i in nbr[q].tolist()]
        assert seers == list(range(first[i].item(), last[i].item() + 1, d)), (i, n, k, d)
    assert nb.axis_window_start(n, k, d).tolist() == nbr[:, 0].tolist()


@settings(deadline=None, max_examples=150)
@given(case=axis_cases)
def test_window_is_the_nearest_window_in_the_class(case):
    k, d, n = case
    nbr = nb.axis_neighbors(n, k, d)
    first, last = nb.axis_inverse_range(n, k, d)
    for i in range(n):
        r, p = i % d, i // d
        L = len(range(r, n, d))
        assert L == nb.sublattice_length(n, d, r)
        # candidate windows: k consecutive class positions [c - k//2, c + k//2] inside the class, containing p
        c = min(range(k // 2, L - k // 2), key=lambda c: abs(c - p))  # unique: the centres are distinct ints
        assert abs(c - p) <= k // 2  # the window contains the query
        assert nbr[i].tolist() == [r + d * (c - k // 2 + t) for t in range(k)]
        assert nb.window_start_sub(p, L, k) == c - k // 2
        f, l = nb.inverse_range_sub(p, L, k)
        assert (first[i].item(), last[i].item()) == (r + d * f, r + d * l)


def test_2d_builders_are_products_of_axes():
    H, W, k, d = 7, 9, 3, 2
    idx, bias_idx = nb.neighbor_index(H, W, k, d), nb.rpb_index(H, W, k, d)
    rows, cols = nb.axis_neighbors(H, k, d), nb.axis_neighbors(W, k, d)
    rrows, rcols = nb.axis_rpb_index(H, k, d), nb.axis_rpb_index(W, k, d)
    for i in range(H):
        for j in range(W):
            for ti in range(k):
                for tj in range(k):
                    t = ti * k + tj
                    assert idx[i * W + j, t] == rows[i, ti] * W + cols[j, tj]
                    assert bias_idx[i * W + j, t] == rrows[i, ti] * (2 * k - 1) + rcols[j, tj]


@settings(deadline=None, max_examples=100)
@given(case=axis_cases, tile=st.integers(1, 9))
def test_axis_tiles_cover_every_query_once_with_its_window(case, tile):
    k, d, n = case
    t = nb.axis_tiles(n, k, d, tile)
    tile_used, halo, per_class = nb.tiles_per_class(n, k, d, tile)
    assert t.query.shape == (d * per_class, tile_used) and t.halo.shape == (d * per_class, halo)
    nbr, rpb = nb.axis_neighbors(n, k, d), nb.axis_rpb_index(n, k, d)
    seen = []
    for a in range(t.query.shape[0]):
        for i in range(tile_used):
            q = t.query[a, i].item()
            if t.query_valid[a, i]:
                seen.append(q)
            # every row, duplicates included, holds exactly the query's window, in slot order, with its rpb index
            keys = t.halo[a][t.in_window[a, i]].tolist()
            assert keys == nbr[q].tolist(), (a, i, q)
            assert t.rpb[a, i][t.in_window[a, i]].tolist() == rpb[q].tolist()
            assert t.slot[a, i][t.in_window[a, i]].tolist() == list(range(k))
            # slot_halo is the inverse of slot: the halo entry of each slot, in window
            u = t.slot_halo[a, i]
            assert t.halo[a][u].tolist() == nbr[q].tolist() and t.in_window[a, i][u].all()
            assert t.slot[a, i][u].tolist() == list(range(k))
    assert sorted(seen) == list(range(n))
    assert nb.has_clamped_tiles(n, d, tile_used) == (not t.query_valid.all())
    assert ((t.rpb >= 0) & (t.rpb <= 2 * k - 2)).all()
    assert ((t.halo >= 0) & (t.halo < n)).all() and ((t.query >= 0) & (t.query < n)).all()


@pytest.mark.parametrize("k,d,H,W,match", [
    (4, 1, 9, 9, "kernel_size must be an odd integer >= 1.*got 4"),
    (0, 1, 9, 9, "kernel_size must be an odd integer >= 1.*got 0"),
    (True, 1, 9, 9, "kernel_size must be an odd integer >= 1.*got True"),
    (3.0, 1, 9, 9, "kernel_size must be an odd integer >= 1.*got 3.0"),
    (3, 0, 9, 9, "dilation must be an integer >= 1, got 0"),
    (3, 1.5, 9, 9, "dilation must be an integer >= 1, got 1.5"),
    (3, 2, 5, 9, r"too small for kernel_size \* dilation = 3 \* 2 = 6: height 5 < 6.*the smallest holds 2"),
    (7, 1, 9, 6, r"= 7 \* 1 = 7: width 6 < 7"),
])
def test_check_neighborhood_errors(k, d, H, W, match):
    with pytest.raises(ValueError, match=match):
        nb.check_neighborhood("op", k, d, H, W)


def test_check_neighborhood_accepts_minimum():
    assert nb.check_neighborhood("op", 3, 2, 6, 7) == (3, 2)


# ---------------------------------------------------------------------------- Triton helpers (interpreter)


@pytest.mark.skipif(not triton_runs_here(), reason="needs triton and CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("n,k,d", [(11, 3, 2), (9, 5, 1), (17, 3, 5)])
def test_triton_helpers_match_torch_builders(n, k, d):
    import triton
    import triton.language as tl

    @triton.jit
    def probe(OUT, n, K: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        ok = i < n
        r = i % D
        p = i // D
        L = nb.nb_sublattice_length(n, r, D)
        start = nb.nb_window_start(p, L, K)
        first = nb.nb_inverse_first(p, K)
        last = nb.nb_inverse_last(p, L, K)
        inw = nb.nb_in_window(start, p, K).to(tl.int32)  # a query is always in its own window
        rpb0 = nb.nb_rpb_offset(p, start, K)  # bias index of slot 0
        tl.store(OUT + 0 * BLOCK + i, r + D * start, mask=ok)
        tl.store(OUT + 1 * BLOCK + i, r + D * first, mask=ok)
        tl.store(OUT + 2 * BLOCK + i, r + D * last, mask=ok)
        tl.store(OUT + 3 * BLOCK + i, inw, mask=ok)
        tl.store(OUT + 4 * BLOCK + i, rpb0, mask=ok)
        tl.store(OUT + 5 * BLOCK + i, L, mask=ok)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    block = triton.next_power_of_2(n)
    out = torch.zeros(6, block, dtype=torch.int32, device=device)
    probe[(1,)](out, n, K=k, D=d, BLOCK=block)
    out = out[:, :n].cpu().long()
    first, last = nb.axis_inverse_range(n, k, d)
    assert out[0].tolist() == nb.axis_window_start(n, k, d).tolist()
    assert out[1].tolist() == first.tolist() and out[2].tolist() == last.tolist()
    assert out[3].tolist() == [1] * n
    assert out[4].tolist() == nb.axis_rpb_index(n, k, d)[:, 0].tolist()
    assert out[5].tolist() == [nb.sublattice_length(n, d, i % d) for i in range(n)]


@pytest.mark.skipif(not triton_runs_here(), reason="needs triton and CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("n,k,d,T", [(11, 3, 2, 4), (17, 5, 1, 8), (13, 3, 3, 2)])
def test_triton_tile_helpers_match_torch_builders(n, k, d, T):
    """nb_tile_positions / nb_query_halo / nb_key_halo (one axis: tile rows of a TW = 1 tile) against the rule."""
    import triton
    import triton.language as tl

    @triton.jit
    def probe(OUT, n, n_t, K: tl.constexpr, D: tl.constexpr, T: tl.constexpr):
        pid = tl.program_id(0)  # = r * n_t + t; the tile id of (image 0, row residue r, column residue 0, row tile t)
        b, r, rc, t, tw = nb.nb_decode_tile((pid // n_t) * D * n_t + pid % n_t, n_t, 1, D)
        L = nb.nb_sublattice_length(n, r, D)
        p, pc, ok = nb.nb_tile_positions(t, tw, L, 1, T, 1, T)
        h0, nh = nb.nb_query_halo(t, L, T, K)
        q0, nq = nb.nb_key_halo(t, L, T, K)
        base = OUT + pid * (T + 6)
        tl.store(base + tl.arange(0, T), tl.where(ok, r + D * p, -1))
        tl.store(base + T, r + D * h0)
        tl.store(base + T + 1, nh)
        tl.store(base + T + 2, r + D * q0)
        tl.store(base + T + 3, nq)
        tl.store(base + T + 4, b + rc + tw)
        tl.store(base + T + 5, r)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_t = nb.tiles_per_class(n, k, d, T)[2]
    out = torch.full((d * n_t, T + 6), -7, dtype=torch.int32, device=device)
    probe[(d * n_t,)](out, n, n_t, K=k, D=d, T=T)
    out = out.cpu().long()
    nbr = nb.axis_neighbors(n, k, d)
    first, last = nb.axis_inverse_range(n, k, d)
    for pid in range(d * n_t):
        r, t = divmod(pid, n_t)
        queries = [i for i in range(n) if i % d == r][t * T:(t + 1) * T]
        row = out[pid].tolist()
        assert row[:T] == queries + [-1] * (T - len(queries)) and row[T + 4:] == [0, r]
        if not queries:  # a whole tile past the end of a shorter class: clamped onto its last position
            queries = [[i for i in range(n) if i % d == r][-1]]
        keys = sorted({j for i in queries for j in nbr[i].tolist()})
        assert (row[T], row[T + 1]) == (keys[0], len(keys))  # the halo: a contiguous class range
        seers = [i for i in range(n) if any(j in nbr[i].tolist() for j in queries)]
        assert (row[T + 2], row[T + 3]) == (seers[0], len(seers))
        assert seers[0] == first[queries[0]] and seers[-1] == last[queries[-1]]
