"""Type and range checks for single GenerationConfig values.

Each check answers two questions: ``problem(value)`` says what is wrong with a value (or None if it
is fine), and ``describe()`` says what the field accepts, for error messages, docs and ``--help``.
The config turns a problem into a GenerationConfigError that also says what the field is for and how
to fix it, e.g. ``top_p=1.5 is outside (0, 1]: top_p is the probability mass to keep; use 1.0 to
disable it``. ``None`` means "unset" and is never checked.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional

import attrs


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an int to Python, never to a config)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A finite real number that is not a bool (ints too large for a float do not count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_list(value: Any) -> bool:
    """A list or tuple: what JSON arrays load as, and what users write."""
    return isinstance(value, (list, tuple))


def type_name(value: Any) -> str:
    return type(value).__name__


def _not_a(value: Any, expected: str) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not is_real(value):
        return f"is {'too large for a float' if is_int(value) else 'not a finite number'}, expected {expected}"
    name = type_name(value)
    return f"is {'an' if name[0] in 'aeiou' else 'a'} {name}, expected {expected}"


@attrs.frozen
class Flag:
    """True or False."""

    def describe(self) -> str:
        return "bool"

    def problem(self, value: Any) -> Optional[str]:
        return None if isinstance(value, bool) else _not_a(value, "True or False")


@attrs.frozen
class Integer:
    """An int at or above ``minimum``."""

    minimum: int = 0

    def describe(self) -> str:
        return f"int >= {self.minimum}"

    def problem(self, value: Any) -> Optional[str]:
        if not is_int(value):
            return _not_a(value, f"an int >= {self.minimum}")
        if value < self.minimum:
            return f"is less than {self.minimum}"
        return None


def _interval(low, high, low_open, high_open) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


@attrs.frozen
class Real:
    """A finite number (int or float), optionally inside an interval."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return "float in " + _interval(self.low, self.high, self.low_open, self.high_open)
        if self.low is not None:
            return f"float {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"float {'<' if self.high_open else '<='} {self.high:g}"
        return "float"

    def problem(self, value: Any) -> Optional[str]:
        if not is_real(value):
            return _not_a(value, "a number")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not (too_low or too_high):
            return None
        if self.low is not None and self.high is not None:
            return "is outside " + _interval(self.low, self.high, self.low_open, self.high_open)
        if too_low:
            return f"is not {'>' if self.low_open else '>='} {self.low:g}"
        return f"is not {'<' if self.high_open else '<='} {self.high:g}"


def _same(a: Any, b: Any) -> bool:
    # 1 == True and 0.0 == False in Python; a config choice must match in type too.
    return type(a) is type(b) and a == b


@attrs.frozen
class OneOf:
    """One of a fixed set of values (compared by type and value)."""

    choices: tuple

    def describe(self) -> str:
        return " | ".join(repr(c) for c in self.choices)

    def problem(self, value: Any) -> Optional[str]:
        if any(_same(value, c) for c in self.choices):
            return None
        return "is not one of " + ", ".join(repr(c) for c in self.choices)


@attrs.frozen
class Text:
    """A non-empty string."""

    def describe(self) -> str:
        return "str"

    def problem(self, value: Any) -> Optional[str]:
        if not isinstance(value, str):
            return _not_a(value, "a string")
        return None if value else "is an empty string"


def _token_problem(ids: Iterable[Any], allow_negative: bool = False) -> Optional[str]:
    for token in ids:
        if not is_int(token):
            return f"contains {token!r} ({type_name(token)}), but token ids are ints"
        if token < 0 and not allow_negative:
            return f"contains the negative token id {token}"
    return None


@attrs.frozen
class TokenIds:
    """A token id, or (``allow_list``) a list of token ids."""

    allow_list: bool = False
    allow_negative: bool = False

    def describe(self) -> str:
        return "int or list[int]" if self.allow_list else "int"

    def problem(self, value: Any) -> Optional[str]:
        if is_int(value):
            return _token_problem([value], self.allow_negative)
        if self.allow_list and is_list(value):
            return _token_problem(value, self.allow_negative)
        return _not_a(value, "a token id (int)" + (" or a list of them" if self.allow_list else ""))


@attrs.frozen
class TokenIdList:
    """A list of non-negative token ids."""

    def describe(self) -> str:
        return "list[int]"

    def problem(self, value: Any) -> Optional[str]:
        if not is_list(value):
            return _not_a(value, "a list of token ids")
        return _token_problem(value)


