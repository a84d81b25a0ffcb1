"""Assisted decoding against transformers: prompt lookup (greedy and seeded sampling, tokens and
scores), a draft model (greedy), the speculative-sampling acceptance itself (same random draws), and
the property that assisted greedy search returns plain greedy search's tokens whatever the candidates."""

import copy

import pytest
import torch
import transformers
from transformers.generation.utils import _speculative_sampling

import genplug
from genplug.errors import GenerationInputError
from genplug.plugins.strategies.assisted import speculative_sampling
from helpers.transformers_version import transformers_at_least
from parity_tools import VOCAB, assert_same, tiny_model

SCORES = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)


def repetitive_prompt(length=12, seed=0):
    """A prompt that repeats itself, so prompt lookup finds n-grams to continue."""
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(4, VOCAB, (1, length // 2), generator=g)
    return torch.cat((half, half), dim=1)


def draft_model():
    """A second, different tiny Llama with the same vocabulary (a weak draft: many rejections)."""
    torch.manual_seed(7)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=VOCAB, attn_implementation="eager")).eval()


@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampling"])
@pytest.mark.parametrize("settings", [dict(prompt_lookup_num_tokens=4), dict(prompt_lookup_num_tokens=2, max_matching_ngram_size=3),
                                      dict(prompt_lookup_num_tokens=4, no_repeat_ngram_size=3)],
                         ids=["lookup 4", "lookup 2 of 3-grams", "lookup with n-gram blocking"])
def test_prompt_lookup_matches_transformers(sampling, settings):
    model = tiny_model("llama")
    ids = repetitive_prompt()
    extra = dict(do_sample=True, top_k=30) if sampling else {}
    torch.manual_seed(0)
    ours = genplug.generate(model, ids, max_new_tokens=16, **settings, **extra, **SCORES)
    torch.manual_seed(0)
    theirs = model.generate(ids, max_new_tokens=16, **settings, **extra, **SCORES)
    assert_same(ours, theirs, check=("scores", "logits"))


@pytest.mark.parametrize("schedule", ["constant", "heuristic"])
def test_draft_model_greedy_matches_transformers_and_plain_greedy(schedule):
    model = tiny_model("llama")
    ids = repetitive_prompt(seed=3)
    plain = genplug.generate(model, ids, max_new_tokens=16)
    settings = dict(num_assistant_tokens=3, num_assistant_tokens_schedule=schedule)
    ours = genplug.generate(model, ids, max_new_tokens=16, assistant_model=draft_model(), **settings)
    theirs = model.generate(ids, max_new_tokens=16, assistant_model=draft_model(), **settings)
    assert torch.equal(ours, theirs) and torch.equal(ours, plain)


def test_a_draft_without_a_native_twin_matches_transformers():
    """GPT-2 has no native twin: the draft runs transformers' forward and keeps the cache that returns,
    which takes the count of tokens to remove, not a length to keep, when a rejection crops it."""
    model = tiny_model("gpt2")
    ids = repetitive_prompt(seed=3)
    plain = genplug.generate(model, ids, max_new_tokens=16)
    settings = dict(max_new_tokens=16, assistant_model=perturbed_copy(model), num_assistant_tokens=3)
    ours = genplug.generate(model, ids, **settings)
    assert torch.equal(ours, model.generate(ids, **settings)) and torch.equal(ours, plain)


@pytest.mark.parametrize("settings", [dict(prompt_lookup_num_tokens=5), dict(assistant_early_exit=1),
                                      dict(assistant_early_exit=2, num_assistant_tokens=2)],
                         ids=["prompt lookup", "early exit after 1 layer", "early exit, 2 tokens"])
