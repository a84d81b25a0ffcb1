"""heal_tokens with a small in-test tokenizer and a scripted generate function."""

import pytest
import torch

from genplug.errors import GenerationConfigError
from genplug.plugins.processors.token_healing import TokenExtensions, heal_tokens

VOCAB = ["<pad>", "<s>", " ", "go", "to", "h", "t", "p", "s", "ht", "htt", "http", "https", "http:", "x"]
PAD, BOS = 0, 1


class GreedyTokenizer:
    """Longest-match tokenisation over VOCAB, left padding: the protocol heal_tokens uses."""

    pad_token_id, bos_token_id = PAD, BOS

    def get_vocab(self):
        return {token: i for i, token in enumerate(VOCAB)}

    def convert_ids_to_tokens(self, token_id):
        return VOCAB[token_id]

    def encode(self, text):
        ids = [BOS]
        while text:
            token = max((t for t in VOCAB[2:] if text.startswith(t)), key=len)
            ids.append(VOCAB.index(token))
            text = text[len(token):]
        return ids

    def batch_decode(self, rows, skip_special_tokens=True):
        return ["".join(VOCAB[i] for i in row.tolist() if i > BOS) for row in rows]

    def __call__(self, texts, return_tensors="pt", padding=True):
        rows = [self.encode(t) for t in texts]
        width = max(map(len, rows))

        class Encoded:
            input_ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])

        return Encoded()


class ScriptedModel:
    """Picks argmax(preference + sequence bias): 'https' is slightly preferred by the 'model'."""

    def __init__(self):
        self.calls = []

    def generate(self, ids, max_new_tokens, pad_token_id, sequence_bias, token_healing):
        self.calls.append((ids.tolist(), dict(sequence_bias), token_healing))
        scores = torch.zeros(len(VOCAB))
        scores[VOCAB.index("https")] = 2.0
        for (token,), bias in sequence_bias.items():
            scores[token] += bias
        return torch.cat([ids, scores.argmax().view(1, 1)], dim=1)


def _ids(*texts):
    return GreedyTokenizer()([*texts]).input_ids


def test_the_tail_is_regenerated_among_the_tokens_that_extend_it():
    model = ScriptedModel()
    healed = heal_tokens(model, _ids("go to http"), GreedyTokenizer())
    assert VOCAB[int(healed[0, -1])] == "https"
    (prompt, bias, token_healing), = model.calls
    assert token_healing is False
    assert {VOCAB[t]: b for (t,), b in bias.items()} == {"http": 11.0, "https": 10.0, "http:": 10.0}
    assert [VOCAB[i] for i in prompt[0] if i != PAD] == ["go", " ", "to", " "]


def test_a_tail_nothing_extends_is_left_alone():
    model = ScriptedModel()
    ids = _ids("go to x")
    assert torch.equal(heal_tokens(model, ids, GreedyTokenizer()), torch.where(ids == BOS, PAD, ids))
    assert model.calls == []


def test_the_original_token_wins_ties_with_its_extensions():
    class Flat(ScriptedModel):
        def generate(self, ids, **kwargs):
            scores = torch.zeros(len(VOCAB))
            for (token,), bias in kwargs["sequence_bias"].items():
                scores[token] += bias
            return torch.cat([ids, scores.argmax().view(1, 1)], dim=1)

    healed = heal_tokens(Flat(), _ids("go ht"), GreedyTokenizer())
    assert VOCAB[int(healed[0, -1])] == "ht"


def test_a_tokenizer_is_required_and_needs_a_pad_token():
    with pytest.raises(GenerationConfigError, match="tokenizer="):
        heal_tokens(ScriptedModel(), _ids("go"), None)
    no_pad = GreedyTokenizer()
    no_pad.pad_token_id = None
    with pytest.raises(GenerationConfigError, match="pad token"):
        heal_tokens(ScriptedModel(), _ids("go"), no_pad)


def test_extensions_are_prefix_matches():
    extensions = TokenExtensions({"ab": 0, "abc": 1, "abd": 2, "b": 3, "aa": 4})
    assert sorted(extensions.ids_starting_with("ab")) == [0, 1, 2]
    assert extensions.ids_starting_with("c") == []
