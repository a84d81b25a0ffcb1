"""The graph loop's bookkeeping kernels (core/loop_kernels.py) against the PyTorch ops they replace:
on CUDA when there is one, else through Triton's interpreter. Oracle: graph_loop's own PyTorch step
(gather / add / index_fill before the forward; argmax or Gumbel draw, where / index_copy / any / EOS
flags / slot after it), run on copies of the same state."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

import genplug
import genplug.graph_loop as graph_loop

pytestmark = pytest.mark.usefixtures("triton_kernels_on")


def _state(rows, width, slot, generator, device):
    tokens = torch.randint(0, width, (rows, 12), generator=generator)
    valid = torch.rand(rows, 16, generator=generator) < 0.5
    positions = torch.randint(0, 9, (rows, 1), generator=generator)
    unfinished = torch.rand(rows, generator=generator) < 0.7
    state = dict(tokens=tokens, valid=valid, positions=positions, slot=torch.tensor(slot),
                 unfinished=unfinished, generated=torch.tensor(3))
    return {name: value.to(device) for name, value in state.items()}


def _copy(state):
    return {name: value.clone() for name, value in state.items()}


def _reference_step(state, scores, seed, eos, pad, vocab_ops):
    """graph_loop's PyTorch bookkeeping around a forward that returned ``scores``."""
    tokens, slot, unfinished, generated = state["tokens"], state["slot"], state["unfinished"], state["generated"]
    token = tokens.gather(1, slot.expand(tokens.shape[0], 1))
    state["positions"].add_(1)
    state["valid"].index_fill_(1, slot.view(1), True)
    column = slot + 1
    chosen = vocab_ops.first_argmax(scores) if seed is None else vocab_ops.gumbel_sample(scores, seed, column)
    if eos is not None:
        chosen = torch.where(unfinished, chosen, pad)
    tokens.index_copy_(1, column.view(1), chosen[:, None])
    generated.add_(unfinished.any().long())
    if eos is not None:
        unfinished.logical_and_(~(chosen[:, None] == eos[None, :]).any(-1))
    slot.add_(1)
    return token, column


def _reference_advance(state):
    """graph_loop's PyTorch bookkeeping before a forward: the fed token and its column."""
    tokens, slot = state["tokens"], state["slot"]
    token = tokens.gather(1, slot.expand(tokens.shape[0], 1))
    state["positions"].add_(1)
    state["valid"].index_fill_(1, slot.view(1), True)
    return token, slot + 1


def _accept_then_check(loop_kernels, state, expected, scores, seed, column, eos, pad, feed_next, one_launch=False):
    """choose_and_accept on ``state``, with the next step's advance fused in where ``feed_next`` (and the
    choice and accept as one launch where ``one_launch``): every buffer as the reference's (whose next
    advance is run too), the fed token and column as it gives, the launch's counter left zero."""
    fed = torch.full((state["tokens"].shape[0], 1), -1, dtype=torch.long, device=scores.device)
    arrivals = torch.zeros(1, dtype=torch.int32, device=scores.device) if one_launch else None
    loop_kernels.choose_and_accept(scores, seed, column, state["tokens"], state["slot"], state["unfinished"],
                                   state["generated"], eos, pad, advance_slot=True,
                                   feed_next=(fed, state["positions"], state["valid"]) if feed_next else None,
                                   arrivals=arrivals)
    assert arrivals is None or int(arrivals) == 0
    if feed_next:
        next_token, next_column = _reference_advance(expected)
        assert torch.equal(fed, next_token) and int(column) == int(next_column)
    for name in expected:
        assert torch.equal(state[name], expected[name]), name


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 5), width=st.sampled_from([7, 1024, 3000]), slot=st.integers(0, 10),
       levels=st.integers(2, 50), eos_count=st.integers(0, 3), sample=st.booleans(), pad=st.integers(0, 6),
       seed=st.integers(0, 2**16), feed_next=st.booleans(), one_launch=st.booleans())
