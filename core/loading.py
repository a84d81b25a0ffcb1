"""Loading a local checkpoint through the model-loader plugins (no downloads, ever)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "default_model"


def default_model_path() -> Path:
    """The directory of the small story model shipped inside genplug."""
    return DEFAULT_MODEL


def load_model(path: Union[str, Path, None] = None, device: str = "cpu", dtype=None):
    """``(model, tokenizer)`` from the first model-loader plugin that claims ``path`` (default: the embedded model).

    Loaders are tried by descending ``priority``: genplug's native family first, transformers last.
    """
    import torch

    from .errors import PluginError
    from .plugin_manager import get_plugin_manager

    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_dir():
        raise OSError(f"model directory {path} does not exist; pass a local checkpoint directory")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    loaders = get_plugin_manager().registries.model_loaders
    for entry in sorted(loaders.values(), key=lambda e: (-e.options.get("priority", 0), e.name)):
        if entry.obj.claims(path):
            return entry.obj.load(path, device=device, dtype=dtype)
    known = ", ".join(f"{n} ({e.provider})" for n, e in loaders.items()) or "none"
    raise PluginError(f"no model loader can load {path} (installed loaders: {known}); for architectures the "
                      "native family lacks, install transformers: pip install 'genplug[hf]'")
