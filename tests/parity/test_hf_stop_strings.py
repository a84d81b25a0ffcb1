"""Stop strings with a real transformers tokenizer, built here with the ``tokenizers`` library.

The vocabulary mixes single letters, letter pairs and SentencePiece-style ``▁``-prefixed pieces, so a
stop string can end inside a token, span several tokens, or start with a space marker -- the cases
where matching on token text is easy to get wrong. Each stop string is taken from what the model
actually generates, so the cases really stop.
"""

import functools

import pytest
import torch

import genplug
from parity_tools import VOCAB, assert_same, left_padded, run_both, tiny_model


@functools.lru_cache(maxsize=None)
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz"
    common = "etaoinshr"
    space = "\u2581"
    pairs = [(a, b) for a in common for b in common]
    pieces = ["<pad>", "<s>", "</s>", "<unk>", space, *letters, *(a + b for a, b in pairs)]
    spaced = [(space, c) for c in letters[: VOCAB - len(pieces)]]
    pieces += [a + b for a, b in spaced]
    assert len(pieces) == VOCAB
    backend = Tokenizer(models.BPE({piece: i for i, piece in enumerate(pieces)}, pairs + spaced, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def _generated_text(model, ids, mask, row):
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=None)
    return out[row, ids.shape[1]:]


def _spanning_stop_string(tokens):
    """Three characters of the generated text from its middle: longer than any token, so the match
    spans tokens and usually ends inside one."""
    text = tokenizer().decode(tokens)
    for start in range(len(text) // 3, len(text) - 3):
        if " " not in text[start:start + 3]:
            return text[start:start + 3]
    raise AssertionError(f"no stop string found in {text!r}")


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_stop_string_spanning_tokens(name):
    model = tiny_model(name)
    ids, mask = left_padded(batch=3, length=6, pads=(2, 0, 1))
    stop = _spanning_stop_string(_generated_text(model, ids, mask, row=1))
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                            stop_strings=stop, tokenizer=tokenizer(), pad_token_id=0, return_dict_in_generate=True,
                            output_scores=True)
    assert_same(ours, theirs)
    row = ours.sequences[1]
    text = tokenizer().decode(row[row != 0])  # the stop string may begin in the prompt
    assert len(row) < ids.shape[1] + 10 or (row[ids.shape[1]:] == 0).any(), "the case must stop a row"
    assert stop in text.replace(" ", "")


def test_several_stop_strings_with_sampling():
    model = tiny_model("llama")
    ids, mask = left_padded(batch=3, length=6, pads=(0, 1, 3))
    stops = ["e", "ta", "\u2581q", "oo"]
    for seed in (0, 1, 2):
        ours, theirs = run_both(model, seed=seed, input_ids=ids, attention_mask=mask, max_new_tokens=12,
                                do_sample=True, top_k=0, stop_strings=stops, tokenizer=tokenizer(), pad_token_id=0)
        assert_same(ours, theirs)


def test_rows_stopped_by_a_stop_string_alone_keep_their_tokens():
    # transformers pads finished rows only when an EOS criterion exists (Appendix B, quirk 3); without
    # one, a row that met its stop string keeps generating until every row is done. genplug matches.
    model = tiny_model("llama")
    ids, mask = left_padded(batch=3, length=6, pads=(2, 0, 1))
    stop = _spanning_stop_string(_generated_text(model, ids, mask, row=0))
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                            stop_strings=stop, tokenizer=tokenizer(), eos_token_id=None, pad_token_id=0)
    assert_same(ours, theirs)


def test_stop_strings_without_a_tokenizer_are_refused_by_both():
    model = tiny_model("llama")
    ids, mask = left_padded(batch=1, length=4, pads=(0,))
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate(input_ids=ids, max_new_tokens=2, stop_strings="ab")
    with pytest.raises(ValueError, match="tokenizer"):
        genplug.generate(model, input_ids=ids, max_new_tokens=2, stop_strings="ab")


def test_the_tokenizer_round_trips():
    tok = tokenizer()
    ids = tok("\u2581at he", return_tensors="pt")["input_ids"]
    assert ids.dtype == torch.long and ids.shape[0] == 1
