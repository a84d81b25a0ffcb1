"""transformers 5.24 renamed the cache argument of model forwards (and of generate) from
``past_key_values`` to ``cache``, and the returned field with it. genplug drives a model of either
spelling and takes either in generate(). Oracle: the same weights under the old spelling, through
transformers' generate and through genplug."""

import inspect

import pytest
import torch
import transformers

import genplug
from genplug.errors import GenerationInputError
from helpers.transformers_version import transformers_at_least
from parity_tools import left_padded, tiny_model


class CacheNamedModel(torch.nn.Module):
    """A model whose forward takes ``cache`` and returns only ``logits`` and ``cache`` (the new spelling),
    over a transformers model of the old one; records what it was called with."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.calls = inner, inner.config, []
        self.generation_config = inner.generation_config
        self.inner_name = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None,
                logits_to_keep=0):
        self.calls.append(cache)
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, logits_to_keep=logits_to_keep, **{self.inner_name: cache})
        return _NewOutput(out.logits, getattr(out, self.inner_name))


class _NewOutput:
    __slots__ = ("logits", "cache")

    def __init__(self, logits, cache):
        self.logits, self.cache = logits, cache


@pytest.mark.parametrize("options", [dict(), dict(cache_implementation="static"), dict(num_beams=3)],
                         ids=["dynamic", "static", "beam search"])
def test_a_model_whose_forward_takes_cache_generates_as_before(options):
    inner = tiny_model("llama")
    ids, mask = left_padded(batch=2, length=5, pads=(1, 0))
    common = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0, **options)
    model = CacheNamedModel(inner)
    ours = genplug.generate(model, ids, **common)
    theirs = inner.generate(ids, **common)
    assert torch.equal(ours, theirs)
    assert len(model.calls) > 1 and all(c is not None for c in model.calls)  # the cache went in as `cache`


def test_generate_takes_cache_for_past_key_values():
    model = tiny_model("llama")
    ids, mask = left_padded(batch=2, length=5, pads=(1, 0))
    common = dict(attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    given = transformers.DynamicCache(config=model.config)
    out = genplug.generate(model, ids, cache=given, **common)
    assert given.get_seq_length() == ids.shape[1] + 3  # the cache passed as `cache` is the one filled
    assert torch.equal(out, model.generate(ids, **common))
    with pytest.raises(GenerationInputError, match="both cache and past_key_values"):
        genplug.generate(model, ids, cache=transformers.DynamicCache(config=model.config),
                         past_key_values=transformers.DynamicCache(config=model.config), **common)


def test_the_returned_cache_is_not_read_through_a_deprecated_alias():
    """A transformers >= 5.24 output still answers to `past_key_values` and `cache_params`, as properties that log
    a deprecation warning; genplug reads the field that holds the cache (`cache`, RWKV's `state`) first."""
    from genplug.models import returned_cache

    class Output:
        def __init__(self, **fields):
            self.__dict__.update(fields)

        @property
        def past_key_values(self):
            raise AssertionError("read through a deprecated alias")

        cache_params = past_key_values

    cache, state = object(), object()
    assert returned_cache(Output(cache=cache)) is cache
    assert returned_cache(Output(state=state)) is state
    out = tiny_model("llama")(torch.tensor([[5, 6, 7]]), use_cache=True)
    assert returned_cache(out) is (out.cache if transformers_at_least("5.24") else out.past_key_values)
