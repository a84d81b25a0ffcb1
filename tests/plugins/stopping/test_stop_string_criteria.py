"""StopStringCriteria: parity with transformers 5.23, hand-worked cases, a string-search oracle, caching."""

import time
import types
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genplug.errors import GenerationConfigError
from genplug.plugins.stopping.stop_strings import StopStringCriteria, build_stop_strings

pytest.importorskip("transformers")
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402
from transformers.generation.stopping_criteria import StopStringCriteria as HFStopStringCriteria  # noqa: E402

CORPUS_TEXT = " ".join([
    "the stop sign stopped the stopper at last",
    "last topper, stops! stop. Stop stopping",
    "abcdef hello world\nnew line\n\nUser: hi",
    "état café naïve über 日本語 東京 end",
    "the end. The End? the ending",
])

BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def byte_level_spelling(text):
    return "".join(BYTE_TO_CHAR[b] for b in text.encode("utf-8"))


@pytest.fixture(scope="session")
def handmade():
    """A byte-level vocabulary chosen by hand: the 256 byte tokens plus the pieces used below."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["st", "op", "stop", "opera", "sto", "pper", "las", "topper", "to", "pped", "at", "tion", " stop",
              "ca", "fé", "é", "\n", "\n\n", "User", ":", "aaaa", "aa"]
    vocab = {BYTE_TO_CHAR[b]: b for b in range(256)}
    for piece in pieces:
        vocab.setdefault(byte_level_spelling(piece), len(vocab))
    model = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=model)


def ids(tokenizer, *pieces):
    """One row of ids spelling ``pieces``, each piece being exactly one token."""
    vocab = tokenizer.get_vocab()
    return torch.tensor([[vocab[byte_level_spelling(p)] for p in pieces]])


# ------------------------------------------------------------------------------ hand-worked cases

# From the definition: the stop string must be in the decoded text and overlap the newest token.
@pytest.mark.parametrize("pieces, expected", [
    (["st", "op"], True),
    (["stop"], True),
    (["st", "opera"], True),  # the newest token runs past the end of the string
    (["sto", "pper"], True),
    (["las", "topper"], True),  # the earliest token starts before the string
    (["s", "to", "pped"], True),  # three tokens
    (["stop", "at"], False),  # the string is complete before the newest token
    (["st", "op", "at"], False),
    (["st", "opera", "tion"], False),
    (["op"], False),
    (["s", "t", "o", "p"], True),  # one token per character: the longest walk the window allows
    (["x", "s", "t", "o", "p"], True),
    (["s", "t", "o", "q"], False),
])
def test_definition_examples(handmade, pieces, expected):
    criterion = StopStringCriteria(handmade, ["stop"])
    assert criterion(ids(handmade, *pieces), None).tolist() == [expected]


@pytest.mark.parametrize("stop, pieces, expected", [
    ("per", ["topper"], True),  # a suffix of the newest token
    ("per", ["topper", "at"], False),
    ("p", ["to", "pped"], True),  # single-character strings
    ("p", ["pped", "at"], False),
    ("é", ["ca", "fé"], True),  # two bytes at the end of a token
    ("café", ["ca", "fé"], True),
    ("\n\n", ["\n", "\n"], True),
    ("\n\n", ["\n\n"], True),
    ("User:", ["\n\n", "User", ":"], True),
    ("aaa", ["aa", "aa"], True),  # several end overlaps of one token
])
def test_suffixes_single_characters_and_bytes(handmade, stop, pieces, expected):
    assert StopStringCriteria(handmade, stop)(ids(handmade, *pieces), None).tolist() == [expected]


def test_rows_are_independent_and_any_string_stops(handmade):
    criterion = StopStringCriteria(handmade, ["stop", "café"])
    rows = [ids(handmade, "at", "st", "op"), ids(handmade, "st", "op", "at"), ids(handmade, "at", "ca", "fé")]
    batch = torch.cat(rows)
    assert criterion(batch, None).tolist() == [True, False, True]
    assert criterion(batch, None).dtype == torch.bool


def test_ids_outside_the_vocabulary_match_nothing(handmade):
    criterion = StopStringCriteria(handmade, ["stop"])
    size = len(handmade.get_vocab())
    batch = torch.tensor([[size + 5, 10_000_000], [-1, -7]])
    assert criterion(batch, None).tolist() == [False, False]
    stop = ids(handmade, "stop")[0, 0]
    assert criterion(torch.tensor([[size + 5, stop]]), None).tolist() == [True]


def test_sequences_shorter_than_the_window(handmade):
    criterion = StopStringCriteria(handmade, ["stop", "a long stop string"])
    assert criterion(ids(handmade, "stop"), None).tolist() == [True]
    assert criterion(ids(handmade, "to", "p"), None).tolist() == [False]


# ------------------------------------------------------------------------------ parity with transformers

def _stop_strings():
    start = st.integers(0, len(CORPUS_TEXT) - 1)
    length = st.integers(1, 7)
    return st.lists(st.tuples(start, length).map(lambda sl: CORPUS_TEXT[sl[0]: sl[0] + sl[1]]).filter(bool),
                    min_size=1, max_size=3, unique=True)


def _rows(draw, tokenizer, strings, batch):
    """Rows mixing random ids with encodings of corpus text that ends at or just after a stop string."""
    vocab_size = len(tokenizer.get_vocab())
    rows = []
    for _ in range(batch):
        if draw(st.booleans()):
            row = draw(st.lists(st.integers(0, vocab_size + 1), min_size=1, max_size=8))
        else:
            stop = draw(st.sampled_from(strings))
            at = CORPUS_TEXT.find(stop)
            before = draw(st.integers(0, 6))
            after = draw(st.integers(0, 2))
            text = CORPUS_TEXT[max(0, at - before): at + len(stop) + after] if at >= 0 else stop
            row = tokenizer.encode(text, add_special_tokens=False) or [0]
            row = draw(st.lists(st.integers(0, vocab_size - 1), max_size=2)) + row
        rows.append(row)
    width = max(len(r) for r in rows)
    filler = draw(st.integers(0, vocab_size - 1))
    return torch.tensor([[filler] * (width - len(r)) + r for r in rows])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_matches_transformers(any_tokenizer, data):
    strings = data.draw(_stop_strings())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theirs = HFStopStringCriteria(any_tokenizer, strings)
        except ValueError:  # no token can end any of the strings: ours refuses them too
            with pytest.raises(ValueError):
                StopStringCriteria(any_tokenizer, strings)
            return
        ours = StopStringCriteria(any_tokenizer, strings)
    batch = _rows(data.draw, any_tokenizer, strings, data.draw(st.integers(1, 4)))
    assert ours(batch, None).tolist() == theirs(batch, None).tolist()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_buffer_form_answers_as_the_prefix_does(any_tokenizer, data):
    """at_column(buffer, c) -- what the CUDA-graph decode loop captures -- equals the criterion called on
    buffer[:, :c + 1] for every column c, the first ones (fewer tokens than the window) included, whatever
    fills the buffer after c; and transformers' answer on that prefix (an independent oracle)."""
    strings = data.draw(_stop_strings())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theirs = HFStopStringCriteria(any_tokenizer, strings)
        except ValueError:
            return
        ours = StopStringCriteria(any_tokenizer, strings)
    batch = _rows(data.draw, any_tokenizer, strings, data.draw(st.integers(1, 3)))
    tail = torch.randint(0, any_tokenizer.vocab_size, (batch.shape[0], data.draw(st.integers(0, 5))),
                         generator=torch.Generator().manual_seed(data.draw(st.integers(0, 2**16))))
    buffer = torch.cat((batch, tail), dim=1)
    for column in range(batch.shape[1]):
        expected = ours(batch[:, :column + 1], None)
        assert torch.equal(ours.at_column(buffer, torch.tensor(column)), expected), column
        assert expected.tolist() == theirs(batch[:, :column + 1], None).tolist(), column


