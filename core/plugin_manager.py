"""Finding, loading, blocking and listing plugins, and building the registries they fill.

Every plugin -- genplug's own included -- is a module named by an entry point in the ``genplug``
group. Loading happens once per manager; a plugin that fails to import is skipped with a warning
and listed as broken, while anything a user explicitly asks for raises with the recorded reason.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from importlib import metadata
from typing import Any, Dict, Iterator, List, Optional

import attrs
import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import KINDS, Registries
from .stages import STAGES

PROJECT = "genplug"
hookimpl = pluggy.HookimplMarker(PROJECT)

DISABLE_ENV = "GENPLUG_DISABLE_PLUGINS"
NO_AUTOLOAD_ENV = "GENPLUG_DISABLE_PLUGIN_AUTOLOAD"


@attrs.define
class PluginInfo:
    """What ``genplug plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    entry_point: str
    status: str  # loaded | blocked | broken | not autoloaded
    builtin: bool
    error: str = ""
    provides: Dict[str, List[str]] = attrs.field(factory=dict)
    hooks: List[str] = attrs.field(factory=list)

    @property
    def provider(self) -> str:
        return f"{self.name} ({self.distribution} {self.version})"


def _env_list(name: str) -> List[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


class GenplugPluginManager(pluggy.PluginManager):
    """pluggy's manager plus genplug's discovery rules, plugin listing and registries."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: Dict[str, PluginInfo] = {}
        self._registries: Optional[Registries] = None
        self._modules_not_loaded: Dict[str, Any] = {}  # name -> entry point, for blocked plugins

    # ---------------------------------------------------------------- discovery

    def parse_hookimpl_opts(self, plugin, name):
        # Only genplug_* attributes are hook implementations; a misspelt one is caught by check_pending.
        if not name.startswith("genplug_"):
            return None
        return super().parse_hookimpl_opts(plugin, name)

    def load_entrypoints(self, disabled: Optional[List[str]] = None, autoload: Optional[bool] = None) -> None:
        """Load every plugin of the ``genplug`` entry-point group once.

        ``disabled`` (default: ``$GENPLUG_DISABLE_PLUGINS``) blocks plugins by name;
        ``autoload=False`` (default: unless ``$GENPLUG_DISABLE_PLUGIN_AUTOLOAD`` is set) loads genplug's
        own plugins only.
        """
        disabled = set(_env_list(DISABLE_ENV) if disabled is None else disabled)
        if autoload is None:
            autoload = os.environ.get(NO_AUTOLOAD_ENV, "") in ("", "0")
        seen = set()
        found_builtin = False
        for ep in metadata.entry_points(group=PROJECT):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            builtin = dist_name == PROJECT
            found_builtin |= builtin
            info = PluginInfo(ep.name, dist_name, version, ep.value, "loaded", builtin)
            self.infos[ep.name] = info
            if ep.name in disabled:
                info.status = "blocked"
                self.set_blocked(ep.name)
                self._modules_not_loaded[ep.name] = ep
                continue
            if not builtin and not autoload:
                info.status = "not autoloaded"
                self._modules_not_loaded[ep.name] = ep
                continue
            try:
                module = ep.load()
                self.register(module, name=ep.name)
            except Exception as exc:  # a broken third-party plugin must not break the rest
                info.status = "broken"
                info.error = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"genplug plugin {ep.name!r} ({dist_name} {version}, entry point "
                    f"{ep.name} = {ep.value}) failed to load and is skipped: {info.error}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if not found_builtin:
            raise PluginError(
                "genplug's built-in plugins were not found in the 'genplug' entry-point group: "
                "genplug must be installed (for a source checkout: pip install -e .)"
            )
        self.check_pending()

    def register(self, plugin, name=None):
        result = super().register(plugin, name)
        self._registries = None
        if result is not None:
            name = result
            if name not in self.infos:  # registered directly, not through an entry point
                self.infos[name] = PluginInfo(name, "(in-process)", "", repr(plugin), "loaded", False)
        return result

    def unregister(self, plugin=None, name=None):
        result = super().unregister(plugin, name)
        self._registries = None
        return result

    # ---------------------------------------------------------------- registries

    @property
    def registries(self) -> Registries:
        """The registries, built on first use by calling each plugin's register hooks once."""
        if self._registries is None:
            self._registries = self._build_registries()
        return self._registries

    def _provider(self, plugin_name: str) -> str:
        info = self.infos.get(plugin_name)
        return info.provider if info else plugin_name

    def _build_registries(self) -> Registries:
        registries = Registries(unavailable_hint=self.unavailable_hint)
        for info in self.infos.values():
            info.provides = {}
            info.hooks = []
        for attr, _kind in KINDS:
            registry = getattr(registries, attr)
            caller = getattr(self.hook, f"genplug_register_{attr}")
            for impl in reversed(caller.get_hookimpls()):  # registration order
                plugin_name = impl.plugin_name
                provider = self._provider(plugin_name)
                register = _make_register(attr, registry, plugin_name, provider)
                impl.function(**{arg: register for arg in impl.argnames})
        for attr, registry in registries:
            for name, entry in registry.items():
                info = self.infos.get(entry.plugin)
                if info is not None:
                    info.provides.setdefault(attr, []).append(name)
        for plugin_name, plugin in self.list_name_plugin():
            info = self.infos.get(plugin_name)
            if info is not None and plugin is not None:
                info.hooks = sorted(caller.name for caller in (self.get_hookcallers(plugin) or []))
        return registries

    def unavailable_hint(self, name: str) -> str:
        """Say which blocked, unloaded or broken plugins might have provided ``name``."""
        owners = self.owners_among_unloaded(name)
        broken = [i for i in self.infos.values() if i.status == "broken"]
        hint = ""
        if owners:
            hint += " " + "; ".join(f"plugin {o} provides it but is {self.infos[o].status}" for o in owners) + "."
        if broken:
            hint += " Broken plugins that might provide it: " + "; ".join(
                f"{i.provider}: {i.error}" for i in broken
            ) + "."
        return hint

    def owners_among_unloaded(self, name: str) -> List[str]:
        """Names of blocked or not-autoloaded plugins that register something called ``name``."""
        owners = []
        for plugin_name, ep in self._modules_not_loaded.items():
            try:
                module = ep.load()
            except Exception:
                continue
            probe = GenplugPluginManager.__new__(GenplugPluginManager)
            GenplugPluginManager.__init__(probe)
            pluggy.PluginManager.register(probe, module, name=plugin_name)
            probe.infos[plugin_name] = PluginInfo(plugin_name, "", "", "", "loaded", False)
            try:
                regs = probe._build_registries()
            except Exception:
                continue
            if any(name in registry for _, registry in regs):
                owners.append(plugin_name)
        return owners

    def plugin_list(self) -> List[PluginInfo]:
        """Every known plugin, sorted by name, with what it provides (registries built on demand)."""
        try:
            self.registries
        except PluginError:
            pass
        return sorted(self.infos.values(), key=lambda i: i.name)


def _make_register(attr: str, registry, plugin_name: str, provider: str):
    """The ``register`` callback handed to one plugin's ``genplug_register_<attr>`` hook."""
    if attr == "config_fields":

        def register(field, **_ignored):
            from .config.generation_config import BUILTIN_FIELD_NAMES

            if field.name in BUILTIN_FIELD_NAMES:
                raise PluginError(
                    f"{provider} declares config field {field.name!r}, which is a built-in "
                    "GenerationConfig field; choose another name"
                )
            registry.add(field.name, attrs.evolve(field, provider=provider), plugin_name, provider)

        return register

    def register(name, obj, **options):
        if attr == "logits_processors":
            stage = options.get("stage")
            if stage not in STAGES:
                raise PluginError(
                    f"{provider} registered logits processor {name!r} with stage {stage!r}; "
                    f"stage must be one of {', '.join(STAGES)}"
                )
        return registry.add(name, obj, plugin_name, provider, **options)

    return register


# ------------------------------------------------------------------------ the active manager

_default_manager: Optional[GenplugPluginManager] = None
_active: contextvars.ContextVar[Optional[GenplugPluginManager]] = contextvars.ContextVar(
    "genplug_plugin_manager", default=None
)


def new_plugin_manager(disabled=None, autoload=None, plugins=()) -> GenplugPluginManager:
    """A fresh, isolated manager with the entry-point plugins loaded, plus in-process ``plugins``."""
    pm = GenplugPluginManager()
    pm.load_entrypoints(disabled=disabled, autoload=autoload)
    for plugin in plugins:
        pm.register(plugin)
    return pm


def get_plugin_manager() -> GenplugPluginManager:
    """The manager in use: the one set by :func:`use_plugin_manager`, else the process default."""
    global _default_manager
    active = _active.get()
    if active is not None:
        return active
    if _default_manager is None:
        _default_manager = new_plugin_manager()
    return _default_manager


@contextlib.contextmanager
def use_plugin_manager(pm: Optional[GenplugPluginManager]) -> Iterator[GenplugPluginManager]:
    """Make ``pm`` the manager for code run inside the block (None keeps the current one)."""
    if pm is None:
        yield get_plugin_manager()
        return
    token = _active.set(pm)
    try:
        yield pm
    finally:
        _active.reset(token)


def active_config_fields():
    """The plugin-owned GenerationConfig fields of the manager in use (name -> ConfigField)."""
    return get_plugin_manager().registries.config_fields
