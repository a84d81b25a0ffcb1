"""Classifier-free guidance gives transformers' tokens and scores: with and without a negative prompt,
greedy and sampling, with and without a cache, through the native twin and the transformers forward."""

import pytest
import torch

import genplug
from parity_tools import assert_same, left_padded, prompt, run_both, tiny_model

SCORES = dict(return_dict_in_generate=True, output_scores=True)


@pytest.mark.parametrize("negative", [False, True], ids=["last token", "negative prompt"])
@pytest.mark.parametrize("options", [dict(), dict(do_sample=True, top_k=20), dict(use_cache=False),
                                     dict(native_kernels=False)],
                         ids=["greedy", "sampling", "no cache", "transformers forward"])
def test_guided_generation_matches_transformers(negative, options):
    model = tiny_model("llama")
    ids = prompt(batch=2, length=6)
    extra = {}
    if negative:
        extra = dict(negative_prompt_ids=prompt(batch=2, length=4, seed=3),
                     negative_prompt_attention_mask=torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]]))
    native = options.pop("native_kernels", True) if "native_kernels" in options else True
    torch.manual_seed(0)
    ours = genplug.generate(model, ids, guidance_scale=1.8, max_new_tokens=8, native_kernels=native, **extra,
                            **options, **SCORES)
    torch.manual_seed(0)
    theirs = model.generate(ids, guidance_scale=1.8, max_new_tokens=8, **extra, **options, **SCORES)
    assert_same(ours, theirs, check=("scores",))


def test_guidance_changes_the_output():
    model = tiny_model("qwen2")
    ids, mask = left_padded(pads=(0, 0, 0))
    plain = genplug.generate(model, ids, attention_mask=mask, max_new_tokens=10)
    guided = genplug.generate(model, ids, attention_mask=mask, max_new_tokens=10, guidance_scale=3.0)
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=10, guidance_scale=3.0)
    assert torch.equal(ours, theirs) and torch.equal(guided, ours) and not torch.equal(plain, guided)
