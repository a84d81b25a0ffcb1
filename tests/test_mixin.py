"""GenerationMixin gives a model class generate() and compute_transition_scores()."""

import torch

import genplug
from helpers.tiny_lm import TinyCausalLM, recompute_greedy


class MixedModel(genplug.GenerationMixin, TinyCausalLM):
    pass


def test_mixin_generate_equals_function():
    model = MixedModel(vocab_size=32, seed=5)
    ids = torch.tensor([[3, 4, 5]])
    assert torch.equal(model.generate(ids, max_new_tokens=5, eos_token_id=None), recompute_greedy(model, ids, 5))
    out = model.generate(ids, max_new_tokens=4, return_dict_in_generate=True, output_scores=True, eos_token_id=None)
    scores = model.compute_transition_scores(out.sequences, out.scores)
    assert torch.equal(scores, genplug.compute_transition_scores(out.sequences, out.scores))
