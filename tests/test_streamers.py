"""Streamers against transformers' own: same token stream in, same text out (and across threads)."""

import asyncio
import queue
import threading
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genplug.streamers import (
    AsyncTextIteratorStreamer,
    BaseStreamer,
    BatchTextStreamer,
    TextIteratorStreamer,
    TextStreamer,
)

hf_streamers = pytest.importorskip("transformers.generation.streamers")

from helpers.transformers_version import transformers_at_least  # noqa: E402

# transformers 5.24 changed which text its streamers release when (letters, digits and spaces at once; a new
# line keeps the space that starts it). genplug follows 5.24, so an older transformers is no reference for
# the pieces: the cases below that compare with it are skipped there, and the oracle cases check the rule.
HF_STREAMS_LIKE_GENPLUG = transformers_at_least("5.24")
same_rule_as_transformers = pytest.mark.skipif(
    not HF_STREAMS_LIKE_GENPLUG,
    reason="transformers < 5.24 releases text by its older rule (letters waited for the next space, a new line "
           "lost its leading space); genplug follows 5.24's, which the oracle cases of this module check")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.\nA second line, with commas",
    "日本語のテキスト と 東京タワー 中文字符 混合 text",
    "café naïve über — “quotes” and emoji 🙂 too\n\n",
    "words   with  many    spaces\tand tabs",
]


def _byte_level():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=350, special_tokens=["<|end|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|end|>")


def _sentencepiece_like():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                  special_tokens=["<unk>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)])
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="</s>", unk_token="<unk>")


_TOKENIZERS = {}


def tokenizer(kind):
    pytest.importorskip("tokenizers")
    if kind not in _TOKENIZERS:
        _TOKENIZERS[kind] = {"byte_level": _byte_level, "sentencepiece": _sentencepiece_like}[kind]()
    return _TOKENIZERS[kind]


