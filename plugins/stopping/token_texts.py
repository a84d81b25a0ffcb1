"""The text each vocabulary entry adds to a decoded sequence, as arrays of matching units.

Stop strings are matched against what the tokens *decode to*, not against their vocabulary spelling
("Ġstop", "▁stop", "<0x0A>"). This module turns a tokenizer's vocabulary into one flat tensor of
units plus a start and a length per token id, so stop-string tables can be built with tensor ops
instead of a Python loop over the vocabulary for every new set of stop strings.

The unit is the one transformers' ``StopStringCriteria`` (5.23) matches in, so that which strings
are found is identical:

* byte-level vocabularies (GPT-2 style, ``ByteLevel`` decoder): UTF-8 **bytes**; a token holding half
  of a multi-byte character keeps its half.
* byte-fallback vocabularies (SentencePiece style, ``ByteFallback`` decoder): UTF-8 bytes; a
  ``<0xNN>`` token is the byte ``NN``.
* anything else: Unicode **characters**.

What the tokenizer must provide (a transformers tokenizer has all of it):

* ``get_vocab() -> dict[str, int]`` -- every token string and its id, added tokens included;
* ``encode(text, add_special_tokens=False) -> list[int]`` -- used once, on a fixed prefix;
* ``convert_tokens_to_string(tokens) -> str`` with ``convert_ids_to_tokens(ids)`` (transformers'
  way, and what genplug uses when present), or else ``decode(ids) -> str``: to decode each token
  after the fixed prefix (see :func:`_decoded_token_text`);
* optionally ``backend_tokenizer.decoder`` (a ``tokenizers`` decoder): it says whether the vocabulary
  is byte-level or byte-fallback. Without it, characters are matched.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from typing import Any, List, Optional, Sequence, Tuple, Union

import attrs
import torch

BYTE_LEVEL = "byte_level"
BYTE_FALLBACK = "byte_fallback"

# Decoding a token on its own can lose a leading space ("▁the" decodes to "the" at the start of a
# text). Decoding it after a fixed prefix and cutting the prefix off gives the text it adds in the
# middle of a sequence; transformers uses the same prefix, which keeps the two in agreement.
STATIC_PREFIX = "abcdef"


@attrs.define(eq=False)
class TokenTexts:
    """The decoded text of every token id of one vocabulary, as units in a flat tensor.

    ``units`` is int32 (byte values 0-255, or Unicode code points); token ``ids[i]`` covers
    ``units[starts[i] : starts[i] + lengths[i]]``. ``tables`` caches the stop-string tables built from
    this vocabulary, keyed by the stop strings (see :mod:`.stop_strings`).
    """

    matching_mode: Optional[str]  # BYTE_LEVEL, BYTE_FALLBACK or None (characters)
    ids: torch.Tensor  # (V,) int64
    starts: torch.Tensor  # (V,) int64
    lengths: torch.Tensor  # (V,) int64
    units: torch.Tensor  # (total,) int32
    tables: "OrderedDict[Any, Any]" = attrs.field(factory=OrderedDict)

    @property
    def in_bytes(self) -> bool:
        return self.matching_mode is not None

    def encode(self, text: str) -> torch.Tensor:
        """``text`` in this vocabulary's matching unit, as an int32 tensor."""
        return _units_of([text.encode("utf-8") if self.in_bytes else text], self.in_bytes)


# ------------------------------------------------------------------------------------------ cache

_CACHE_LOCK = threading.Lock()
_BY_TOKENIZER: "weakref.WeakKeyDictionary[Any, Tuple[Any, TokenTexts]]" = weakref.WeakKeyDictionary()


def token_texts(tokenizer) -> TokenTexts:
    """The :class:`TokenTexts` of ``tokenizer``, computed once per tokenizer and vocabulary size."""
    fingerprint = _vocab_fingerprint(tokenizer)
    with _CACHE_LOCK:
        try:
            cached = _BY_TOKENIZER.get(tokenizer)
        except TypeError:  # not weak-referenceable: no caching
            cached = None
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    texts = _build_token_texts(tokenizer)
    with _CACHE_LOCK:
        try:
            _BY_TOKENIZER[tokenizer] = (fingerprint, texts)
        except TypeError:
            pass
    return texts


def _vocab_fingerprint(tokenizer) -> Any:
    # Tokens added after the first stop-string criterion was built must invalidate the cache.
    try:
        return len(tokenizer)
    except TypeError:
        return len(tokenizer.get_vocab())


# --------------------------------------------------------------------------------- building

