"""Public classes that live in built-in plugins but are importable from ``genplug`` directly.

transformers users write ``from transformers import TopPLogitsWarper, StaticCache``; genplug keeps
those names importable from the top-level package without importing every plugin eagerly. Each
plugin package lists its public classes in a ``PUBLIC_CLASSES`` dict (name -> module).
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

PLUGIN_PACKAGES = (
    "genplug.plugins.processors",
    "genplug.plugins.stopping",
    "genplug.plugins.caches",
    "genplug.plugins.strategies",
    "genplug.plugins.models",
    "genplug.plugins.transformers",
)


def lookup(name: str) -> Optional[Any]:
    for package in PLUGIN_PACKAGES:
        table = getattr(importlib.import_module(package), "PUBLIC_CLASSES", {})
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
    return None
