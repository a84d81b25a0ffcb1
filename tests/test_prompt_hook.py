"""genplug_prepare_prompt: token healing runs through it when the config asks for it."""

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return genplug.load_model()


def test_token_healing_rewrites_the_prompt_once(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    enc = tokenizer(["Once upon a ti"], return_tensors="pt")
    plain = genplug.generate(model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=4)
    healed = genplug.generate(model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=4,
                              token_healing=True, tokenizer=tokenizer)
    prompt_len = enc["input_ids"].shape[1]
    assert torch.equal(plain[:, :prompt_len], enc["input_ids"])
    assert not torch.equal(healed[:, :prompt_len], enc["input_ids"])  # the tail token was re-chosen
    assert torch.equal(healed[0, 1:prompt_len - 1], enc["input_ids"][0, 1:-1])  # the rest is kept


def test_token_healing_without_tokenizer_is_refused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(GenerationConfigError, match="tokenizer="):
        genplug.generate(model, tokenizer(["Once"], return_tensors="pt")["input_ids"], max_new_tokens=2,
                         token_healing=True)
