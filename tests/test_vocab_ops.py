"""The chunked row reductions equal torch's one-pass ones exactly (chunks forced, so this runs on CPU)."""

import torch
from hypothesis import given, settings, strategies as st

from genplug.vocab_ops import _divisor, chunk_count, count_true, first_argmax

# rows x chunks x chunk_width, values drawn from a few integers so that ties are common
shapes = st.tuples(st.integers(1, 4), st.sampled_from([2, 3, 8]), st.integers(1, 40))


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_first_argmax_is_torch_argmax_with_ties(shape, seed, distinct):
    rows, chunks, width = shape
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, distinct, (rows, chunks * width), generator=g).float()
    scores[0, 0] = float("-inf")
    assert torch.equal(first_argmax(scores, chunks=chunks), torch.argmax(scores, -1))


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 2**31 - 1))
def test_count_true_is_sum(shape, seed):
    rows, chunks, width = shape
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, chunks * width, generator=g) > 0.5
    assert torch.equal(count_true(mask, chunks=chunks), mask.sum(-1, keepdim=True))


def test_split_only_where_it_pays(monkeypatch):
    assert chunk_count(1, 128256, torch.device("cpu")) is None  # CPU: one pass
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert chunk_count(1, 128256, torch.device("cuda")) is None  # not capturing a graph: fewer launches win
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert chunk_count(1, 128256, torch.device("cuda")) == 256  # 256 chunks of 501
    assert chunk_count(1, 1000, torch.device("cuda")) is None  # small vocabulary
    assert chunk_count(512, 128256, torch.device("cuda")) is None  # many rows
    assert chunk_count(1, 131071, torch.device("cuda")) is None  # prime width: no equal chunks
    assert _divisor(151936, 256) == 128  # Qwen2's vocabulary: 128 chunks of 1187