@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_assisted_greedy_equals_greedy(settings, name):
    model = tiny_model(name)
    for seed in range(3):
        ids = repetitive_prompt(seed=seed)
        eos = int(genplug.generate(model, ids, max_new_tokens=12)[0, -3])  # rows end early on it
        common = dict(max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
        assert torch.equal(genplug.generate(model, ids, **settings, **common), genplug.generate(model, ids, **common))


@pytest.mark.parametrize("weight", [None, 0.3])
def test_speculative_acceptance_draws_like_transformers(weight):
    g = torch.Generator().manual_seed(0)
    for k in (1, 3, 6):
        candidates = torch.randint(0, 20, (1, k), generator=g)
        draft = torch.randn(1, k, 20, generator=g)
        target = torch.randn(1, k + 1, 20, generator=g)
        target[0, :k].scatter_add_(1, candidates[0, :, None], torch.full((k, 1), 2.0))  # mostly accepted
        for seed in range(10):
            torch.manual_seed(seed)
            ours = speculative_sampling(candidates, draft, target, weight)
            torch.manual_seed(seed)
            theirs, n = _speculative_sampling(torch.cat((torch.zeros(1, 2, dtype=torch.long), candidates), 1), draft,
                                              k, target, assistant_ensemble_weight=weight)
            assert torch.equal(ours, theirs) and ours.shape[1] == int(n) + 1


def test_a_candidate_the_target_rules_out_is_never_accepted(monkeypatch):
    """Acceptance is ``r < p / q`` with ``r`` uniform in [0, 1): a candidate the target gives probability 0 is
    refused even when ``r`` comes out as exactly 0 (transformers < 5.25 compared with ``<=`` and took it)."""
    candidates = torch.tensor([[3, 4]])
    draft = torch.zeros(1, 2, 8)
    target = torch.zeros(1, 3, 8)
    target[0, 0, 3] = float("-inf")
    monkeypatch.setattr(torch, "rand_like", torch.zeros_like)  # r = 0.0 for every candidate
    torch.manual_seed(0)
    ours = speculative_sampling(candidates, draft, target)
    assert ours.shape == (1, 1) and int(ours[0, 0]) != 3  # refused at once; the residual never draws 3
    if transformers_at_least("5.25"):
        torch.manual_seed(0)
        theirs, n = _speculative_sampling(torch.cat((torch.zeros(1, 2, dtype=torch.long), candidates), 1), draft, 2,
                                          target)
        assert torch.equal(ours, theirs) and int(n) == 0


def test_ensemble_weight_greedy_matches_transformers():
    model = tiny_model("llama")
    ids = repetitive_prompt(seed=2)
    kw = dict(max_new_tokens=12, assistant_model=draft_model(), num_assistant_tokens=3, assistant_ensemble_weight=0.6)
    assert torch.equal(genplug.generate(model, ids, **kw), model.generate(ids, **kw))


def test_draft_model_sampling_keeps_to_the_limits():
    model = tiny_model("llama")
    ids = repetitive_prompt()
    torch.manual_seed(0)
    out = genplug.generate(model, ids, max_new_tokens=15, do_sample=True, assistant_model=draft_model(),
                           num_assistant_tokens=4, **SCORES)
    assert out.sequences.shape == (1, ids.shape[1] + 15) and len(out.scores) == 15
    assert torch.equal(out.sequences[:, :ids.shape[1]], ids)


def test_the_heuristic_schedule_grows_while_every_candidate_is_accepted_and_is_kept():
    """With the target itself as the draft every candidate is accepted, so the "heuristic" schedule adds
    2 tokens per round (3, 5, 7, ...: rounds of 4, 6, 8 tokens) and leaves the last value on the
    assistant's generation config for the next call; "heuristic_transient" leaves it alone."""
    model = tiny_model("llama")
    ids = repetitive_prompt(seed=1)
    for schedule, expected in (("heuristic", 9.0), ("heuristic_transient", 3)):
        draft = copy.deepcopy(model)
        draft.generation_config.num_assistant_tokens = 3
        draft.generation_config.num_assistant_tokens_schedule = schedule
        out = genplug.generate(model, ids, max_new_tokens=18, assistant_model=draft, assistant_confidence_threshold=0)
        assert torch.equal(out, genplug.generate(model, ids, max_new_tokens=18))
        assert draft.generation_config.num_assistant_tokens == expected


def test_a_static_cache_works_too():
    """transformers refuses static caches here; genplug's crop, so the result is plain greedy's."""
    model = tiny_model("llama")
    ids = repetitive_prompt()
    plain = genplug.generate(model, ids, max_new_tokens=12)
    assert torch.equal(genplug.generate(model, ids, max_new_tokens=12, prompt_lookup_num_tokens=3,
                                        cache_implementation="static"), plain)


def test_what_assisted_generation_refuses():
    model = tiny_model("llama")
    ids = repetitive_prompt()
    other = copy.deepcopy(draft_model())
    other.resize_token_embeddings(VOCAB + 8)
    with pytest.raises(GenerationInputError, match="vocabulary"):
        genplug.generate(model, ids, max_new_tokens=4, assistant_model=other)
    with pytest.raises(GenerationInputError, match="exit_layer"):
        genplug.generate(model, ids, max_new_tokens=4, assistant_early_exit=1, native_kernels=False)


def test_prompt_lookup_near_the_length_limit_verifies_only_what_can_be_kept():
    """More candidates than tokens left: the result is still plain greedy search's (a static cache,
    sized for max_length, takes it too)."""
    model = tiny_model("llama")
    ids = repetitive_prompt(length=20)
    for new in (1, 2, 3):
        plain = genplug.generate(model, ids, max_new_tokens=new)
        for cache in ("dynamic", "static"):
            out = genplug.generate(model, ids, max_new_tokens=new, prompt_lookup_num_tokens=10,
                                   cache_implementation=cache)
            assert torch.equal(out, plain), (new, cache)


def perturbed_copy(model, scale=0.05, seed=0):
    """A draft for an encoder-decoder model: the same architecture with noisy weights (own encoder)."""
    draft = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in draft.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=g))
    return draft


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_encoder_decoder_assisted_greedy_matches_transformers_and_plain_greedy(name):
    from parity_tools import prompt

    model = tiny_model(name)
    ids = prompt(batch=1, length=10)
    plain = genplug.generate(model, ids, max_new_tokens=12)
    for settings in (dict(prompt_lookup_num_tokens=3), dict(assistant_model=perturbed_copy(model), num_assistant_tokens=4)):
        ours = genplug.generate(model, ids, max_new_tokens=12, **settings)
        theirs = model.generate(ids, max_new_tokens=12, **settings)
        assert torch.equal(ours, theirs) and torch.equal(ours, plain), list(settings)


def test_encoder_decoder_prompt_lookup_sampling_matches_transformers():
    from parity_tools import prompt

    model = tiny_model("bart")
    ids = prompt(batch=1, length=10)
    torch.manual_seed(0)
    ours = genplug.generate(model, ids, max_new_tokens=10, do_sample=True, prompt_lookup_num_tokens=2, **SCORES)
    torch.manual_seed(0)
    theirs = model.generate(ids, max_new_tokens=10, do_sample=True, prompt_lookup_num_tokens=2, **SCORES)
    assert_same(ours, theirs, check=("scores", "logits"))
    assert type(ours).__name__ == type(theirs).__name__ == "GenerateEncoderDecoderOutput"
