"""The exceptions genplug raises, so callers can catch them by kind."""

from __future__ import annotations

import difflib
from typing import Iterable


class GenerationConfigError(ValueError):
    """A generation setting is wrong: the message names the field, the value and the rule."""


class PluginError(RuntimeError):
    """A plugin could not be loaded, clashes with another one, or was asked for while unavailable."""


class GenerationInputError(ValueError):
    """The tensors or keyword arguments given to generate() cannot be used; raised before any model call."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix naming the closest known names, or '' if none is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
