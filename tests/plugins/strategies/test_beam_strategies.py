"""Properties of the beam strategies on a pure-torch tiny model (no transformers needed).

Oracles: greedy search (one beam), a no-cache recompute, ``compute_transition_scores`` (the seed's
example 2 identity), and invariants of the returned hypotheses.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import genplug
from genplug.plugins.strategies.beam_search import beam_search
from helpers.tiny_lm import TinyCausalLM

VOCAB = 32
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def model():
    return TinyCausalLM(vocab_size=VOCAB, seed=5)


def _prompt(batch, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (batch, length), generator=g)


MODES = {
    "beam_search": dict(num_beams=3),
    "beam_sample": dict(num_beams=3, do_sample=True, top_k=0),
    "group_beam_search": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.7),
    "constrained_beam_search": dict(num_beams=3, force_words_ids=[[7, 8]]),
}


@FAST
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 3), eos=st.one_of(st.none(), st.integers(4, VOCAB - 1)))
def test_one_beam_is_greedy_search(model, seed, batch, eos):
    ids = _prompt(batch, 4, seed)
    kwargs = dict(max_new_tokens=9, eos_token_id=eos, pad_token_id=1)
    greedy = genplug.generate(model, ids, **kwargs)
    beam = genplug.generate(model, ids, num_beams=1, early_stopping=True, custom_generate=beam_search, **kwargs)
    assert torch.equal(beam, greedy)


@FAST
@given(seed=st.integers(0, 10_000), mode=st.sampled_from(sorted(MODES)), eos=st.integers(4, VOCAB - 1),
       length_penalty=st.sampled_from([1.0, 0.0, -0.5, 2.0]))
def test_returned_hypotheses_are_sorted_and_scores_rebuild_from_transitions(model, seed, mode, eos, length_penalty):
    """Seed example 2: sum(transition scores) / length ** length_penalty == sequences_scores."""
    settings_ = dict(MODES[mode])
    beams = settings_["num_beams"]
    torch.manual_seed(seed)
    out = genplug.generate(model, _prompt(2, 4, seed), max_new_tokens=8, eos_token_id=eos, pad_token_id=1,
                           num_return_sequences=beams, length_penalty=length_penalty,
                           return_dict_in_generate=True, output_scores=True, **settings_)
    scores = out.sequences_scores.view(2, beams)
    assert (scores[:, :-1] >= scores[:, 1:]).all(), scores
    transition = genplug.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
    length = (out.beam_indices >= 0).sum(1)
    torch.testing.assert_close(transition.sum(1) / length ** length_penalty, out.sequences_scores)
    generated = transition[out.beam_indices >= 0]
    if mode == "beam_search" and (generated < 0).all():
        # The seed counts the length as the number of negative transition scores (a log-prob that
        # rounds to exactly 0 would break that count, not the identity).
        doc_length = (transition < 0).sum(1)
        torch.testing.assert_close(transition.sum(1) / doc_length ** length_penalty, out.sequences_scores)


def test_beam_sampling_finishes_the_best_candidates_drawn_not_the_first():
    """Oracle: a model whose next token is 5 (p = .5), 6 (.3) or 7 (.19), the rest sharing .01. Two beams
    draw four candidates for the one new token; 5 and 6 are among them (but for odds of about 1e-3), and
    the two hypotheses that finish must be the best two drawn -- 5 then 6 -- in whatever order they were
    drawn (transformers 5.0-5.24 kept the first two drawn)."""
    fixed = TinyCausalLM(vocab_size=VOCAB, seed=0)
    probs = torch.full((VOCAB,), 0.01 / (VOCAB - 3))
    probs[5], probs[6], probs[7] = 0.5, 0.3, 0.19
    with torch.no_grad():
        fixed.head.weight.zero_()
        fixed.head.bias.copy_(probs.log())
    for seed in range(20):
        torch.manual_seed(seed)
        out = genplug.generate(fixed, _prompt(1, 3, seed), max_new_tokens=1, num_beams=2, num_return_sequences=2,
                               do_sample=True, top_k=0)
        assert out[:, -1].tolist() == [5, 6], seed


@pytest.mark.parametrize("mode", sorted(MODES))
def test_without_cache_equals_with_cache(model, mode):
    ids = _prompt(2, 5, 3)
    kwargs = dict(max_new_tokens=7, eos_token_id=9, pad_token_id=1, num_return_sequences=2, **MODES[mode])
    torch.manual_seed(0)
    cached = genplug.generate(model, ids, **kwargs)
    torch.manual_seed(0)
    recomputed = genplug.generate(model, ids, use_cache=False, **kwargs)
    assert torch.equal(cached, recomputed)


class RowTracker(genplug.LogitsProcessor):
    """Keeps each row's tokens as per-row state; checks it still describes its row next step."""

    def __init__(self):
        self.state = None
        self.reorders = 0

    def __call__(self, input_ids, scores):
        if self.state is not None and self.state.shape[1] + 1 == input_ids.shape[1]:
            assert torch.equal(self.state, input_ids[:, :-1]), "per-row state no longer matches its row"
        self.state = input_ids.clone()
        return scores

    def reorder(self, beam_idx):
        self.reorders += 1
        self.state = self.state[beam_idx]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_processors_with_row_state_follow_the_beams(model, mode):
    tracker = RowTracker()
    genplug.generate(model, _prompt(2, 4, 1), max_new_tokens=6, logits_processor=[tracker], eos_token_id=None,
                     **MODES[mode])
    assert tracker.reorders == 6


