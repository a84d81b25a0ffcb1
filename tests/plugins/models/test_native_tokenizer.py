"""The native tokenizer wrapper against transformers' tokenizer on the same files, plus its own properties."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genplug.plugins.models.llama.errors import CheckpointError
from genplug.plugins.models.llama.tokenizer import NativeTokenizer
from native_llama_fixtures import DEFAULT_MODEL_DIR

TEXTS = ["Once upon a time, there was a little cat.", "Hi", "", "\"Thank you, Lily!\" said Tom. The end.",
         "Ünïcode and émoji 🙂 bytes"]


@pytest.fixture(scope="module")
def tokenizer():
    return NativeTokenizer.from_pretrained(DEFAULT_MODEL_DIR)


@pytest.mark.parity
def test_matches_transformers(tokenizer):
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "bos_token", "eos_token", "pad_token",
                 "vocab_size", "padding_side"):
        assert getattr(tokenizer, name) == getattr(reference, name), name
    assert len(tokenizer) == len(reference) and tokenizer.get_vocab() == reference.get_vocab()
    assert sorted(tokenizer.all_special_ids) == sorted(reference.all_special_ids)
    batch, expected = tokenizer(TEXTS, return_tensors="pt"), reference(TEXTS, return_tensors="pt", padding=True)
    assert torch.equal(batch.input_ids, expected["input_ids"])
    assert torch.equal(batch["attention_mask"], expected["attention_mask"])
    for text in TEXTS:
        ids = reference.encode(text)
        assert tokenizer.encode(text) == ids
        assert tokenizer.encode(text, add_special_tokens=False) == reference.encode(text, add_special_tokens=False)
        assert tokenizer.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert tokenizer.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)
    assert tokenizer.batch_decode(batch.input_ids, skip_special_tokens=True) == reference.batch_decode(
        expected["input_ids"], skip_special_tokens=True)
    single = tokenizer("Once upon a time")
    assert single["input_ids"] == reference("Once upon a time")["input_ids"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=4))
def test_left_padding_keeps_each_row(tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt")
    for row, mask, text in zip(batch.input_ids, batch.attention_mask, texts):
        ids = tokenizer.encode(text)
        assert row[mask.bool()].tolist() == ids
        assert mask.tolist() == [0] * (len(row) - len(ids)) + [1] * len(ids)
        assert set(row[~mask.bool()].tolist()) <= {tokenizer.pad_token_id}
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_right_padding_and_plain_lists(tokenizer):
    tokenizer_right = NativeTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    tokenizer_right.padding_side = "right"
    batch = tokenizer_right(["a b c d", "a"], return_tensors="pt")
    assert batch.attention_mask.tolist()[1][:2] == [1, 1] and batch.attention_mask[1, -1] == 0
    lists = tokenizer(["a b c d", "a"], padding=False)
    assert [len(r) for r in lists.input_ids] == [len(tokenizer.encode("a b c d")), len(tokenizer.encode("a"))]
    with pytest.raises(ValueError, match="padding=True"):
        tokenizer(["a b c d", "a"], padding=False, return_tensors="pt")
    assert tokenizer.decode(torch.tensor(tokenizer.encode("a b"))) == "<s>a b"
    assert tokenizer.convert_ids_to_tokens(tokenizer.bos_token_id) == "<s>"
    assert tokenizer.convert_tokens_to_ids(["<s>", "</s>"]) == [tokenizer.bos_token_id, tokenizer.eos_token_id]


def test_special_tokens_fall_back_to_config_ids(tmp_path):
    directory = tmp_path / "tok"
    shutil.copytree(DEFAULT_MODEL_DIR, directory)
    (directory / "tokenizer_config.json").unlink()
    (directory / "special_tokens_map.json").unlink()
    tokenizer = NativeTokenizer.from_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    assert tokenizer.eos_token_id == config["eos_token_id"] and tokenizer.pad_token_id == config["pad_token_id"]


def test_without_pad_token_padding_asks_for_one(tmp_path):
    directory = tmp_path / "tok"
    directory.mkdir()
    shutil.copy(f"{DEFAULT_MODEL_DIR}/tokenizer.json", directory)
    tokenizer = NativeTokenizer.from_pretrained(directory)
    assert tokenizer.pad_token_id is None
    with pytest.raises(ValueError, match="tokenizer.pad_token = tokenizer.eos_token"):
        tokenizer(["a b", "a"], return_tensors="pt")
    tokenizer.pad_token = "</s>"
    assert tokenizer(["a b", "a"], return_tensors="pt").input_ids[1, 0] == tokenizer.convert_tokens_to_ids("</s>")


def test_missing_or_broken_tokenizer_file(tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer.json does not exist"):
        NativeTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a valid tokenizers file"):
        NativeTokenizer.from_pretrained(tmp_path)


def test_save_pretrained_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    again = NativeTokenizer.from_pretrained(tmp_path)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert (again.bos_token, again.eos_token, again.pad_token) == (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token)
    assert again.encode(TEXTS[0]) == tokenizer.encode(TEXTS[0])