@attrs.frozen
class TokenSequences:
    """A non-empty list of non-empty token-id lists; ``nested`` also allows lists of alternatives."""

    nested: bool = False

    def describe(self) -> str:
        return "list[list[int]]" + (" or list[list[list[int]]]" if self.nested else "")

    def problem(self, value: Any) -> Optional[str]:
        if not is_list(value):
            return _not_a(value, "a non-empty list of token-id lists")
        if not value:
            return "is empty"
        for item in value:
            if not is_list(item) or not item:
                return f"contains {item!r}, but each entry must be a non-empty list of token ids"
            if self.nested and all(is_list(alt) for alt in item):
                for alternative in item:
                    if not alternative:
                        return f"contains an empty alternative in {item!r}"
                    found = _token_problem(alternative)
                    if found:
                        return found
            else:
                found = _token_problem(item)
                if found:
                    return found
        return None


@attrs.frozen
class SequenceBias:
    """``{(token, ...): bias}`` or the JSON-friendly ``[[[token, ...], bias], ...]``."""

    def describe(self) -> str:
        return "dict[tuple[int, ...], float] or list[[list[int], float]]"

    def problem(self, value: Any) -> Optional[str]:
        if isinstance(value, dict):
            pairs = list(value.items())
            for key, _ in pairs:
                if not isinstance(key, tuple):
                    return f"has the key {key!r}, but keys must be tuples of token ids like (12, 7)"
        elif is_list(value):
            pairs = []
            for item in value:
                if not is_list(item) or len(item) != 2 or not is_list(item[0]):
                    return f"contains {item!r}, but each entry must be [[token ids], bias]"
                pairs.append((item[0], item[1]))
        else:
            return _not_a(value, "a dict {(token ids): bias} or a list [[token ids], bias]")
        if not pairs:
            return "is empty"
        for ids, bias in pairs:
            if not ids:
                return "contains an empty token sequence"
            found = _token_problem(ids)
            if found:
                return found
            if not is_real(bias):
                return f"has the bias {bias!r} for {tuple(ids)}, but biases are finite numbers"
        return None


@attrs.frozen
class DecayPenalty:
    """``(start_index, decay_factor)``."""

    def describe(self) -> str:
        return "(int >= 0, float)"

    def problem(self, value: Any) -> Optional[str]:
        if not is_list(value) or len(value) != 2:
            return "is not a pair (start_index, decay_factor)"
        start, factor = value
        if not is_int(start) or start < 0:
            return f"has start_index {start!r}, expected an int >= 0"
        if not is_real(factor):
            return f"has decay_factor {factor!r}, expected a finite number"
        return None


@attrs.frozen
class StopStrings:
    """A string or a list of strings."""

    def describe(self) -> str:
        return "str or list[str]"

    def problem(self, value: Any) -> Optional[str]:
        items = [value] if isinstance(value, str) else value
        if not is_list(items):
            return _not_a(value, "a string or a list of strings")
        for item in items:
            if not isinstance(item, str):
                return f"contains {item!r} ({type_name(item)}), expected strings"
            if not item:
                return "contains an empty string, which would stop at once"
        return None


@attrs.frozen
class DolaLayers:
    """``"low"``, ``"high"`` or a list of layer indices."""

    def describe(self) -> str:
        return "'low' | 'high' | list[int]"

    def problem(self, value: Any) -> Optional[str]:
        if isinstance(value, str):
            return None if value in ("low", "high") else "is not 'low', 'high' or a list of layer indices"
        if not is_list(value) or not value:
            return "is not 'low', 'high' or a non-empty list of layer indices"
        for layer in value:
            if not is_int(layer) or layer < 0:
                return f"contains {layer!r}, but layer indices are ints >= 0"
        return None


@attrs.frozen
class StrDict:
    """A dict with string keys (values are checked by whoever uses them)."""

    def describe(self) -> str:
        return "dict"

    def problem(self, value: Any) -> Optional[str]:
        if not isinstance(value, dict):
            return _not_a(value, "a dict")
        for key in value:
            if not isinstance(key, str):
                return f"has the key {key!r}, but keys must be strings"
        return None


@attrs.frozen
class ListOf:
    """A non-empty list (its entries are interpreted by the plugin that uses the field)."""

    def describe(self) -> str:
        return "list"

    def problem(self, value: Any) -> Optional[str]:
        if not is_list(value):
            return _not_a(value, "a list")
        return None if value else "is empty"


@attrs.frozen
class Settings:
    """A settings object converted on assignment (watermarking, compile, continuous batching)."""

    what: str

    def describe(self) -> str:
        return self.what

    def problem(self, value: Any) -> Optional[str]:
        return None  # converted and validated by its own class
