"""Property: batched assisted greedy search returns plain batched greedy search's tokens, for any batch.

Random batches (sizes, prompt lengths, left padding, an EOS rows meet at different steps, repetitive or
random prompts) on a tiny pure-torch model, with prompt lookup or a second tiny model as the draft: the
candidates only change how many forwards it takes, never the tokens.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genplug
from helpers.tiny_lm import TinyCausalLM

TARGET = TinyCausalLM(seed=0)
DRAFT = TinyCausalLM(seed=1, layers=1)


@st.composite
def batches(draw):
    rows = draw(st.integers(1, 4))
    length = draw(st.integers(2, 8))
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 64, (rows, length), generator=g)
    if draw(st.booleans()):  # repeat each row, so prompt lookup finds n-grams
        ids = torch.cat((ids, ids), dim=1)
    mask = torch.ones_like(ids)
    for row in range(rows):
        pad = draw(st.integers(0, ids.shape[1] - 1))
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


@settings(max_examples=40, deadline=None)
@given(batches(), st.sampled_from(["lookup", "draft"]), st.integers(1, 5), st.booleans())
def test_batched_assisted_greedy_is_plain_greedy(batch, how, candidates, with_eos):
    ids, mask = batch
    common = dict(attention_mask=mask, max_new_tokens=10, pad_token_id=0)
    if with_eos:  # a token some row emits early
        common["eos_token_id"] = int(genplug.generate(TARGET, ids, **common)[-1, ids.shape[1] + 2])
    plain = genplug.generate(TARGET, ids, **common)
    assist = (dict(prompt_lookup_num_tokens=candidates) if how == "lookup"
              else dict(assistant_model=DRAFT, num_assistant_tokens=candidates))
    assisted = genplug.generate(TARGET, ids, **common, **assist)
    assert assisted.shape == plain.shape and torch.equal(assisted, plain)
