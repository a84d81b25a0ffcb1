"""Parity with transformers: each processor class on random inputs, and the list generate() builds.

The oracle is transformers itself: its processor classes on the same inputs, and its private
``GenerationMixin._get_logits_processor`` on a tiny random LlamaForCausalLM for the order and the
enabling rules.
"""

from __future__ import annotations

import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("transformers.generation.logits_process")

import genplug  # noqa: E402
from genplug.processing import LogitsProcessorList  # noqa: E402

from processor_testing import build_all, config, context  # noqa: E402

pytestmark = pytest.mark.parity

VOCAB = 300
LENGTH = 24


def _inputs(batch, seed, vocab=VOCAB, length=LENGTH):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 40, (batch, length), generator=generator)  # small id range: repeats happen
    scores = torch.randn(batch, vocab, generator=generator) * 3
    return input_ids, scores


def _cases(batch, input_ids):
    encoder_ids = torch.randint(0, 40, (batch, 16), generator=torch.Generator().manual_seed(7))
    last, before = int(input_ids[0, -1]), int(input_ids[0, -2])
    padding = torch.arange(batch) % 5
    yield "TemperatureLogitsWarper", (0.7,), {}
    yield "TemperatureLogitsWarper", (1.9,), {}
    for keep in (1, 2, 5):
        yield "TopKLogitsWarper", (7,), {"min_tokens_to_keep": keep}
        yield "TopPLogitsWarper", (0.75,), {"min_tokens_to_keep": keep}
        yield "MinPLogitsWarper", (0.2,), {"min_tokens_to_keep": keep}
        yield "TypicalLogitsWarper", (0.6,), {"min_tokens_to_keep": keep}
        yield "EpsilonLogitsWarper", (0.004,), {"min_tokens_to_keep": keep}
        yield "EtaLogitsWarper", (0.004,), {"min_tokens_to_keep": keep}
    yield "TopPLogitsWarper", (0.3,), {}
    yield "TopPLogitsWarper", (0.0,), {"min_tokens_to_keep": 3}
    yield "MinPLogitsWarper", (0.0,), {}
    yield "TopHLogitsWarper", (0.4,), {}
    yield "TopHLogitsWarper", (1.0,), {}
    yield "RepetitionPenaltyLogitsProcessor", (1.3,), {}
    yield "RepetitionPenaltyLogitsProcessor", (0.6,), {}
    yield "RepetitionPenaltyLogitsProcessor", (1.3,), {"prompt_ignore_length": 6}
    yield "RepetitionPenaltyLogitsProcessor", (1.3,), {"prompt_ignore_length": padding}
    yield "EncoderRepetitionPenaltyLogitsProcessor", (1.5,), {"encoder_input_ids": encoder_ids}
    yield "EncoderRepetitionPenaltyLogitsProcessor", (0.5,), {"encoder_input_ids": encoder_ids[:1]}
    for n in (1, 2, 3):
        yield "NoRepeatNGramLogitsProcessor", (n,), {}
        yield "EncoderNoRepeatNGramLogitsProcessor", (n,), {"encoder_input_ids": encoder_ids}
    yield "NoBadWordsLogitsProcessor", ([[5], [last, 7], [before, last, 9], [3, 4, 8]],), {"eos_token_id": 2}
    yield "NoBadWordsLogitsProcessor", ([[2], [11]],), {"eos_token_id": [2, 3]}
    yield "SequenceBiasLogitsProcessor", ({(5,): 2.0, (last, 7): -1.5, (before, last, 7): 0.5, (last, 5): 1.0},), {}
    yield "SequenceBiasLogitsProcessor", ([[[1], 0.5], [[last, 8], float("-inf")]],), {}
    yield "SuppressTokensLogitsProcessor", ([1, 2, 299],), {}
    yield "SuppressTokensAtBeginLogitsProcessor", ([1, 2, 3], LENGTH), {}
    yield "SuppressTokensAtBeginLogitsProcessor", ([1, 2, 3], LENGTH + 1), {}
    yield "ForcedBOSTokenLogitsProcessor", (3,), {}
    yield "ForcedEOSTokenLogitsProcessor", (LENGTH + 1, [2, 4]), {}
    yield "ForcedEOSTokenLogitsProcessor", (LENGTH + 2, 2), {}
    yield "MinLengthLogitsProcessor", (LENGTH + 1, [2, 4]), {}
    yield "MinLengthLogitsProcessor", (LENGTH, 2), {}
    yield "MinNewTokensLengthLogitsProcessor", (LENGTH - 2, 5, [2, 4]), {}
    yield "MinNewTokensLengthLogitsProcessor", (LENGTH - 5, 5, [2, 4]), {}
    yield "ExponentialDecayLengthPenalty", ((5, 1.5), [2, 4], LENGTH - 10), {}
    yield "ExponentialDecayLengthPenalty", ((5, 0.8), 2, LENGTH - 4), {}
    yield "LogitNormalization", (), {}


