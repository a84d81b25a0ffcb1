"""Values derived from an object, kept between generate() calls while the object stays the same.

Every generate() call reads the model's generation defaults: a transformers ``GenerationConfig`` converted to
genplug's, or the generation fields of a model config. Each conversion costs ~0.05-0.1 ms, on every call,
for something that rarely changes. :class:`KeptByIdentity` keeps the result per source object (by identity:
transformers' configs hash and compare through their JSON, which costs what is saved) and converts again
when the object's attributes changed -- a shallow snapshot whose containers are deep-copied, so a list
changed in place shows too.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any, Callable, Dict, Optional

import torch

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


def attributes_snapshot(source: Any) -> Optional[Dict[str, Any]]:
    """``source``'s attributes, containers deep-copied; None for an object without a ``__dict__``."""
    attributes = getattr(source, "__dict__", None)
    if not isinstance(attributes, dict):
        return None
    return {k: v if isinstance(v, _IMMUTABLE) else copy.deepcopy(v) for k, v in attributes.items()}


class KeptByIdentity:
    """``convert(source)`` per source object, computed again only when its attributes changed.

    Objects that cannot be snapshot (no ``__dict__``, a dict) or weakly referenced are converted every time.
    Entries go when their source is collected. :meth:`get` returns the kept value itself: callers that hand
    it on copy it.
    """

    def __init__(self, convert: Callable[[Any], Any]):
        self.convert = convert
        self._entries: Dict[int, tuple] = {}  # id(source) -> (weak reference, snapshot, value)

    def get(self, source: Any) -> Any:
        snapshot = attributes_snapshot(source)
        if snapshot is None:
            return self.convert(source)
        key = id(source)
        kept = self._entries.get(key)
        if kept is not None and kept[0]() is source and _equal(kept[1], snapshot):
            return kept[2]
        value = self.convert(source)
        try:
            alive = weakref.ref(source, lambda _, key=key, entries=self._entries: entries.pop(key, None))
        except TypeError:
            return value
        self._entries[key] = (alive, snapshot, value)
        return value


def _equal(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Whether two snapshots are equal; one that cannot be compared (a tensor attribute) counts as changed."""
    try:
        return bool(a == b)
    except Exception:
        return False