def _build_token_texts(tokenizer) -> TokenTexts:
    mode = matching_mode(tokenizer)
    vocab = tokenizer.get_vocab()
    spellings = list(vocab.keys())
    ids = torch.tensor(list(vocab.values()), dtype=torch.int64)
    texts: List[Union[str, bytes, None]]
    if mode == BYTE_LEVEL:
        texts = _byte_level_texts(spellings)
    elif mode == BYTE_FALLBACK:
        texts = [_byte_fallback_byte(s) for s in spellings]
    else:
        texts = [None] * len(spellings)
    undecoded = [i for i, t in enumerate(texts) if t is None]
    if undecoded:
        decode = _decoded_token_text(tokenizer)
        id_list = ids.tolist()
        for i in undecoded:
            text = decode(spellings[i], id_list[i])
            texts[i] = text.encode("utf-8") if mode is not None else text
    lengths = torch.tensor([len(t) for t in texts], dtype=torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths
    return TokenTexts(mode, ids, starts, lengths, _units_of(texts, mode is not None))


def _units_of(texts: Sequence[Union[str, bytes]], in_bytes: bool) -> torch.Tensor:
    """All ``texts`` concatenated, as one int32 tensor of bytes or code points."""
    if in_bytes:
        raw = bytearray(b"".join(texts))
        if not raw:
            return torch.zeros(0, dtype=torch.int32)
        return torch.frombuffer(raw, dtype=torch.uint8).to(torch.int32)
    raw = bytearray("".join(texts).encode("utf-32-le"))
    if not raw:
        return torch.zeros(0, dtype=torch.int32)
    return torch.frombuffer(raw, dtype=torch.int32).clone()


def matching_mode(tokenizer) -> Optional[str]:
    """BYTE_LEVEL, BYTE_FALLBACK or None, read from the tokenizer's ``tokenizers`` decoder.

    The same decision as transformers' ``StopStringCriteria``: a ``ByteLevel`` decoder class, else the
    decoder's JSON state naming ``ByteFallback`` (preferred) or ``ByteLevel`` anywhere inside it.
    """
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return None
    if type(decoder).__name__ == "ByteLevel":
        return BYTE_LEVEL
    state = getattr(decoder, "__getstate__", lambda: None)()
    if isinstance(state, bytes):
        state = state.decode("utf-8", errors="replace")
    try:
        config = json.loads(state) if isinstance(state, str) else None
    except json.JSONDecodeError:
        config = None
    if _names_type(config, "ByteFallback"):
        return BYTE_FALLBACK
    if _names_type(config, "ByteLevel"):
        return BYTE_LEVEL
    return None


def _names_type(config: Any, name: str) -> bool:
    if isinstance(config, dict):
        return config.get("type") == name or any(_names_type(v, name) for v in config.values())
    if isinstance(config, list):
        return any(_names_type(v, name) for v in config)
    return False


def _byte_level_alphabet() -> dict:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other bytes are
    shifted to code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shown = set(printable)
    char_of_byte = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in shown:
            char_of_byte[b] = chr(256 + shift)
            shift += 1
    table: dict = {ord(c): b for b, c in char_of_byte.items()}  # code point -> byte, for str.translate
    for code in range(256):
        # A Latin-1 character outside the alphabet (a space in an added token) must not pass as its
        # own byte: map it to a character that fails the Latin-1 encoding.
        table.setdefault(code, "\uffff")
    return table


_BYTE_OF_CHAR = _byte_level_alphabet()


def _byte_level_texts(spellings: List[str]) -> List[Optional[bytes]]:
    """Bytes of each byte-level spelling; None for spellings outside the alphabet (added tokens)."""
    texts: List[Optional[bytes]] = []
    for spelling in spellings:
        try:
            texts.append(spelling.translate(_BYTE_OF_CHAR).encode("latin-1"))
        except UnicodeEncodeError:
            texts.append(None)
    return texts


def _byte_fallback_byte(spelling: str) -> Optional[bytes]:
    if len(spelling) == 6 and spelling.startswith("<0x") and spelling.endswith(">"):
        try:
            return bytes([int(spelling[3:5], 16)])
        except ValueError:
            return None
    return None


def _decoded_token_text(tokenizer):
    """A function giving the text a token adds when decoded after :data:`STATIC_PREFIX`.

    Decodes token spellings with ``convert_tokens_to_string`` (what transformers does, so results
    agree); a tokenizer without it is asked to ``decode`` ids instead.
    """
    prefix_ids = list(tokenizer.encode(STATIC_PREFIX, add_special_tokens=False))
    to_string = getattr(tokenizer, "convert_tokens_to_string", None)
    if to_string is not None:
        prefix = list(tokenizer.convert_ids_to_tokens(prefix_ids))

        def decode_with_prefix(spelling: str, token_id: int, with_prefix: bool = True) -> str:
            return to_string(prefix + [spelling] if with_prefix else [spelling])
    else:
        def decode_with_prefix(spelling: str, token_id: int, with_prefix: bool = True) -> str:
            return tokenizer.decode(prefix_ids + [token_id] if with_prefix else [token_id])

    def decode(spelling: str, token_id: int) -> str:
        text = decode_with_prefix(spelling, token_id)
        at = text.find(STATIC_PREFIX)
        if at < 0:  # the prefix does not survive decoding (e.g. no decoder): decode the token alone
            return decode_with_prefix(spelling, token_id, with_prefix=False)
        return text[at + len(STATIC_PREFIX):]

    return decode
