"""Assisted decoding with a draft model that has its own tokenizer (universal assisted decoding).

Oracle: greedy verification makes the output plain greedy search's, whatever the draft proposes; here
the target is the embedded story model (its BPE tokenizer) and the draft a random character-level
model, so candidates are mostly wrong and sometimes right."""

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models as tokenizer_models, pre_tokenizers

import genplug
from genplug.errors import GenerationInputError
from genplug.plugins.models.llama.config import NativeLlamaConfig
from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM

CHARACTERS = list(" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'\"-0123456789\n")


class CharacterTokenizer:
    """One token per character, <eos> = 1: a vocabulary nothing like the target's."""

    eos_token_id = 1

    def __init__(self):
        vocab = {token: i for i, token in enumerate(["<unk>", "<eos>", *CHARACTERS])}
        self.backend = Tokenizer(tokenizer_models.WordLevel(vocab, unk_token="<unk>"))
        self.backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        self.backend.decoder = decoders.Fuse()
        self.vocab_size = len(vocab)

    def __call__(self, text, add_special_tokens=True, return_tensors=None):
        return {"input_ids": torch.tensor([self.backend.encode(text).ids])}

    def decode(self, ids, skip_special_tokens=False):
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)


@pytest.fixture(scope="module")
def models():
    target, tokenizer = genplug.load_model()
    characters = CharacterTokenizer()
    torch.manual_seed(0)
    draft = NativeLlamaForCausalLM(NativeLlamaConfig(
        vocab_size=characters.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8)).eval()
    return target, tokenizer, draft, characters


@pytest.mark.parametrize("num_tokens", [1, 4, 12])
def test_greedy_with_a_draft_of_another_vocabulary_is_greedy(models, num_tokens):
    target, tokenizer, draft, characters = models
    ids = tokenizer(["Once upon a time there was a"], return_tensors="pt")["input_ids"]
    plain = genplug.generate(target, ids, max_new_tokens=20)
    assisted = genplug.generate(target, ids, max_new_tokens=20, assistant_model=draft, tokenizer=tokenizer,
                                assistant_tokenizer=characters, num_assistant_tokens=num_tokens)
    assert torch.equal(assisted, plain)


def test_the_draft_proposes_the_target_text_when_it_knows_it(models, monkeypatch):
    """Candidates are the draft's new text in the target's tokens: a draft that spells the target's own
    continuation gets whole rounds accepted."""
    from genplug.plugins.strategies import candidates as module

    target, tokenizer, draft, characters = models
    ids = tokenizer(["Once upon a time"], return_tensors="pt")["input_ids"]
    plain = genplug.generate(target, ids, max_new_tokens=12)
    continuation = tokenizer.decode(plain[0].tolist(), skip_special_tokens=True)
    proposals = []
    original = module.OtherTokenizerDraftCandidates.candidates

    def spy(self, tokens):
        out = original(self, tokens)
        proposals.append(out[0].shape[1])
        return out

    monkeypatch.setattr(module.OtherTokenizerDraftCandidates, "candidates", spy)

    def oracle_step(self, ids, start):  # a draft whose next character is always the target's
        text = characters.decode(ids[0].tolist())
        logits = torch.full((1, characters.vocab_size), -10.0)
        following = continuation[len(text):len(text) + 1] if continuation.startswith(text) else ""
        logits[0, characters(following)["input_ids"][0, 0] if following else 1] = 10.0
        return logits

    monkeypatch.setattr(module.OtherTokenizerDraftCandidates, "_step", oracle_step)
    out = genplug.generate(target, ids, max_new_tokens=12, assistant_model=draft, tokenizer=tokenizer,
                           assistant_tokenizer=characters, num_assistant_tokens=10, return_dict_in_generate=True,
                           output_scores=True)
    assert torch.equal(out.sequences, plain)
    assert len(proposals) < 12 and max(proposals) > 1  # fewer target forwards than tokens


def test_sampling_with_another_vocabulary_keeps_to_the_limits(models):
    target, tokenizer, draft, characters = models
    ids = tokenizer(["The dog"], return_tensors="pt")["input_ids"]
    torch.manual_seed(0)
    out = genplug.generate(target, ids, max_new_tokens=15, min_new_tokens=15, do_sample=True, assistant_model=draft,
                           tokenizer=tokenizer, assistant_tokenizer=characters)
    assert out.shape == (1, ids.shape[1] + 15)


def test_one_tokenizer_alone_is_refused(models):
    target, tokenizer, draft, characters = models
    ids = tokenizer(["The dog"], return_tensors="pt")["input_ids"]
    with pytest.raises(GenerationInputError, match="vocabulary"):
        genplug.generate(target, ids, max_new_tokens=3, assistant_model=draft)
