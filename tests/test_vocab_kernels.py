"""The fused token-choice kernels (core/vocab_kernels.py) against PyTorch: exact first argmax, and
Gumbel-max draws distributed as softmax. On CUDA when there is one, else through Triton's interpreter."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

pytest.importorskip("triton")

from genplug import vocab_kernels, vocab_ops  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


pytestmark = pytest.mark.usefixtures("triton_kernels_on")


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 3), width=st.integers(1, 3000), levels=st.integers(1, 6), seed=st.integers(0, 2**16),
       masked=st.floats(0, 1))
def test_first_argmax_is_torch_argmax_with_ties_and_masks(rows, width, levels, seed, masked):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, width), generator=g).float()  # few levels: many ties
    scores[torch.rand(rows, width, generator=g) < masked] = float("-inf")  # whole rows may be -inf
    out = vocab_kernels.chunked_choice(scores.to(DEVICE)).cpu()
    assert torch.equal(out, torch.argmax(scores, dim=-1))
    assert torch.equal(vocab_ops.first_argmax(scores.to(DEVICE)).cpu(), out)


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 2), width=st.integers(1, 2500), dtype=st.sampled_from([torch.bfloat16, torch.float16]),
       sample=st.booleans(), seed=st.integers(0, 2**16))
def test_half_scores_choose_as_their_float32_copy(rows, width, dtype, sample, seed):
    """The graph loop hands the head's half-precision logits straight to the choice kernels where no
    processor runs: the greedy token and the Gumbel draw must be those of the float32 copy (ties included)."""
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(rows, width, generator=g) * 4).to(dtype)  # half precision: many exact ties
    scores[torch.rand(rows, width, generator=g) < 0.1] = float("-inf")
    args = (torch.tensor(seed, device=DEVICE), torch.tensor(3, device=DEVICE)) if sample else ()
    half = vocab_kernels.chunked_choice(scores.to(DEVICE), *args).cpu()
    assert torch.equal(half, vocab_kernels.chunked_choice(scores.float().to(DEVICE), *args).cpu())
    if not sample:
        assert torch.equal(half, torch.argmax(scores.float(), dim=-1))


def test_gumbel_draws_follow_softmax_and_skip_masked_tokens():
    """500 draws (rows of one launch) over 5 tokens, one masked: frequencies within 4.5 standard
    deviations of softmax, the masked token never drawn; another step or seed gives other draws.
    (Few draws: Triton's interpreter runs each row's program in Python.)"""
    n = 500
    logits = torch.tensor([[0.0, 1.0, -1.0, float("-inf"), 0.5]]).repeat(n, 1).to(DEVICE)
    probabilities = torch.softmax(logits[0], -1).cpu()
    seed, step = torch.tensor(1234, device=DEVICE), torch.tensor(5, device=DEVICE)
    draws = vocab_kernels.chunked_choice(logits, seed, step).cpu()
    counts = torch.bincount(draws, minlength=5).float()
    assert counts[3] == 0
    expected = n * probabilities
    spread = torch.sqrt(n * probabilities * (1 - probabilities))
    assert torch.all((counts - expected).abs() <= 4.5 * spread + 1e-6), (counts, expected)
    few = logits[:60]
    assert not torch.equal(vocab_kernels.chunked_choice(few, seed, step + 1).cpu(), draws[:60])
    assert not torch.equal(vocab_kernels.chunked_choice(few, seed + 1, step).cpu(), draws[:60])
    assert torch.equal(vocab_kernels.chunked_choice(few, seed, step).cpu(), draws[:60])  # same stream, same draws


def test_gumbel_rows_draw_independently_over_a_wide_vocabulary():
    """Two rows with one dominant token each, in different chunks of a 5,000-token row."""
    scores = torch.full((2, 5000), -30.0)
    scores[0, 17], scores[1, 4321] = 10.0, 10.0
    out = vocab_ops.gumbel_sample(scores.to(DEVICE), torch.tensor(7, device=DEVICE), torch.tensor(3, device=DEVICE))
    assert out.tolist() == [17, 4321]
    assert math.isfinite(float(scores.max()))


@settings(max_examples=4, deadline=None)  # Triton's interpreter sorts slowly: few, small cases
@given(rows=st.just(1), width=st.integers(1, 1600), k=st.integers(1, 64), levels=st.integers(1, 50),
       masked=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_top_values_are_torch_topk_values(rows, width, k, levels, masked, seed):
    """The chunked top-k gives exactly torch.topk's values, ties and -inf (fewer finite scores than k) included."""
    k = min(k, width)
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, width), generator=g).float() / 7
    scores[torch.rand(rows, width, generator=g) < masked] = float("-inf")
    out = vocab_kernels.top_values(scores.to(DEVICE), k).cpu()
    assert torch.equal(out, torch.topk(scores, k, dim=-1).values)
    assert torch.equal(vocab_ops.top_values(scores.to(DEVICE), k).cpu(), out)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 2), width=st.integers(1, 700), k=st.integers(1, 8), levels=st.integers(1, 50),
       masked=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_top_values_over_many_rounds_of_chunks_are_torch_topk_values(rows, width, k, levels, masked, seed):
    """With small chunks (32 entries) the candidates go through up to four rounds before one chunk holds
    them -- as a 128k vocabulary does with 1,024-entry chunks -- and still give torch.topk's values."""
    k = min(k, width)
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, width), generator=g).float() / 7
    scores[torch.rand(rows, width, generator=g) < masked] = float("-inf")
    out = vocab_kernels.top_values(scores.to(DEVICE), k, chunk=32).cpu()
    assert torch.equal(out, torch.topk(scores, k, dim=-1).values)


def test_top_values_refuse_a_k_their_chunks_cannot_hold():
    scores = torch.zeros(1, 64, device=DEVICE)
    for k, chunk in ((5, 16), (0, 16), (3, 12)):
        with pytest.raises(ValueError, match="top_values"):
            vocab_kernels.top_values(scores, k, chunk=chunk)