def test_the_buffer_form_finds_stops_and_keys_graphs_by_strings_and_tables(any_tokenizer):
    """A seeded case where the buffer form does find stops (so the property above is not vacuous), and the
    graph key: equal for the same strings over the same tokenizer, different for other strings."""
    strings = ["stop", "\n\n", "s"]
    ours = StopStringCriteria(any_tokenizer, strings)
    encoded = torch.tensor(any_tokenizer.encode(CORPUS_TEXT, add_special_tokens=False))[None, :40]
    found = [bool(ours.at_column(encoded, torch.tensor(c))) for c in range(encoded.shape[1])]
    assert found == [bool(ours(encoded[:, :c + 1], None)) for c in range(encoded.shape[1])] and any(found)
    assert StopStringCriteria(any_tokenizer, strings).graph_key() == ours.graph_key()
    assert StopStringCriteria(any_tokenizer, ["stop"]).graph_key() != ours.graph_key()


def test_parity_sweep_finds_many_stops(any_tokenizer):
    """A seeded sweep whose count of positives shows the parity test is not vacuous."""
    generator = torch.Generator().manual_seed(0)
    strings = ["stop", "op", "é", "\n\n", "the end", "s", "日本"]
    theirs = HFStopStringCriteria(any_tokenizer, strings)
    ours = StopStringCriteria(any_tokenizer, strings)
    encoded = torch.tensor(any_tokenizer.encode(CORPUS_TEXT, add_special_tokens=False))
    positives = 0
    for length in range(1, 9):
        starts = torch.randint(0, len(encoded) - length, (64,), generator=generator)
        batch = encoded[starts[:, None] + torch.arange(length)]
        expected = theirs(batch, None)
        assert torch.equal(ours(batch, None), expected)
        positives += int(expected.sum())
    assert positives > 50


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_byte_level_agrees_with_a_plain_string_search(byte_level, data):
    """Oracle without transformers' algorithm: a stop string is found iff it occurs in the decoded
    bytes of the row and its occurrence ends inside the newest token."""
    strings = data.draw(_stop_strings())
    vocab = byte_level.get_vocab()
    spelled = {i: bytes(CHAR_TO_BYTE[c] for c in s) for s, i in vocab.items()}
    row = data.draw(st.lists(st.sampled_from(sorted(spelled)), min_size=1, max_size=10))
    if data.draw(st.booleans()):
        row = row + byte_level.encode(data.draw(st.sampled_from(strings)), add_special_tokens=False)
        row = row + data.draw(st.lists(st.sampled_from(sorted(spelled)), max_size=1))
    pieces = [spelled[i] for i in row]
    text = b"".join(pieces)
    newest_starts_at = len(text) - len(pieces[-1])

    def found(stop: bytes) -> bool:
        at = text.find(stop)
        while at >= 0:
            if at + len(stop) > newest_starts_at:
                return True
            at = text.find(stop, at + 1)
        return False

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        criterion = StopStringCriteria(byte_level, strings)
    expected = any(found(s.encode("utf-8")) for s in strings)
    assert criterion(torch.tensor([row]), None).tolist() == [expected]


