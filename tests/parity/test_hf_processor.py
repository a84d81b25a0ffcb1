"""Every logits-processor family, alone and all together: same tokens and same processed scores.

Scores are compared at every step (``output_scores``), so a processor that changes scores without
changing the argmax is still caught. Warpers run only when sampling, as in transformers.
"""

import pytest
import torch

import genplug
from helpers.transformers_version import transformers_at_least
from parity_tools import assert_same, left_padded, prompt, run_both, tiny_model, token_generated_at

SCORES = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)


def _case(model_name="llama", seed=None, batch=3, **kwargs):
    model = tiny_model(model_name)
    ids, mask = left_padded(batch=batch, pads=(2, 0, 1)[:batch])
    ours, theirs = run_both(model, seed=seed, input_ids=ids, attention_mask=mask, max_new_tokens=8,
                            pad_token_id=0, **SCORES, **kwargs)
    assert_same(ours, theirs)
    return ours


# ------------------------------------------------------------------------------- non-warpers, greedy


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty(penalty):
    _case(repetition_penalty=penalty, do_sample=False)


@pytest.mark.parametrize("size", [1, 2])
def test_no_repeat_ngram(size):
    out = _case(no_repeat_ngram_size=size, do_sample=False)
    if size == 1:  # independent check: no token repeats within a row's generated part
        for row in out.sequences[:, 7:]:
            assert len(set(row.tolist())) == len(row)


def test_bad_words_ids():
    model = tiny_model("llama")
    ids, _ = left_padded(batch=3)
    first = token_generated_at(model, ids, step=0, row=0)
    second = token_generated_at(model, ids, step=1, row=2)
    _case(bad_words_ids=[[first], [7, second], [9, 10, 11]], do_sample=False)


def test_sequence_bias():
    model = tiny_model("llama")
    ids, _ = left_padded(batch=3)
    favoured = token_generated_at(model, ids, step=0, row=1)
    _case(sequence_bias=[[[favoured], -4.0], [[favoured, 17], 6.0], [[40], 2.5]], do_sample=False)


def test_suppress_tokens_and_begin_suppress_tokens():
    model = tiny_model("llama")
    ids, _ = left_padded(batch=3)
    begin = token_generated_at(model, ids, step=0, row=0)
    _case(suppress_tokens=[5, 6, 60, 61], begin_suppress_tokens=[begin, 3], do_sample=False)


def test_forced_bos_and_eos():
    _case(forced_bos_token_id=11, do_sample=False)  # acts only when the prompt is one token long
    model = tiny_model("llama")
    ours, theirs = run_both(model, input_ids=torch.tensor([[12], [13]]), max_new_tokens=5, forced_bos_token_id=11,
                            do_sample=False, **SCORES)
    assert_same(ours, theirs)
    assert (ours.sequences[:, 1] == 11).all()
    out = _case(forced_eos_token_id=[21, 22], eos_token_id=[21, 22], do_sample=False)
    assert set(out.sequences[:, -1].tolist()) <= {21, 22, 0}


def test_exponential_decay_length_penalty():
    model = tiny_model("llama")
    ids, _ = left_padded(batch=3)
    eos = token_generated_at(model, ids, step=5, row=0)
    _case(exponential_decay_length_penalty=(2, 1.8), eos_token_id=eos, do_sample=False)


def test_min_length_and_min_new_tokens_processors():
    _case(min_new_tokens=4, eos_token_id=[5, 6, 7], do_sample=False)
    _case(min_length=10, eos_token_id=[5, 6, 7], do_sample=False)


def test_renormalize_and_remove_invalid_values():
    out = _case(renormalize_logits=True, remove_invalid_values=True, repetition_penalty=1.2, do_sample=False)
    for step in out.scores:  # renormalized scores are log-probabilities
        torch.testing.assert_close(step.logsumexp(-1), torch.zeros(step.shape[0]), atol=1e-5, rtol=0)


def test_encoder_processors_on_a_decoder_only_model():
    # transformers applies encoder_* processors to the prompt of a decoder-only model too
    _case(encoder_repetition_penalty=1.5, encoder_no_repeat_ngram_size=2, do_sample=False)