def _assert_same(ours, theirs):
    assert torch.equal(torch.isneginf(ours), torch.isneginf(theirs)), "different -inf positions"
    assert torch.equal(torch.isposinf(ours), torch.isposinf(theirs))
    finite = torch.isfinite(theirs)
    torch.testing.assert_close(ours[finite], theirs[finite], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_processor_class_matches_transformers(batch, seed):
    input_ids, scores = _inputs(batch, seed)
    for name, args, kwargs in _cases(batch, input_ids):
        ours = getattr(genplug, name)(*args, **kwargs)
        theirs = getattr(hf, name)(*args, **kwargs)
        expected = theirs(input_ids, scores.clone())
        original = scores.clone()
        try:
            _assert_same(ours(input_ids, scores), expected)
            # In a LogitsProcessorList next to another processor: the in-place chain, same result.
            chained = LogitsProcessorList([genplug.TemperatureLogitsWarper(1.0), ours])(input_ids, scores)
            _assert_same(chained, expected)
        except AssertionError as error:
            raise AssertionError(f"{name}{args} {kwargs}: {error}") from None
        assert torch.equal(scores, original), f"{name} changed its input"


def test_inf_nan_removal_matches_transformers():
    input_ids, scores = _inputs(3, 0)
    scores[0, 3], scores[1, 4], scores[2, 5] = float("nan"), float("inf"), float("-inf")
    ours = genplug.InfNanRemoveLogitsProcessor()(input_ids, scores)
    assert torch.equal(ours, hf.InfNanRemoveLogitsProcessor()(input_ids, scores))


def test_sampling_chain_after_top_k_matches_transformers():
    """Top-p / min-p after top-k run fused (one topk); the result must still be transformers'."""
    names = [("RepetitionPenaltyLogitsProcessor", (1.2,)), ("NoRepeatNGramLogitsProcessor", (3,)),
             ("TemperatureLogitsWarper", (0.7,)), ("TopKLogitsWarper", (40,)), ("TopPLogitsWarper", (0.9,)),
             ("MinPLogitsWarper", (0.05,))]
    for seed in range(5):
        input_ids, scores = _inputs(6, seed, vocab=2000, length=64)
        ours = LogitsProcessorList(getattr(genplug, n)(*a) for n, a in names)(input_ids, scores)
        theirs = hf.LogitsProcessorList(getattr(hf, n)(*a) for n, a in names)(input_ids, scores)
        _assert_same(ours, theirs)


# ---------------------------------------------------------------------------------------------------
# The list transformers' generate() builds, against the list genplug's factories build
# ---------------------------------------------------------------------------------------------------

EVERYTHING = dict(
    do_sample=True, temperature=0.7, top_h=0.5, top_k=10, top_p=0.9, min_p=0.05, typical_p=0.9,
    epsilon_cutoff=0.001, eta_cutoff=0.001, repetition_penalty=1.2, encoder_repetition_penalty=1.1,
    no_repeat_ngram_size=2, encoder_no_repeat_ngram_size=3, bad_words_ids=[[5], [6, 7], [2]],
    sequence_bias={(3,): 1.0, (4, 9): -2.0}, min_length=5, min_new_tokens=2, forced_bos_token_id=1,
    forced_eos_token_id=2, remove_invalid_values=True, exponential_decay_length_penalty=(2, 1.1),
    suppress_tokens=[8], begin_suppress_tokens=[10, 11], renormalize_logits=True, eos_token_id=2,
    max_length=30,
)


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    model_config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(model_config).eval()


def _allowed(batch_id, ids):
    return [int(ids[-1]) % 64, 3, 2, 5 + batch_id]


def _transformers_list(model, fields, input_ids, attention_mask, prefix_fn=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generation_config, _ = model._prepare_generation_config(transformers.GenerationConfig(**fields))
        model._prepare_special_tokens(generation_config, True, device="cpu")
        return model._get_logits_processor(
            generation_config=generation_config, input_ids_seq_length=input_ids.shape[1],
            encoder_input_ids=input_ids, prefix_allowed_tokens_fn=prefix_fn, logits_processor=hf.LogitsProcessorList(),
            device="cpu", model_kwargs={"attention_mask": attention_mask},
        )


def _genplug_list(fields, input_ids, attention_mask, prefix_fn=None):
    eos = fields.get("eos_token_id")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_all(config(**fields), context(
            input_ids, vocab_size=64, eos=eos, attention_mask=attention_mask, encoder_input_ids=input_ids,
            prefix_allowed_tokens_fn=prefix_fn, num_beams=fields.get("num_beams", 1),
            strategy="beam_sample" if fields.get("num_beams", 1) > 1 else "sample"))


def _prompt(batch=2, length=6):
    input_ids = torch.randint(12, 64, (batch, length), generator=torch.Generator().manual_seed(3))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :2] = 0
    return input_ids, attention_mask


def test_order_with_everything_enabled_is_transformers_order(tiny_llama):
    input_ids, attention_mask = _prompt()
    theirs = _transformers_list(tiny_llama, EVERYTHING, input_ids, attention_mask, _allowed)
    ours = _genplug_list(EVERYTHING, input_ids, attention_mask, _allowed)
    assert [type(p).__name__ for p in ours] == [type(p).__name__ for p in theirs]
    assert len(ours) == 24


CONFIGS = [
    dict(do_sample=True),  # the default top-k 50
    dict(do_sample=False, temperature=0.5, top_p=0.5),  # warpers need sampling
    dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0),  # everything neutral
    dict(do_sample=True, num_beams=3, top_k=4, top_p=0.8, min_p=0.1, typical_p=0.8, epsilon_cutoff=0.01,
         eta_cutoff=0.01, eos_token_id=[2, 3]),  # beam sampling keeps n_eos + 1
    dict(do_sample=True, num_beams=2, top_k=1),  # beam sampling without EOS keeps 2
    dict(begin_suppress_tokens=[10], forced_bos_token_id=1, max_length=20),
    dict(repetition_penalty=1.5, no_repeat_ngram_size=2, eos_token_id=2, min_new_tokens=3, min_length=9),
    dict(bad_words_ids=[[2], [9, 10]], eos_token_id=2, sequence_bias=[[[4, 9], 1.5], [[9], -1.0]]),
    dict(exponential_decay_length_penalty=(1, 1.3), eos_token_id=[2, 5], forced_eos_token_id=[2, 5], max_length=12),
]


@pytest.mark.parametrize("fields", CONFIGS)
@pytest.mark.parametrize("prompt_length", [1, 6])
def test_built_lists_process_scores_like_transformers(tiny_llama, fields, prompt_length):
    """Same classes in the same order, with the same settings: the outputs over a few steps agree."""
    input_ids, attention_mask = _prompt(length=prompt_length)
    if prompt_length == 1:
        attention_mask = torch.ones_like(input_ids)
    theirs = _transformers_list(tiny_llama, fields, input_ids, attention_mask)
    ours = _genplug_list(fields, input_ids, attention_mask)
    assert [type(p).__name__ for p in ours] == [type(p).__name__ for p in theirs]
    generator = torch.Generator().manual_seed(5)
    ids = input_ids
    for _ in range(4):
        scores = torch.randn(ids.shape[0], 64, generator=generator) * 3
        _assert_same(ours(ids, scores), theirs(ids, scores))
        ids = torch.cat([ids, torch.randint(0, 64, (ids.shape[0], 1), generator=generator)], dim=1)
