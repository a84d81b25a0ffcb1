"""The native Llama family as a genplug plugin: a checkpoint loader and a model adapter.

The loader claims directories whose config.json names a model type the native models implement
(llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3); the adapter claims the native model
instances. Nothing heavy is imported until a hook actually has to load or adapt a model.
"""

from __future__ import annotations

import json
import os

from genplug import hookimpl
from genplug.models import ModelAdapter

from .config import SUPPORTED_MODEL_TYPES  # light: the config module does not import torch


class NativeLlamaLoader:
    """Loads local transformers-format checkpoints of the Llama family into native models."""

    @staticmethod
    def claims(path) -> bool:
        """True for a directory whose config.json has a supported ``model_type`` (never raises)."""
        try:
            with open(os.path.join(os.fspath(path), "config.json"), encoding="utf-8") as handle:
                model_type = json.load(handle).get("model_type")
        except (OSError, ValueError, TypeError, AttributeError):
            return False
        return model_type in SUPPORTED_MODEL_TYPES

    @staticmethod
    def load(path, device="cpu", dtype=None):
        """``(model, tokenizer or None)``; see :func:`genplug.plugins.models.llama.loader.load_model`."""
        from .loader import load_model

        return load_model(path, device=device, dtype=dtype)


class NativeLlamaAdapter(ModelAdapter):
    """Drives a NativeLlamaForCausalLM; for now exactly the generic adapter, named for the listing."""


class NativeLlamaAdapterFactory:
    """Claims instances of the native model class (without importing it when none was built)."""

    @staticmethod
    def claims(model) -> bool:
        modeling = _loaded_modeling_module()
        return modeling is not None and isinstance(model, modeling.NativeLlamaForCausalLM)

    @staticmethod
    def adapt(model) -> ModelAdapter:
        return NativeLlamaAdapter(model)


def _loaded_modeling_module():
    # If the modeling module was never imported, no native model exists, so nothing to claim.
    import sys

    return sys.modules.get(__package__ + ".modeling")


@hookimpl
def genplug_register_model_loaders(register):
    register("native_llama", NativeLlamaLoader,
             description="local Llama / Mistral / Qwen2 / Qwen3 / Gemma 1-3 checkpoints (safetensors) as native models")


@hookimpl
def genplug_register_model_adapters(register):
    register("native_llama", NativeLlamaAdapterFactory, description="genplug's native Llama-family models")


@hookimpl
def genplug_adapt_model(model):
    if NativeLlamaAdapterFactory.claims(model):
        return NativeLlamaAdapterFactory.adapt(model)
    return None