def test_prefix_allowed_tokens_fn():
    def allowed(batch_id, sent):
        return [int(sent[-1]) % 50 + 10, 70 + batch_id, 100]

    _case(prefix_allowed_tokens_fn=allowed, do_sample=False)


def test_prefix_allowed_tokens_fn_gets_the_prompt_index_when_sampling_several_sequences():
    """``batch_id`` is the index of the prompt a row continues, also for the num_return_sequences rows of
    one prompt (transformers >= 5.24; before, sampling passed the row index, past the caller's prompts)."""
    model = tiny_model("llama")
    ids, mask = left_padded(batch=2, pads=(2, 0))
    seen = []

    def allowed(batch_id, sent):
        seen.append((batch_id, sent[:ids.shape[1]].tolist()))
        return [10 + batch_id, 20 + batch_id, 30 + batch_id]

    torch.manual_seed(0)
    out = genplug.generate(model, ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0, do_sample=True,
                           num_return_sequences=3, prefix_allowed_tokens_fn=allowed)
    # oracle: each batch_id names the prompt its row continues, and each row holds only that prompt's tokens
    assert seen and all(prefix == ids[batch_id].tolist() for batch_id, prefix in seen)
    for row, generated in enumerate(out[:, ids.shape[1]:].tolist()):
        assert set(generated) <= {10 + row // 3, 20 + row // 3, 30 + row // 3}
    if transformers_at_least("5.24"):
        _case(prefix_allowed_tokens_fn=allowed, seed=0, batch=2, do_sample=True, num_return_sequences=3)


# ---------------------------------------------------------------------------------- warpers, sampling


@pytest.mark.parametrize("warper", [
    {"temperature": 0.6},
    {"temperature": 1.7, "top_k": 0},
    {"top_k": 5},
    {"top_k": 0, "top_p": 0.8},
    {"top_k": 0, "min_p": 0.3},
    {"top_k": 0, "typical_p": 0.6},
    {"top_k": 0, "epsilon_cutoff": 0.009},
    {"top_k": 0, "eta_cutoff": 0.02},
    {"top_k": 0, "top_h": 0.4},
    {},  # the default: top_k=50
])
def test_warpers_with_sampling(warper):
    for seed in (0, 7):
        _case(seed=seed, do_sample=True, **warper)


def test_warpers_keep_scores_but_not_the_argmax_in_greedy_search():
    # warpers are built only for sampling: greedy scores equal the raw logits in both libraries
    out = _case(do_sample=False, temperature=0.5, top_k=3, top_p=0.5)
    for scores, logits in zip(out.scores, out.logits):
        assert torch.equal(scores, logits)


def test_many_processors_at_once():
    model = tiny_model("llama")
    ids, _ = left_padded(batch=3)
    eos = token_generated_at(model, ids, step=4, row=1)
    many = dict(
        repetition_penalty=1.4, no_repeat_ngram_size=3, bad_words_ids=[[9], [12, 13]],
        sequence_bias=[[[20], 1.5], [[21, 22], -2.0]], suppress_tokens=[30, 31], begin_suppress_tokens=[32],
        min_new_tokens=2, exponential_decay_length_penalty=(3, 1.3), encoder_repetition_penalty=1.1,
        remove_invalid_values=True, renormalize_logits=True, eos_token_id=[eos, 3],
        temperature=0.8, top_k=40, top_p=0.9, min_p=0.02, typical_p=0.95, epsilon_cutoff=0.0003, eta_cutoff=0.0005,
    )
    for seed in (1, 2, 3):
        _case(seed=seed, do_sample=True, **many)
    _case(do_sample=False, **many)


def test_user_logits_processor_runs_after_the_built_ins_and_before_the_warpers():
    class AddToToken:
        """A processor of the caller's own: +3 on one token (it would lose to top-k if run after it)."""

        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[:, 77] += 3.0
            return scores

    for seed in (0, 1):
        _case(seed=seed, do_sample=True, top_k=2, repetition_penalty=1.3, logits_processor=[AddToToken()])


def test_scores_on_a_single_prompt_without_padding():
    model = tiny_model("gpt2")
    ours, theirs = run_both(model, seed=4, input_ids=prompt(batch=1), max_new_tokens=6, do_sample=True, top_p=0.7,
                            temperature=0.9, **SCORES)
    assert_same(ours, theirs)
