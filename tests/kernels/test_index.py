"""kernels/_index.py: the CSR transpose of an index, shared by routing attention and sparse attention."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from visionzoo.kernels._index import transpose_index, transpose_positions


def loop_transpose(index, num_targets):
    """Per target, the (source, slot) pairs that name it, in ascending (source, slot) order."""
    S, K = index.shape
    return [[(s, k) for s in range(S) for k in range(K) if index[s, k] == t] for t in range(num_targets)]


def csr_lists(result, batch, num_targets):
    src, slot, off = (x[batch] for x in result)
    return [list(zip(src[off[t]:off[t + 1]].tolist(), slot[off[t]:off[t + 1]].tolist())) for t in range(num_targets)]


@settings(deadline=None, max_examples=60)
@given(S=st.integers(1, 9), K=st.integers(1, 5), T=st.integers(1, 12), batch=st.integers(1, 3),
       with_padding=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_matches_loop(S, K, T, batch, with_padding, seed):
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(-1 if with_padding else 0, T, (batch, S, K), generator=g)
    result = transpose_index(index, T)
    assert [x.dtype for x in result] == [torch.int32] * 3
    assert result.sources.shape == result.slots.shape == (batch, S * K) and result.offsets.shape == (batch, T + 1)
    for b in range(batch):
        assert csr_lists(result, b, T) == loop_transpose(index[b], T)
        assert result.offsets[b, 0] == 0 and result.offsets[b, -1] == int((index[b] >= 0).sum())


@pytest.mark.parametrize("num_targets", [7, 40_000])  # sort keys int16, and int32 (more than 2**15 buckets)
def test_positions_are_source_times_k_plus_slot(num_targets):
    index = torch.randint(-1, 7, (2, 3, 5, 4), generator=torch.Generator().manual_seed(0))
    index[0, 0, 0, 0] = num_targets - 1
    positions, offsets = transpose_positions(index, num_targets)
    result = transpose_index(index, num_targets)
    assert positions.dtype == offsets.dtype == torch.int64 and positions.shape == (2, 3, 20)
    assert torch.equal(offsets, result.offsets.long())
    assert torch.equal(positions, result.sources.long() * 4 + result.slots)
    for b in range(2):
        for h in range(3):  # positions grouped by target, ascending inside each; ignored (negative) ones last
            flat = index[b, h].reshape(-1).tolist()
            expected = sorted(range(20), key=lambda e: (flat[e] if flat[e] >= 0 else num_targets, e))
            n_real = sum(x >= 0 for x in flat)
            assert positions[b, h, :n_real].tolist() == expected[:n_real]


def test_sparse_attention_layout():
    """The Sparsifiner use: (B, heads, N, K) keys per query -> per (b, head, key) the queries that chose it."""
    index = torch.tensor([[[[1, 2], [0, 2], [2, -1]], [[0, 1], [1, 0], [0, 2]]]])  # (1, 2, 3, 2)
    result = transpose_index(index, 3)
    assert result.offsets.tolist() == [[[0, 1, 2, 5], [0, 3, 5, 6]]]
    assert result.sources[0, 0, :5].tolist() == [1, 0, 0, 1, 2] and result.slots[0, 0, :5].tolist() == [0, 0, 1, 1, 0]
    assert result.sources[0, 1].tolist() == [0, 1, 2, 0, 1, 2] and result.slots[0, 1].tolist() == [0, 1, 0, 1, 0, 1]


def test_duplicates_are_listed_per_occurrence():
    result = transpose_index(torch.tensor([[1, 1], [0, 1]]), 2)
    assert csr_lists([x[None] for x in result], 0, 2) == [[(1, 0)], [(0, 0), (0, 1), (1, 1)]]


def test_bad_inputs():
    with pytest.raises(TypeError, match="integer tensor"):
        transpose_index(torch.zeros(2, 2), 3)
    with pytest.raises(ValueError, match="at least 2 dims"):
        transpose_index(torch.zeros(3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="num_targets must be a positive int"):
        transpose_index(torch.zeros(2, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"index holds 3, outside \[0, num_targets=3\)"):
        transpose_index(torch.tensor([[0, 3]]), 3)
    # Unchecked, entries past the targets are ignored like negative ones.
    assert transpose_index(torch.tensor([[0, 3]]), 3, check=False).offsets.tolist() == [0, 1, 1, 1]


def test_compiles_without_graph_breaks():
    """Shapes depend only on the input's shape: one graph, no data-dependent control flow."""
    f = torch.compile(lambda i: transpose_index(i, 5), fullgraph=True, backend="eager")
    index = torch.tensor([[[4, 0], [0, 2]]])
    assert all(torch.equal(a, b) for a, b in zip(f(index), transpose_index(index, 5)))
