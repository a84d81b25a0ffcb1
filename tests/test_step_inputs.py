"""Properties of StepInputs: what each forward of a decoding loop is given.

A recording adapter stands in for the model. For random batches -- left padding, a prompt given as token
ids or as embeddings (with or without its ids), prompt-only and per-token inputs, given positions -- a
prefill and then one-token steps must hand the model, at every step, exactly what a hand-built reference
says: the mask of every position so far, the positions of the fed tokens, the prompt-only inputs with the
first forward only, the per-token inputs of the fed tokens.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genplug.errors import GenerationInputError
from genplug.models import ModelAdapter
from genplug.step_inputs import StepInputs


class Recorder(ModelAdapter):
    """A ModelAdapter whose ``step`` records its arguments instead of running a model."""

    def __init__(self):
        super().__init__(torch.nn.Identity())
        self.calls = []

    def prompt_only_inputs(self):
        return frozenset({"pixel_values"})

    def step(self, input_ids, attention_mask, position_ids, cache, model_kwargs, **options):
        self.calls.append(dict(ids=input_ids, mask=attention_mask, positions=position_ids,
                               kwargs=dict(model_kwargs), embeds=options.get("inputs_embeds")))


class Restarting(Recorder):
    """An adapter whose model cannot continue its cache over several tokens (as transformers' Mamba)."""

    def why_no_chunked_prefill(self):
        return "TinyMamba restarts its scan"


@st.composite
def calls(draw):
    batch = draw(st.integers(1, 3))
    prompt = draw(st.integers(1, 6))
    new = draw(st.integers(1, 5))
    pads = [draw(st.integers(0, prompt - 1)) for _ in range(batch)]
    as_embeddings = draw(st.sampled_from(["ids", "embeddings alone", "embeddings with ids"]))
    given_positions = draw(st.booleans()) and as_embeddings == "ids"
    token_types = draw(st.booleans())
    return batch, prompt, new, pads, as_embeddings, given_positions, token_types


@settings(max_examples=120, deadline=None)
@given(calls())
def test_every_forward_gets_its_slice(call):
    batch, prompt, new, pads, as_embeddings, given_positions, token_types = call
    g = torch.Generator().manual_seed(prompt * 31 + new)
    mask = torch.ones(batch, prompt, dtype=torch.long)
    for row, count in enumerate(pads):
        mask[row, :count] = 0
    embeds = torch.randn(batch, prompt, 4, generator=g)
    ids = torch.randint(0, 50, (batch, prompt), generator=g)
    prompt_ids = ids[:, :0] if as_embeddings == "embeddings alone" else ids
    kwargs = {"attention_mask": mask, "pixel_values": torch.ones(batch, 3)}
    if as_embeddings != "ids":
        kwargs["inputs_embeds"] = embeds
    if given_positions:
        kwargs["position_ids"] = torch.randint(0, 9, (batch, prompt), generator=g)
    if token_types:
        kwargs["token_type_ids"] = torch.randint(0, 2, (batch, prompt), generator=g)
    reference_positions = _reference_positions(mask, new, kwargs.get("position_ids"))
    reference_types = None if not token_types else torch.cat(
        [kwargs["token_type_ids"], kwargs["token_type_ids"][:, -1:].expand(-1, new)], dim=1)
    given_kwargs = dict(kwargs)

    adapter = Recorder()
    length = prompt_ids.shape[1]
    inputs = StepInputs.take(adapter, kwargs, batch, length, length + new, torch.device("cpu"))
    assert "attention_mask" not in kwargs and "pixel_values" not in kwargs  # taken out of model_kwargs
    tokens = torch.cat([prompt_ids, torch.randint(0, 50, (batch, new), generator=g)], dim=1)
    inputs.prefill(adapter, tokens, length, object(), kwargs, use_cache=True)
    for cur in range(length + 1, length + new + 1):
        inputs.forward(adapter, tokens, cur - 1, cur, object(), kwargs, use_cache=True)

    offset = prompt - length  # positions before the token buffer (embeddings alone)
    for index, recorded in enumerate(adapter.calls):
        first = 0 if index == 0 else offset + length + index - 1
        stop = offset + length + index
        full_mask = torch.cat([mask, torch.ones(batch, new, dtype=torch.long)], dim=1)
        assert torch.equal(recorded["mask"], full_mask[:, :stop])
        assert torch.equal(recorded["positions"], reference_positions[:, first:stop])
        assert ("pixel_values" in recorded["kwargs"]) == (index == 0)
        if token_types:
            assert torch.equal(recorded["kwargs"]["token_type_ids"], reference_types[:, first:stop])
        if index == 0 and as_embeddings != "ids":
            assert recorded["ids"] is None and torch.equal(recorded["embeds"], given_kwargs["inputs_embeds"])
        else:
            assert recorded["embeds"] is None
            assert torch.equal(recorded["ids"], tokens[:, first - offset:stop - offset])


def _reference_positions(mask: torch.Tensor, new: int, given) -> torch.Tensor:
    """Positions by hand: the caller's for the prompt, else the count of real tokens before each one
    (padding at 0); then one more per new token."""
    batch, prompt = mask.shape
    out = torch.zeros(batch, prompt + new, dtype=torch.long)
    for row in range(batch):
        if given is not None:
            out[row, :prompt] = given[row]
        else:
            seen = 0
            for col in range(prompt):
                out[row, col] = max(seen, 0) if mask[row, col] else 0
                seen += int(mask[row, col])
            out[row, :prompt] = torch.where(mask[row].bool(), out[row, :prompt], 0)
        for step in range(new):
            out[row, prompt + step] = out[row, prompt - 1] + step + 1
    return out


@pytest.mark.parametrize("prompt, pieces", [(9, [4, 4, 1]), (3, [3])], ids=["in pieces", "fits one piece"])
def test_chunked_prefill_is_refused_before_any_forward_where_the_adapter_says_why(prompt, pieces):
    """Refused whatever the prompt's length, so that a setting that works on short prompts does not fail on
    the first long one; an adapter with no objection gets the pieces."""
    tokens = torch.arange(prompt + 2)[None]
    continuing = Recorder()
    inputs = StepInputs.take(continuing, {}, 1, prompt, prompt + 2, torch.device("cpu"))
    inputs.prefill(continuing, tokens, prompt, object(), {}, use_cache=True, chunk_size=4)
    assert [call["ids"].shape[1] for call in continuing.calls] == pieces

    restarting = Restarting()
    inputs = StepInputs.take(restarting, {}, 1, prompt, prompt + 2, torch.device("cpu"))
    with pytest.raises(GenerationInputError, match="prefill_chunk_size=4 .*TinyMamba restarts its scan"):
        inputs.prefill(restarting, tokens, prompt, object(), {}, use_cache=True, chunk_size=4)
    assert restarting.calls == []
    inputs.prefill(restarting, tokens, prompt, object(), {}, use_cache=True)  # unchunked: the prompt in one forward
    assert [call["ids"].shape[1] for call in restarting.calls] == [prompt]
