"""Argument checks shared by the processors: each failure is a GenerationConfigError naming the field.

Processors are built from a GenerationConfig by their factories but can also be constructed directly
(as in transformers), so their constructors check their own arguments. Messages follow the project rule:
what was wrong, the value, why, and how to fix it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, List, NoReturn, Optional

import torch

from genplug.errors import GenerationConfigError


def fail(field: str, value: Any, problem: str, fix: str) -> NoReturn:
    raise GenerationConfigError(f"{field}={value!r} {problem}; {fix}")


def is_int(value: Any) -> bool:
    """An integer that is not a bool (numpy integers included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def number_in(field: str, value: Any, low: float, high: float, *, low_open: bool = False,
              high_open: bool = False, meaning: str, fix: str) -> float:
    """``value`` as a float, if it lies in the interval from ``low`` to ``high``."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if not is_number(value):
        fail(field, value, f"is not a number in {interval}: {field} is {meaning}", fix)
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        fail(field, value, f"is outside {interval}: {field} is {meaning}", fix)
    return value


def positive_int(field: str, value: Any, *, meaning: str, fix: str) -> int:
    if not is_int(value) or value <= 0:
        fail(field, value, f"is not a positive int: {field} is {meaning}", fix)
    return int(value)


def min_tokens_to_keep(value: Any) -> int:
    return positive_int("min_tokens_to_keep", value, meaning="the number of tokens a warper never removes",
                        fix="use an int >= 1")


def token_ids(field: str, value: Any, *, allow_empty: bool = False, within: Any = None) -> List[int]:
    """A token id, or a list / tuple / 1-D tensor of them, as a list of ints >= 0.

    ``within`` is the whole field value when ``value`` is a part of it, for the error message.
    """
    shown = value if within is None else within
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or value.is_floating_point() or value.is_complex():
            fail(field, shown, "is not a 1-D tensor of integer token ids", "pass token ids as ints")
        value = value.tolist()  # set-up time only, never per step
    items = [value] if is_int(value) else value
    if not isinstance(items, (list, tuple, set, frozenset, range)):
        fail(field, shown, "is not a token id or a list of token ids", "use an int >= 0 or a list of them")
    items = list(items)
    if not items and not allow_empty:
        fail(field, shown, "is empty", "list at least one token id, or leave the field unset")
    for item in items:
        if not is_int(item) or item < 0:
            fail(field, shown, f"contains {item!r}, which is not a token id (an int >= 0)",
                 "use non-negative integer token ids")
    return [int(item) for item in items]


def token_sequences(field: str, value: Any) -> List[List[int]]:
    """A non-empty list of non-empty lists of token ids (bad_words_ids' shape)."""
    if not isinstance(value, (list, tuple)) or not value:
        fail(field, value, "is not a non-empty list of token-id lists", "use a list like [[12], [7, 9]]")
    sequences = []
    for item in value:
        if not isinstance(item, (list, tuple)) or not item:
            fail(field, value, f"contains {item!r}, but each entry must be a non-empty list of token ids",
                 "use a list like [[12], [7, 9]]")
        sequences.append(token_ids(field, list(item), within=value))
    return sequences


def within_vocab(field: str, value: Any, ids: Iterable[int], vocab_size: Optional[int]) -> None:
    """Raise if any id is >= vocab_size: such a token cannot be scored by the model."""
    if vocab_size is None:
        return
    outside = sorted({i for i in ids if i >= vocab_size})
    if outside:
        fail(field, value, f"names token ids {outside} but the model scores only {vocab_size} tokens "
             f"(ids 0..{vocab_size - 1})", "use ids from this model's vocabulary")


def eos_list(value: Any, field: str = "eos_token_id") -> List[int]:
    """EOS ids as a list of ints >= 0; None or an empty tensor gives []."""
    if value is None:
        return []
    if isinstance(value, torch.Tensor) and value.numel() == 0:
        return []
    return token_ids(field, value.reshape(-1) if isinstance(value, torch.Tensor) else value)

