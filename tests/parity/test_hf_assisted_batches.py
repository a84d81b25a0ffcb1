"""Assisted decoding of several rows at once (transformers takes one) and candidate generators from plugins.

transformers has no batched assisted decoding to compare with, so the oracle is the property that holds
for one row in transformers too: assisted greedy search returns plain greedy search's tokens (and
scores), whatever the candidates -- here for left-padded batches whose rows stop at different steps.
Speculative sampling is checked for exactness on a large batch of identical rows (each row's first token
must be distributed as the target says), and for one row against transformers' draws in test_hf_assisted.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

import genplug
from genplug.errors import GenerationInputError
from genplug.plugin_manager import new_plugin_manager, use_plugin_manager
from genplug.plugins.strategies.assisted import speculative_choice
from genplug.plugins.strategies.candidates import padded
from parity_tools import VOCAB, assert_same, tiny_model

SCORES = dict(return_dict_in_generate=True, output_scores=True)


def repetitive_batch(rows=3, half=6, pads=(0, 2, 4), seed=0):
    """Rows that repeat themselves (prompt lookup finds n-grams), left-padded by ``pads``."""
    g = torch.Generator().manual_seed(seed)
    halves = torch.randint(4, VOCAB, (rows, half), generator=g)
    ids = torch.cat((halves, halves), dim=1)
    mask = torch.ones_like(ids)
    for row, count in enumerate(pads[:rows]):
        ids[row, :count], mask[row, :count] = 0, 0
    return ids, mask


def draft_model():
    torch.manual_seed(7)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=VOCAB, attn_implementation="eager")).eval()


@pytest.mark.parametrize("settings", [
    dict(prompt_lookup_num_tokens=4),
    dict(prompt_lookup_num_tokens=2, max_matching_ngram_size=3, no_repeat_ngram_size=3),
    dict(assistant_early_exit=1, num_assistant_tokens=3),
    dict(draft=True, num_assistant_tokens=3),
    dict(draft=True, num_assistant_tokens=4, num_assistant_tokens_schedule="heuristic"),
], ids=["lookup", "lookup with n-gram blocking", "early exit", "draft model", "draft, heuristic schedule"])
@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_batched_assisted_greedy_is_plain_greedy(settings, name):
    model = tiny_model(name)
    settings = dict(settings)
    if settings.pop("draft", False):
        settings["assistant_model"] = draft_model()
    processing = {"no_repeat_ngram_size": settings.pop("no_repeat_ngram_size")} if "no_repeat_ngram_size" in settings else {}
    for seed in range(2):
        ids, mask = repetitive_batch(seed=seed)
        common = dict(attention_mask=mask, max_new_tokens=14, pad_token_id=0, **processing, **SCORES)
        plain = genplug.generate(model, ids, **common)
        # an EOS that rows meet at different steps (so finished rows are padded while others go on)
        eos = int(plain.sequences[1, ids.shape[1] + 5])
        common["eos_token_id"] = eos
        expected = genplug.generate(model, ids, **common)
        ours = genplug.generate(model, ids, **settings, **common)
        assert_same(ours, expected, check=())
        assert_scores_of_running_rows_equal(ours, expected, ids.shape[1], eos)


def assert_scores_of_running_rows_equal(ours, expected, prompt_len, eos):
    """Scores at every step for the rows still running there (a finished row's scores are computed from
    the tokens fed after its EOS, which differ: plain search feeds pads, assisted search its candidates)."""
    assert len(ours.scores) == len(expected.scores)
    generated = expected.sequences[:, prompt_len:]
    for step, (mine, reference) in enumerate(zip(ours.scores, expected.scores)):
        running = ~(generated[:, :step] == eos).any(dim=1)
        torch.testing.assert_close(mine[running], reference[running], atol=1e-5, rtol=0)


def test_batched_assisted_greedy_matches_transformers_greedy():
    """The plain greedy oracle itself is transformers' (checked elsewhere); here directly, with a draft."""
    model = tiny_model("llama")
    ids, mask = repetitive_batch(seed=4)
    ours = genplug.generate(model, ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0,
                            assistant_model=draft_model(), num_assistant_tokens=3)
    theirs = model.generate(ids, attention_mask=mask, max_new_tokens=10, pad_token_id=0)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("settings", [dict(prompt_lookup_num_tokens=3), dict(draft=True, num_assistant_tokens=3)])
def test_batched_assisted_sampling_runs_every_row_to_the_limit(settings):
    model = tiny_model("llama")
    settings = dict(settings)
    if settings.pop("draft", False):
        settings["assistant_model"] = draft_model()
    ids, mask = repetitive_batch()
    torch.manual_seed(0)
    out = genplug.generate(model, ids, attention_mask=mask, max_new_tokens=12, do_sample=True, pad_token_id=0,
                           num_return_sequences=2, **settings, **SCORES)
    assert out.sequences.shape == (6, ids.shape[1] + 12) and len(out.scores) == 12
    assert torch.equal(out.sequences[::2, :ids.shape[1]], ids)