def recording(base):
    """A subclass of ``base`` that records what it releases instead of printing it."""

    class Recording(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.released = []

        def on_finalized_text(self, text, stream_end=False):
            self.released.append((text, stream_end))

    return Recording


@st.composite
def token_streams(draw, arbitrary_ids=True):
    """(kind, prompt ids, list of step tensors): steps are (1,) like the decode loop, or (1, k) like
    assisted decoding. Some arbitrary ids (special ones included) follow the text unless ``arbitrary_ids``
    is False."""
    kind = draw(st.sampled_from(["byte_level", "sentencepiece"]))
    tok = tokenizer(kind)
    text = " ".join(draw(st.lists(st.sampled_from(CORPUS), min_size=1, max_size=2)))
    start = draw(st.integers(0, len(text) - 1))
    ids = tok.encode(text[start:], add_special_tokens=False)
    if arbitrary_ids:
        ids += draw(st.lists(st.integers(0, len(tok) - 1), max_size=3))
    cut = draw(st.integers(1, max(1, len(ids) - 1)))
    prompt, rest = ids[:cut], ids[cut:]
    steps = []
    while rest:
        k = draw(st.sampled_from([1, 1, 1, 2, 3]))
        chunk, rest = rest[:k], rest[k:]
        steps.append(torch.tensor(chunk) if k == 1 else torch.tensor([chunk]))
    return kind, torch.tensor([prompt]), steps


def feed(streamer, prompt, steps, end=True):
    streamer.put(prompt)
    for step in steps:
        streamer.put(step)
    if end:
        streamer.end()


# ------------------------------------------------------------------------------ TextStreamer


@same_rule_as_transformers
@settings(max_examples=120, deadline=None)
@given(stream=token_streams(), skip_prompt=st.booleans(), skip_special_tokens=st.booleans())
def test_releases_the_same_text_as_transformers(stream, skip_prompt, skip_special_tokens):
    kind, prompt, steps = stream
    ours = recording(TextStreamer)(tokenizer(kind), skip_prompt=skip_prompt, skip_special_tokens=skip_special_tokens)
    theirs = recording(hf_streamers.TextStreamer)(tokenizer(kind), skip_prompt=skip_prompt,
                                                  skip_special_tokens=skip_special_tokens)
    for _ in range(2):  # a second generate() call with the same streamer starts afresh
        feed(ours, prompt, steps)
        feed(theirs, prompt, steps)
        assert ours.released == theirs.released


def test_prints_like_transformers(capsys):
    tok = tokenizer("byte_level")
    ids = tok.encode(CORPUS[0] + " " + CORPUS[1], add_special_tokens=False)
    prompt, steps = torch.tensor([ids[:3]]), [torch.tensor([i]) for i in ids[3:]]
    feed(hf_streamers.TextStreamer(tok), prompt, steps)
    theirs = capsys.readouterr().out
    feed(TextStreamer(tok), prompt, steps)
    assert capsys.readouterr().out == theirs
    assert theirs == CORPUS[0] + " " + CORPUS[1] + "\n"


def _released(streamer):
    return "".join(text for text, _ in streamer.released)


@settings(max_examples=120, deadline=None)
@given(stream=token_streams(arbitrary_ids=False))
def test_the_released_pieces_add_up_to_the_decoded_text(stream):
    """Oracle: the pieces, joined, are the text of all the tokens decoded at once -- also across new lines
    with a tokenizer that strips the leading space of what it decodes (before 5.24, transformers dropped
    the space that starts a line there)."""
    kind, prompt, steps = stream
    streamer = recording(TextStreamer)(tokenizer(kind))
    feed(streamer, prompt, steps)
    ids = prompt[0].tolist() + [i for step in steps for i in step.reshape(-1).tolist()]
    assert _released(streamer) == tokenizer(kind).decode(ids)


def test_a_new_line_keeps_the_space_that_starts_the_next():
    """The sentencepiece-like decoder strips the leading space of what it decodes: the streamer keeps the
    newline's token as context, so the space after the line break is released, as ``decode`` gives it."""
    tok = tokenizer("sentencepiece")
    ids = tok.encode("too\n\n words", add_special_tokens=False)
    streamer = recording(TextStreamer)(tok)
    feed(streamer, torch.tensor([ids[:1]]), [torch.tensor([i]) for i in ids[1:]])
    assert _released(streamer) == tok.decode(ids) == "too\n\n words"


@pytest.mark.parametrize("kind", ["byte_level", "sentencepiece"])
def test_letters_and_spaces_are_released_at_once(kind):
    """A word does not wait for the space after it: after every token, all the text so far is out."""
    tok = tokenizer(kind)
    ids = tok.encode("The quick brown fox jumps over the lazy dog", add_special_tokens=False)
    streamer = recording(TextStreamer)(tok)
    streamer.put(torch.tensor([ids[:1]]))
    for i in range(1, len(ids)):
        streamer.put(torch.tensor([ids[i]]))
        assert _released(streamer) == tok.decode(ids[:i + 1])


def test_a_symbol_waits_for_the_next_space():
    """A symbol may still change (the start of ``<br>``, half of a character), so it is held back until a
    space follows it."""
    tok = tokenizer("byte_level")
    ids = tok.encode("over the lazy dog.", add_special_tokens=False)
    streamer = recording(TextStreamer)(tok)
    feed(streamer, torch.tensor([ids[:1]]), [torch.tensor([i]) for i in ids[1:]], end=False)
    assert _released(streamer).startswith("over the lazy ") and "." not in _released(streamer)
    streamer.put(torch.tensor(tok.encode(" A", add_special_tokens=False)))
    assert _released(streamer).endswith("dog. ")
    streamer.end()
    assert _released(streamer) == "over the lazy dog. A"


@pytest.mark.parametrize("streamer_class", [TextStreamer, TextIteratorStreamer])
def test_a_batch_is_refused(streamer_class):
    tok = tokenizer("byte_level")
    with pytest.raises(ValueError, match="BatchTextStreamer"):
        streamer_class(tok).put(torch.zeros((2, 3), dtype=torch.long))


def test_base_streamer_is_abstract():
    with pytest.raises(NotImplementedError):
        BaseStreamer().put(torch.tensor([1]))
    with pytest.raises(NotImplementedError):
        BaseStreamer().end()


# ------------------------------------------------------------------------------ across threads


def _produce(streamer, prompt, steps, pause=0.0):
    def run():
        for value in [prompt, *steps]:
            streamer.put(value)
            if pause:
                time.sleep(pause)
        streamer.end()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@same_rule_as_transformers
@settings(max_examples=25, deadline=None)
@given(stream=token_streams(), skip_prompt=st.booleans())
def test_iterator_yields_what_transformers_yields(stream, skip_prompt):
    kind, prompt, steps = stream
    results = []
    for cls in (TextIteratorStreamer, hf_streamers.TextIteratorStreamer):
        streamer = cls(tokenizer(kind), skip_prompt=skip_prompt, timeout=10)
        thread = _produce(streamer, prompt, steps)
        results.append(list(streamer))
        thread.join()
    assert results[0] == results[1]


def test_iterator_with_a_slow_producer():
    tok = tokenizer("sentencepiece")
    ids = tok.encode(CORPUS[2], add_special_tokens=False)
    prompt, steps = torch.tensor([ids[:2]]), [torch.tensor([i]) for i in ids[2:]]
    streamer = TextIteratorStreamer(tok, timeout=10)
    thread = _produce(streamer, prompt, steps, pause=0.002)
    assert "".join(streamer) == tok.decode(ids)
    thread.join()


def test_iterator_timeout_raises_queue_empty():
    streamer = TextIteratorStreamer(tokenizer("byte_level"), timeout=0.05)
    with pytest.raises(queue.Empty):
        next(iter(streamer))


def _collect_async(cls, tok, prompt, steps, skip_prompt=False):
    async def main():
        streamer = cls(tok, skip_prompt=skip_prompt, timeout=10)
        thread = _produce(streamer, prompt, steps)
        chunks = [chunk async for chunk in streamer]
        thread.join()
        return chunks

    return asyncio.run(main())


@same_rule_as_transformers
@settings(max_examples=15, deadline=None)
@given(stream=token_streams(), skip_prompt=st.booleans())
def test_async_iterator_yields_what_transformers_yields(stream, skip_prompt):
    kind, prompt, steps = stream
    ours = _collect_async(AsyncTextIteratorStreamer, tokenizer(kind), prompt, steps, skip_prompt)
    theirs = _collect_async(hf_streamers.AsyncTextIteratorStreamer, tokenizer(kind), prompt, steps, skip_prompt)
    assert ours == theirs


def test_async_timeout_raises_timeout_error():
    async def main():
        streamer = AsyncTextIteratorStreamer(tokenizer("byte_level"), timeout=0.05)
        async for _ in streamer:
            pass

    with pytest.raises(TimeoutError):
        asyncio.run(main())


def test_async_streamer_needs_a_running_loop():
    with pytest.raises(RuntimeError, match="running event loop"):
        AsyncTextIteratorStreamer(tokenizer("byte_level"))


# ------------------------------------------------------------------------------ BatchTextStreamer


@settings(max_examples=40, deadline=None)
@given(data=st.data(), skip_prompt=st.booleans())
def test_batch_rows_match_one_transformers_streamer_per_row(data, skip_prompt):
    kind = data.draw(st.sampled_from(["byte_level", "sentencepiece"]))
    tok = tokenizer(kind)
    rows = data.draw(st.integers(2, 4))
    prompt_len, steps = data.draw(st.integers(1, 4)), data.draw(st.integers(0, 12))
    corpus_ids = tok.encode(" ".join(CORPUS), add_special_tokens=False)
    starts = data.draw(st.lists(st.integers(0, len(corpus_ids) - prompt_len - steps - 1),
                                min_size=rows, max_size=rows))
    ids = torch.tensor([corpus_ids[s: s + prompt_len + steps] for s in starts])
    finished_at = data.draw(st.lists(st.integers(prompt_len, prompt_len + steps), min_size=rows, max_size=rows))
    for row, at in enumerate(finished_at):  # rows that finished early get padding, as from the loop
        ids[row, at:] = tok.pad_token_id

    ours = BatchTextStreamer(tok, skip_prompt=skip_prompt, skip_special_tokens=True)
    feed(ours, ids[:, :prompt_len], list(ids[:, prompt_len:].T))
    for row in range(rows):
        # one row at a time, by transformers where it streams by the same rule, else by genplug's TextStreamer
        reference = hf_streamers.TextStreamer if HF_STREAMS_LIKE_GENPLUG else TextStreamer
        theirs = recording(reference)(tok, skip_prompt=skip_prompt, skip_special_tokens=True)
        feed(theirs, ids[row: row + 1, :prompt_len], list(ids[row, prompt_len:].split(1)))
        assert ours.texts[row] == "".join(text for text, _ in theirs.released)


def test_batch_streamer_hook_gets_one_text_per_row():
    tok = tokenizer("byte_level")
    calls = []

    class Forwarding(BatchTextStreamer):
        def on_finalized_text(self, texts, stream_end=False):
            calls.append((list(texts), stream_end))

    a, b = (tok.encode(t, add_special_tokens=False)[:4] for t in ("one two three four", "five six seven eight"))
    ids = torch.tensor([a, b])
    streamer = Forwarding(tok)
    feed(streamer, ids[:, :1], [ids[:, 1], ids[:, 2:]])  # (B,) and (B, k) steps
    assert [len(texts) for texts, _ in calls] == [2, 2, 2, 2]
    assert [end for _, end in calls] == [False, False, False, True]
    assert ["".join(texts[row] for texts, _ in calls) for row in range(2)] == [tok.decode(a), tok.decode(b)]


def test_batch_streamer_refuses_a_changing_batch():
    streamer = BatchTextStreamer(tokenizer("byte_level"))
    streamer.put(torch.zeros((2, 3), dtype=torch.long))
    with pytest.raises(ValueError, match="2 rows but got tokens for 3"):
        streamer.put(torch.zeros(3, dtype=torch.long))