# ------------------------------------------------------------------------------ construction

def test_tables_are_cached_per_tokenizer_and_strings(byte_level):
    first = StopStringCriteria(byte_level, ["stop", "end"])
    again = StopStringCriteria(byte_level, ["stop", "end"])
    other = StopStringCriteria(byte_level, ["stop"])
    assert again._tables is first._tables
    assert other._tables is not first._tables


def test_tokens_added_later_are_seen():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {BYTE_TO_CHAR[b]: b for b in range(256)}
    model = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model)
    StopStringCriteria(tokenizer, ["zq"])
    tokenizer.add_tokens(["zqx"])
    new_id = tokenizer.convert_tokens_to_ids("zqx")
    assert StopStringCriteria(tokenizer, ["zq"])(torch.tensor([[new_id]]), None).tolist() == [True]


@pytest.mark.parametrize("bad", ["", ["stop", ""], [], None, [3]])
def test_bad_stop_strings_are_refused(handmade, bad):
    with pytest.raises(ValueError, match="stop_strings"):
        StopStringCriteria(handmade, bad)


def test_unmatchable_strings_among_others_warn():
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    model = Tokenizer(models.WordLevel(vocab={"a": 0, "b": 1, "abcdef": 2, "<unk>": 3}, unk_token="<unk>"))
    model.decoder = decoders.Metaspace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>")
    with pytest.warns(UserWarning, match="can never be matched"):
        criterion = StopStringCriteria(tokenizer, ["ab", "zz"])
    assert criterion(torch.tensor([[0, 1], [1, 0]]), None).tolist() == [True, False]
    with pytest.raises(ValueError, match="could never be matched"):
        StopStringCriteria(tokenizer, ["zz"])


