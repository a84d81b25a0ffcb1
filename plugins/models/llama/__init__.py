"""genplug's native Llama-family models: modeling, checkpoint loading, tokenizer, and their plugin.

Importing this package is cheap: torch-heavy modules load on first use, so the plugin module
(:mod:`.plugin`) can be discovered without touching torch.
"""

import importlib

_LAZY = {
    "NativeLlamaForCausalLM": ".modeling",
    "NativeLlamaConfig": ".config",
    "NativeTokenizer": ".tokenizer",
    "CheckpointError": ".errors",
    "load_model": ".loader",
    "save_model": ".loader",
    "default_model_path": ".loader",
    "load_default_model": ".loader",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