class FlatLM(TinyCausalLM):
    """The tiny model with its logits scaled down, so summed log-probs stay in the range (> -100)
    where constrained beam search's "bank * 100 + score" ranking orders beams by progress first."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True,
                logits_to_keep=0, output_attentions=False, output_hidden_states=False, return_dict=True):
        out = super().forward(input_ids, attention_mask, position_ids, past_key_values, use_cache, logits_to_keep,
                              output_attentions, output_hidden_states, return_dict)
        out.logits = out.logits * 0.1
        return out


@FAST
@given(seed=st.integers(0, 10_000), length=st.integers(1, 3), count=st.integers(1, 2), beams=st.integers(2, 4),
       data=st.data())
def test_constrained_output_contains_every_forced_phrase(seed, length, count, beams, data):
    """Phrases of one length whose tokens the prompt lacks, exactly enough new tokens: the most advanced
    beam gains one token of progress per step and completes at the last one. (That is all 4.56's
    algorithm guarantees: a beam completed earlier can be outscored and dropped, and when fewer than
    num_return_sequences beams are complete at the end it returns the best incomplete ones.)"""
    words = data.draw(st.lists(st.lists(st.integers(16, VOCAB - 1), min_size=length, max_size=length),
                               min_size=count, max_size=count))
    model = FlatLM(vocab_size=VOCAB, seed=5)
    ids = _prompt(2, 4, seed) % 12 + 4  # prompt tokens in [4, 16): no progress before generating
    out = genplug.generate(model, ids, num_beams=beams, force_words_ids=words, max_new_tokens=length * count,
                           eos_token_id=None)
    for row in out.tolist():
        for word in words:
            assert any(row[i:i + len(word)] == word for i in range(len(row))), (row, words)


def test_group_beam_search_groups_differ_with_a_penalty():
    ids = _prompt(1, 4, 2)
    out = genplug.generate(FlatLM(vocab_size=VOCAB, seed=5), ids, num_beams=4, num_beam_groups=4, diversity_penalty=10.0,
                           num_return_sequences=4, max_new_tokens=3, eos_token_id=None)
    first_tokens = out[:, 4].tolist()
    assert len(set(first_tokens)) == 4, first_tokens  # log-probs differ by < 10: no group repeats another's token


@pytest.mark.parametrize("mode", ["group_beam_search", "beam_search"])
def test_a_padded_batch_gives_each_prompt_its_own_result(model, mode):
    """Processors sized to the batch (a per-row repetition penalty that skips each row's left padding)
    see every row, also in group beam search, which runs them once per group."""
    short, long = _prompt(1, 3, 11), _prompt(1, 6, 12)
    ids = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = (torch.arange(6)[None, :] >= torch.tensor([[3], [0]])).long()
    kwargs = dict(max_new_tokens=6, eos_token_id=None, repetition_penalty=1.3, num_return_sequences=2,
                  **MODES[mode])
    batched = genplug.generate(model, ids, attention_mask=mask, **kwargs)
    alone = [genplug.generate(model, row, **kwargs) for row in (short, long)]
    assert torch.equal(batched[:2, 3:], alone[0])
    assert torch.equal(batched[2:], alone[1])


def test_beam_search_calls_only_the_criteria_that_stop_before_max_length(model, monkeypatch):
    """max_length ends every candidate inside the beam step, so MaxLengthCriteria is not called each step
    (one tensor less a step); a criterion of the user's is, once a step, and what it stops is stopped."""
    from genplug.plugins.stopping.max_length import MaxLengthCriteria
    from genplug.stopping import StoppingCriteria, StoppingCriteriaList

    ids = _prompt(2, 4, seed=3)
    plain = genplug.generate(model, ids, num_beams=3, max_new_tokens=6, eos_token_id=None, pad_token_id=0)
    calls = []
    real_call = MaxLengthCriteria.__call__
    monkeypatch.setattr(MaxLengthCriteria, "__call__", lambda self, *a, **k: calls.append(1) or real_call(self, *a, **k))

    class Counting(StoppingCriteria):
        def __init__(self, stop_at):
            self.seen, self.stop_at = [], stop_at

        def __call__(self, input_ids, scores, **kwargs):
            self.seen.append(input_ids.shape[1])
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.stop_at, dtype=torch.bool)

    never = Counting(stop_at=10 ** 6)
    again = genplug.generate(model, ids, num_beams=3, max_new_tokens=6, eos_token_id=None, pad_token_id=0,
                             stopping_criteria=StoppingCriteriaList([never]))
    assert torch.equal(again, plain) and not calls
    assert never.seen == list(range(5, 10))  # the steps before the last, which max_length ends itself
    early = Counting(stop_at=7)  # every candidate of the third step stops: the search ends there (steps run
    # past it until the next look at the stop flag are cut off)
    short = genplug.generate(model, ids, num_beams=3, max_new_tokens=6, eos_token_id=None, pad_token_id=0,
                             stopping_criteria=StoppingCriteriaList([early]))
    assert short.shape[1] == 7 and early.seen[:3] == [5, 6, 7]