def test_the_fused_bookkeeping_equals_the_pytorch_step(triton_kernels_on, rows, width, slot, levels, eos_count,
                                                       sample, pad, seed, feed_next, one_launch):
    """Same fed token, positions, valid slots, chosen tokens (ties to the first index; the same Gumbel
    stream when sampling), pad for finished rows, EOS flags, step count and slot; with ``feed_next`` the
    next step's fed token, column, positions and valid slot too."""
    from genplug import loop_kernels, vocab_ops

    device = triton_kernels_on
    g = torch.Generator().manual_seed(seed)
    state = _state(rows, width, slot, g, device)
    scores = torch.randint(0, levels, (rows, width), generator=g).float().to(device)  # many ties
    scores[0, : width // 2] = float("-inf")
    eos = torch.randint(0, levels, (eos_count,), generator=g).to(device) if eos_count else None
    if eos is not None:  # make an EOS likely to be chosen
        scores[:, int(eos[0]) % width] = levels
    gumbel_seed = torch.tensor(seed).to(device) if sample else None
    expected = _copy(state)
    expected_token, expected_column = _reference_step(expected, scores, gumbel_seed, eos, pad, vocab_ops)

    token, column = loop_kernels.advance(state["tokens"], state["slot"], state["positions"], state["valid"])
    assert torch.equal(token, expected_token) and int(column) == int(expected_column)
    _accept_then_check(loop_kernels, state, expected, scores, gumbel_seed, column, eos, pad, feed_next, one_launch)


@pytest.mark.parametrize("feed_next,one_launch", [(False, False), (True, False), (True, True)],
                         ids=["accept", "accept + next advance", "choice + accept + next advance in one launch"])
def test_many_rows_are_handled_in_blocks(triton_kernels_on, feed_next, one_launch):
    from genplug import loop_kernels, vocab_ops

    device = triton_kernels_on
    g = torch.Generator().manual_seed(0)
    state = _state(150, 2000, 4, g, device)  # more rows than one block of the kernels
    scores = torch.randn(150, 2000, generator=g).to(device)
    eos = torch.tensor([int(scores[0].argmax()), 5]).to(device)
    expected = _copy(state)
    _reference_step(expected, scores, None, eos, 0, vocab_ops)
    _, column = loop_kernels.advance(state["tokens"], state["slot"], state["positions"], state["valid"])
    _accept_then_check(loop_kernels, state, expected, scores, None, column, eos, 0, feed_next, one_launch)


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampling"])
def test_the_graph_loop_gives_the_same_tokens_with_either_bookkeeping(triton_kernels_on, monkeypatch, sample):
    """The whole loop (run eagerly, as on a CPU) with EOS and padding: the fused kernels' tokens are the
    PyTorch step's, and they really ran."""
    from genplug import loop_kernels

    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    model, tokenizer = genplug.load_model()
    model = model.to(triton_kernels_on)
    enc = tokenizer(["Once upon a time", "The big red dog ran to the"], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"].to(triton_kernels_on), enc["attention_mask"].to(triton_kernels_on)
    eos = int(ids[0, -1])
    kw = dict(attention_mask=mask, max_new_tokens=20, cache_implementation="static", eos_token_id=[eos, 13],
              pad_token_id=0, do_sample=sample, top_k=0 if sample else None, temperature=0.8 if sample else None)
    calls, real = [], loop_kernels.choose_and_accept
    monkeypatch.setattr(loop_kernels, "choose_and_accept", lambda *a, **k: calls.append(1) or real(*a, **k))
    runs = []
    for fused in (True, False):
        monkeypatch.setattr(graph_loop, "FUSED_BOOKKEEPING", fused)
        torch.manual_seed(7)
        runs.append(genplug.generate(model, ids, **kw))
        assert graph_loop.LAST_CAPTURE_SECONDS is not None
    assert calls and torch.equal(runs[0], runs[1])


def test_the_last_step_advances_nothing_past_the_cache(triton_kernels_on):
    """The last step's fused advance points at a column the cache does not have (its token is never fed):
    no slot past the valid mask is written -- a guarded zero-width view of a larger buffer shows it."""
    from genplug import loop_kernels

    device = triton_kernels_on
    rows, slot = 3, 5
    tokens = torch.randint(0, 50, (rows, slot + 2)).to(device)
    backing = torch.zeros(rows, slot + 3, dtype=torch.bool, device=device)
    valid = backing[:, : slot + 1]  # the cache holds slots 0..slot: the next column is past it
    positions, unfinished = torch.zeros(rows, 1, dtype=torch.long, device=device), torch.ones(rows, dtype=torch.bool, device=device)
    slot_t, generated = torch.tensor(slot, device=device), torch.tensor(0, device=device)
    fed = torch.zeros(rows, 1, dtype=torch.long, device=device)
    _, column = loop_kernels.advance(tokens, slot_t, positions, valid)  # marks slot `slot`, the cache's last
    scores = torch.randn(rows, 50).to(device)
    loop_kernels.choose_and_accept(scores, None, column, tokens, slot_t, unfinished, generated, None, 0,
                                   advance_slot=True, feed_next=(fed, positions, valid))
    assert valid[:, slot].all() and not backing[:, slot + 1:].any()
    assert torch.equal(fed[:, 0], scores.argmax(-1).to(device)) and int(column) == slot + 2
