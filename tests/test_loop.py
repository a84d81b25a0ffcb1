"""The greedy/sampling step loop against independent oracles, on a pure-torch tiny model."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

import genplug
from helpers.tiny_lm import TinyCausalLM, recompute_greedy


@pytest.fixture(scope="module")
def model():
    return TinyCausalLM(vocab_size=64, eos_token_id=3, pad_token_id=0, seed=1)


def _prompt(batch=2, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 64, (batch, length), generator=g)


def test_greedy_equals_no_cache_recompute(model):
    ids = _prompt()
    out = genplug.generate(model, ids, max_new_tokens=12)
    assert torch.equal(out, recompute_greedy(model, ids, 12, eos_token_id=3))


def test_greedy_left_padded_batch_equals_unpadded_rows(model):
    short, long = _prompt(1, 3, seed=4), _prompt(1, 6, seed=5)
    padded = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long)], 1),
                      torch.ones(1, 6, dtype=torch.long)])
    out = genplug.generate(model, padded, attention_mask=mask, max_new_tokens=8)
    alone_short = genplug.generate(model, short, max_new_tokens=8)
    alone_long = genplug.generate(model, long, max_new_tokens=8)
    n_short = alone_short.shape[1] - 3
    assert torch.equal(out[0, 6:6 + n_short], alone_short[0, 3:])
    assert torch.equal(out[1, :alone_long.shape[1]], alone_long[0])


def test_sampling_equals_hand_written_reference_loop(model):
    ids = _prompt()
    torch.manual_seed(7)
    out = genplug.generate(model, ids, max_new_tokens=10, do_sample=True, top_k=0, eos_token_id=None)
    torch.manual_seed(7)
    ref = ids.clone()
    for _ in range(10):
        logits = model(ref, use_cache=False).logits[:, -1].float()
        nxt = torch.multinomial(torch.softmax(logits, -1), 1)
        ref = torch.cat([ref, nxt], -1)
    assert torch.equal(out, ref)


@settings(max_examples=15, deadline=None)
@given(interval=st.integers(1, 12), seed=st.integers(0, 1000), sample=st.booleans())
def test_output_is_identical_for_every_stop_check_interval(model, interval, seed, sample):
    ids = _prompt(3, 4, seed=seed)
    kw = dict(max_new_tokens=14, do_sample=sample, return_dict_in_generate=True, output_scores=True)
    torch.manual_seed(seed)
    base = genplug.generate(model, ids, stop_check_interval=1, **kw)
    torch.manual_seed(seed)
    other = genplug.generate(model, ids, stop_check_interval=interval, **kw)
    assert torch.equal(base.sequences, other.sequences)
    assert len(base.scores) == len(other.scores)
    assert all(torch.equal(a, b) for a, b in zip(base.scores, other.scores))


def test_finished_rows_are_padded_and_generation_stops_when_all_finish():
    model = TinyCausalLM(vocab_size=16, seed=3)
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    full = genplug.generate(model, ids, max_new_tokens=20, eos_token_id=None)
    eos = int(full[0, 4])  # the second token row 0 generates becomes "EOS"
    out = genplug.generate(model, ids, max_new_tokens=20, eos_token_id=eos, pad_token_id=1)
    row0 = out[0, 3:].tolist()
    first = row0.index(eos)
    assert all(t == 1 for t in row0[first + 1:])
    finished_at = [r[3:].tolist().index(eos) if eos in r[3:].tolist() else None for r in out]
    if all(f is not None for f in finished_at):
        assert out.shape[1] == 3 + max(finished_at) + 1


def test_inputs_none_starts_from_bos(model):
    out = genplug.generate(model, bos_token_id=5, max_new_tokens=4)
    assert out.shape == (1, 5) and out[0, 0] == 5


def test_num_return_sequences_with_sampling(model):
    torch.manual_seed(0)
    out = genplug.generate(model, _prompt(2, 3), do_sample=True, num_return_sequences=3, max_new_tokens=5)
    assert out.shape[0] == 6
    assert torch.equal(out[0, :3], out[2, :3]) and torch.equal(out[3, :3], out[5, :3])


def test_default_max_length_is_twenty_new_tokens(model):
    out = genplug.generate(model, _prompt(1, 4), eos_token_id=None)
    assert out.shape[1] == 24


def test_min_new_tokens_blocks_eos_until_reached():
    model = TinyCausalLM(vocab_size=16, seed=3)
    ids = torch.tensor([[5, 6, 7]])
    first = int(genplug.generate(model, ids, max_new_tokens=1, eos_token_id=None)[0, -1])
    out = genplug.generate(model, ids, max_new_tokens=6, min_new_tokens=4, eos_token_id=first)
    assert first not in out[0, 3:7].tolist()


def test_output_dict_fields_and_transition_scores(model):
    ids = _prompt()
    out = genplug.generate(model, ids, max_new_tokens=6, return_dict_in_generate=True, output_scores=True,
                           output_logits=True, output_attentions=True, output_hidden_states=True)
    assert isinstance(out, genplug.GenerateDecoderOnlyOutput)
    steps = out.sequences.shape[1] - ids.shape[1]
    assert len(out.scores) == len(out.logits) == len(out.attentions) == len(out.hidden_states) == steps
    transition = genplug.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    # the seed's example 1: the chosen token's log-prob at every step
    manual = torch.stack([torch.log_softmax(s, -1).gather(1, out.sequences[:, ids.shape[1] + i, None])[:, 0]
                          for i, s in enumerate(out.scores)], 1)
    assert torch.allclose(transition, manual)
    assert out["sequences"] is out.sequences and out[0] is out.sequences