@pytest.mark.slow
def test_a_new_set_of_strings_builds_much_faster_than_transformers():
    """transformers spends seconds per new stop-string set on large vocabularies (PR #40520)."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyzĠĊ"
    vocab = {BYTE_TO_CHAR[b]: b for b in range(256)}
    while len(vocab) < 50_000:
        vocab.setdefault("".join(rng.choice(letters) for _ in range(rng.randint(2, 10))), len(vocab))
    model = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model)

    started = time.perf_counter()
    StopStringCriteria(tokenizer, ["warm"])  # first use: also reads the vocabulary
    ours_first = time.perf_counter() - started
    started = time.perf_counter()
    ours = StopStringCriteria(tokenizer, ["\n\nUser:", "the end of it"])
    ours_new_set = time.perf_counter() - started
    started = time.perf_counter()
    theirs = HFStopStringCriteria(tokenizer, ["\n\nUser:", "the end of it"])
    theirs_new_set = time.perf_counter() - started
    assert ours_new_set * 5 < theirs_new_set
    assert ours_first < theirs_new_set
    batch = torch.randint(0, len(vocab), (8, 30), generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours(batch, None), theirs(batch, None))


# ------------------------------------------------------------------------------ the factory

def _context(tokenizer):
    return types.SimpleNamespace(tokenizer=tokenizer)


def test_factory(handmade):
    assert build_stop_strings(types.SimpleNamespace(stop_strings=None), _context(handmade)) is None
    built = build_stop_strings(types.SimpleNamespace(stop_strings="stop"), _context(handmade))
    assert isinstance(built, StopStringCriteria) and built.stop_strings == ("stop",)


def test_factory_needs_a_tokenizer():
    with pytest.raises(GenerationConfigError, match="tokenizer=tokenizer"):
        build_stop_strings(types.SimpleNamespace(stop_strings=["stop"]), _context(None))


def test_factory_reports_bad_strings_as_config_errors(handmade):
    with pytest.raises(GenerationConfigError, match="empty string"):
        build_stop_strings(types.SimpleNamespace(stop_strings=["stop", ""]), _context(handmade))


class MinimalTokenizer:
    """Only what docs/stopping.md asks of a tokenizer without transformers: get_vocab, encode, decode
    (plus backend_tokenizer, to tell byte-level and byte-fallback vocabularies apart)."""

    def __init__(self, backend):
        self.backend_tokenizer = backend

    def get_vocab(self):
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def encode(self, text, add_special_tokens=False):
        return self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids):
        return self.backend_tokenizer.decode(ids, skip_special_tokens=False)


def test_a_tokenizer_with_only_decode_gives_the_same_answers(any_tokenizer):
    strings = ["stop", "é", "\n\n", "the end", "s"]
    minimal = StopStringCriteria(MinimalTokenizer(any_tokenizer.backend_tokenizer), strings)
    full = StopStringCriteria(any_tokenizer, strings)
    encoded = torch.tensor(any_tokenizer.encode(CORPUS_TEXT, add_special_tokens=False))
    generator = torch.Generator().manual_seed(1)
    for length in range(1, 7):
        starts = torch.randint(0, len(encoded) - length, (64,), generator=generator)
        batch = encoded[starts[:, None] + torch.arange(length)]
        assert torch.equal(minimal(batch, None), full(batch, None))
