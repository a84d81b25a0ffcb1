"""Small tokenizers trained in-process (no downloads), one per stop-string matching unit."""

import pytest

CORPUS = [
    "the stop sign stopped the stopper at last",
    "last topper, stops! stop. Stop stopping",
    "abcdef hello world\nnew line\n\nUser: hi",
    "état café naïve über 日本語 東京 end",
    "the end. The End? the ending",
] * 30


def _train(model, pre_tokenizer, decoder, vocab_size, special_tokens, initial_alphabet=()):
    from tokenizers import Tokenizer, trainers

    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoder
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=list(initial_alphabet), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def byte_level_tokenizer():
    """GPT-2 style: byte-level BPE, matched in UTF-8 bytes (tokens can hold half a character)."""
    from tokenizers import decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = _train(models.BPE(), pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel(), 400,
                 ["<|end|>"], pre_tokenizers.ByteLevel.alphabet())
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|end|>")


def byte_fallback_tokenizer():
    """SentencePiece / Llama style: '▁' word marks and <0xNN> byte tokens, matched in bytes."""
    from tokenizers import decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = _train(
        models.BPE(byte_fallback=True, unk_token="<unk>"),
        pre_tokenizers.Metaspace(),
        decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                           decoders.Strip(" ", 1, 0)]),
        330,
        ["<unk>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")


def character_tokenizer():
    """A Metaspace decoder with no byte tokens: matched in Unicode characters."""
    from tokenizers import decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = _train(models.BPE(unk_token="<unk>"), pre_tokenizers.Metaspace(), decoders.Metaspace(), 200, ["<unk>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


TOKENIZER_KINDS = {
    "byte_level": byte_level_tokenizer,
    "byte_fallback": byte_fallback_tokenizer,
    "characters": character_tokenizer,
}
_BUILT = {}


def get_tokenizer(kind):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    if kind not in _BUILT:
        _BUILT[kind] = TOKENIZER_KINDS[kind]()
    return _BUILT[kind]


@pytest.fixture(scope="session", params=sorted(TOKENIZER_KINDS))
def any_tokenizer(request):
    return get_tokenizer(request.param)


@pytest.fixture(scope="session")
def byte_level():
    return get_tokenizer("byte_level")
