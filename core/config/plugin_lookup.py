"""What the config asks the plugin manager: plugin-owned fields, cache backends, unloaded owners.

The manager is imported inside each function (it imports the config itself, lazily), and a manager
that cannot be built -- genplug not installed, a plugin raising in a register hook -- degrades to
"nothing registered"; the reason is kept so that an error about an unknown name can mention it.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

from .fields import ConfigField

# transformers 5.23 ALL_CACHE_IMPLEMENTATIONS plus "paged" (continuous batching): accepted while no
# cache backend is registered yet, so configs load before the cache plugins do.
TRANSFORMERS_CACHE_IMPLEMENTATIONS = (
    "static",
    "offloaded_static",
    "sliding_window",
    "hybrid",
    "hybrid_chunked",
    "offloaded_hybrid",
    "offloaded_hybrid_chunked",
    "dynamic",
    "offloaded",
    "quantized",
    "paged",
)

_manager_problem = ""  # why the last lookup of plugin fields failed


def _manager():
    from .. import plugin_manager

    return plugin_manager.get_plugin_manager()


def manager_problem() -> str:
    """Why the last lookup found no plugin manager ('' if it worked)."""
    return _manager_problem


def plugin_config_fields() -> Dict[str, ConfigField]:
    """The plugin-owned config fields of the manager in use (empty if there is no working manager)."""
    global _manager_problem
    try:
        from .. import plugin_manager

        entries = plugin_manager.active_config_fields()
        fields = {name: getattr(entry, "obj", entry) for name, entry in entries.items()}
    except Exception as exc:  # a broken manager must not make every GenerationConfig() fail
        _manager_problem = f"{type(exc).__name__}: {exc}"
        return {}
    _manager_problem = ""
    return fields


def unloaded_owner_hint(name: str) -> str:
    """Say which blocked or not-autoloaded plugins would provide field ``name`` ('' if none)."""
    try:
        pm = _manager()
        owners = pm.owners_among_unloaded(name)
        statuses = [(owner, pm.infos[owner].status if owner in pm.infos else "not loaded") for owner in owners]
    except Exception:
        return ""
    fixes = {
        "blocked": "remove it from GENPLUG_DISABLE_PLUGINS",
        "not autoloaded": "unset GENPLUG_DISABLE_PLUGIN_AUTOLOAD",
    }
    return "; ".join(
        f"field {name!r} belongs to plugin {owner!r}, which is {status}"
        + (f" ({fixes[status]})" if status in fixes else "")
        for owner, status in statuses
    )


def cache_backends() -> Tuple[List[str], Mapping]:
    """The registered cache backend names and the registry itself (empty when none are registered)."""
    try:
        registry = _manager().registries.cache_backends
        return list(registry), registry
    except Exception:
        return [], {}


def candidate_generator_names() -> List[str]:
    """Names of registered candidate generators (they double as speculation types)."""
    try:
        return list(_manager().registries.candidate_generators)
    except Exception:
        return []
