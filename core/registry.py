"""Name -> entry tables filled once per plugin manager by the ``genplug_register_*`` hooks."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import attrs

from .errors import PluginError, did_you_mean


@attrs.frozen
class Entry:
    """One registered thing: its name, the object, who provided it, and free-form options."""

    name: str
    obj: Any
    plugin: str
    provider: str
    options: Mapping[str, Any] = attrs.field(factory=dict)

    def __getattr__(self, item):  # options read like attributes: entry.stage, entry.capabilities
        try:
            return self.options[item]
        except KeyError:
            raise AttributeError(item) from None


class Registry(Mapping[str, Entry]):
    """The strategies (or processors, caches, ...) known to one plugin manager.

    A name registered twice is an error naming both providers; there is no silent "first wins".
    """

    def __init__(self, kind: str, unavailable_hint: Optional[Callable[[str], str]] = None):
        self.kind = kind
        self._entries: Dict[str, Entry] = {}
        self._unavailable_hint = unavailable_hint

    def add(self, name: str, obj: Any, plugin: str, provider: str, **options: Any) -> Entry:
        if not isinstance(name, str) or not name:
            raise PluginError(f"{provider} registered a {self.kind} with an invalid name {name!r}")
        if name in self._entries:
            other = self._entries[name].provider
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by {other} and by {provider}; "
                f"uninstall or block one of them (GENPLUG_DISABLE_PLUGINS=...)"
            )
        entry = Entry(name, obj, plugin, provider, dict(options))
        self._entries[name] = entry
        return entry

    def lookup(self, name: str, *, asked_by: str = "") -> Entry:
        """The entry for ``name``, or a PluginError listing the known names and their providers."""
        try:
            return self._entries[name]
        except KeyError:
            pass
        known = ", ".join(f"{n} ({e.provider})" for n, e in sorted(self._entries.items())) or "none"
        hint = self._unavailable_hint(name) if self._unavailable_hint else ""
        where = f" (asked for by {asked_by})" if asked_by else ""
        raise PluginError(
            f"unknown {self.kind} {name!r}{where}.{did_you_mean(name, self._entries)} "
            f"Known: {known}.{hint}"
        )

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


KINDS = (
    ("strategies", "strategy"),
    ("logits_processors", "logits processor"),
    ("stopping_criteria", "stopping criterion"),
    ("cache_backends", "cache backend"),
    ("model_adapters", "model adapter"),
    ("model_loaders", "model loader"),
    ("candidate_generators", "candidate generator"),
    ("config_fields", "config field"),
)


class Registries:
    """All registries of one plugin manager, as attributes named after the register hooks."""

    def __init__(self, unavailable_hint=None):
        for attr, kind in KINDS:
            setattr(self, attr, Registry(kind, unavailable_hint))

    def __iter__(self):
        for attr, _ in KINDS:
            yield attr, getattr(self, attr)