def test_speculative_choice_keeps_the_target_distribution_row_by_row():
    """Many identical rows at once: each row's first token must follow the target p exactly, whatever the
    draft q proposes -- also for rows whose candidates stop early (``lengths``)."""
    torch.manual_seed(0)
    rows, k, vocab = 40000, 3, 5
    target = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]]).repeat(k + 1, 1)
    draft = torch.tensor([[0.0, 2.0, 1.0, 0.0, 0.0]]).repeat(k, 1)
    q = draft.softmax(-1)
    candidates = torch.multinomial(q[0], rows * k, replacement=True).view(rows, k)
    lengths = torch.tensor([3, 1, 0, 2]).repeat(rows // 4)
    tokens, kept = speculative_choice(candidates, draft.expand(rows, k, vocab), target.expand(rows, k + 1, vocab),
                                      lengths=lengths)
    p = target[0].softmax(-1)
    assert bool((kept <= lengths).all())
    assert torch.equal(tokens[kept > 0, 0], candidates[kept > 0, 0])
    for length in range(4):
        first = tokens[lengths == length, 0]
        observed = torch.bincount(first, minlength=vocab).float() / first.numel()
        assert torch.allclose(observed, p, atol=0.015), (length, observed, p)


def test_padded_candidates_fill_past_each_row_with_its_last_token():
    tokens = torch.tensor([[5, 6], [7, 8]])
    ids, scores, lengths = padded([torch.tensor([1, 2, 3]), torch.tensor([4])], tokens)
    assert ids.tolist() == [[1, 2, 3], [4, 8, 8]] and lengths.tolist() == [3, 1] and scores is None


# ----------------------------------------------------------------------------- generators from plugins


class RepeatLastToken:
    """A third-party generator: propose the last token ``n`` times (counts how often it was asked)."""

    def __init__(self, n):
        self.n, self.rounds, self.accepted_lengths = n, 0, []

    def candidates(self, tokens):
        self.rounds += 1
        return tokens[:, -1:].repeat(1, self.n), None

    def accepted(self, length):
        self.accepted_lengths.append(length)

    def update(self, n_matches, n_candidates):
        pass


def test_a_plugin_candidate_generator_is_chosen_by_speculation_type():
    made = []

    class Drafts:
        @genplug.hookimpl
        def genplug_register_candidate_generators(self, register):
            def build(config, context):
                assert context.input_ids.shape[0] == 3 and context.model.vocab_size == VOCAB
                made.append(RepeatLastToken(config.num_assistant_tokens or 2))
                return made[-1]

            register("repeat_last", build, description="the last token again")

    model = tiny_model("llama")
    ids, mask = repetitive_batch()
    plain = genplug.generate(model, ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0)
    with use_plugin_manager(new_plugin_manager(plugins=[Drafts()])):
        out = genplug.generate(model, ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0,
                               speculation_type="repeat_last", num_assistant_tokens=3)
        with pytest.raises(genplug.GenerationConfigError, match="speculation_type"):
            genplug.generate(model, ids, max_new_tokens=2, speculation_type="repeat_lasst")
    assert torch.equal(out, plain)
    generator = made[0]
    assert generator.rounds >= 1 and generator.accepted_lengths[-1] == out.shape[1]


def test_built_in_generators_are_listed_like_plugins_and_chosen_by_name():
    pm = new_plugin_manager()
    names = set(pm.registries.candidate_generators)
    assert {"prompt_lookup", "draft_model", "early_exit"} <= names
    model = tiny_model("llama")
    ids, mask = repetitive_batch(rows=1, pads=(0,))
    by_name = genplug.generate(model, ids, max_new_tokens=8, speculation_type="prompt_lookup",
                               prompt_lookup_num_tokens=3)
    assert torch.equal(by_name, genplug.generate(model, ids, max_new_tokens=8))
    with pytest.raises(GenerationInputError, match="declined"):
        genplug.generate(model, ids, max_new_tokens=4, speculation_type="draft_model")  # no assistant_model


def test_transformers_refuses_batches_genplug_does_not():
    model = tiny_model("llama")
    ids, mask = repetitive_batch(rows=2)
    with pytest.raises(ValueError):
        model.generate(ids, attention_mask=mask, max_new_tokens=4, prompt_lookup_num_tokens=3)
    out = genplug.generate(copy.deepcopy(model), ids, attention_mask=mask, max_new_tokens=4, prompt_lookup_num_tokens=3,
                           pad_token_id=0)
    assert out.shape == (2, ids.shape[1] + 4)


@pytest.mark.parametrize("seed", range(6))
def test_prompt_lookup_for_the_whole_batch_equals_row_by_row(seed):
    """The batched search (no processors) finds what the per-row search finds, EOS cuts included."""
    from genplug.plugins.strategies.candidates import PromptLookupCandidates

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 6, (5, 14), generator=g)  # a small alphabet: many repeated n-grams
    eos = torch.tensor([int(torch.randint(0, 6, (), generator=g))])
    for n, size, max_length in ((4, 2, 40), (3, 3, 16), (1, 1, 40), (10, 2, 17)):
        lookup = PromptLookupCandidates(eos, n, size, max_length)
        ids, _, lengths = lookup.candidates(tokens)
        for row in range(tokens.shape[0]):
            expected = lookup._row(tokens, row)
            assert int(lengths[row]) == expected.numel() and torch.equal(ids[row, :expected.numel()], expected)
