"""genplug: transformers' generation API as a small core plus plugins.

Public names are imported lazily so that ``import genplug`` stays cheap and plugin modules can import
``genplug.hookimpl`` without pulling in the whole package.
"""

from __future__ import annotations

import importlib
from typing import Any

from .plugin_manager import hookimpl  # noqa: F401  (plugins need this first and cheaply)

__version__ = "0.1.0"

_LAZY = {
    # configuration
    "GenerationConfig": "genplug.config",
    "GenerationMode": "genplug.config",
    "WatermarkingConfig": "genplug.config",
    "SynthIDTextWatermarkingConfig": "genplug.config",
    "CompileConfig": "genplug.config",
    # watermark detection
    "WatermarkDetector": "genplug.plugins.processors.watermark_detector",
    "WatermarkDetectorOutput": "genplug.plugins.processors.watermark_detector",
    "BayesianDetectorConfig": "genplug.plugins.processors.synthid_detector",
    "BayesianDetectorModel": "genplug.plugins.processors.synthid_detector",
    "BayesianDetectorWatermarkedLikelihood": "genplug.plugins.processors.synthid_detector",
    "BayesianWatermarkDetectorModelOutput": "genplug.plugins.processors.synthid_detector",
    "SynthIDTextWatermarkDetector": "genplug.plugins.processors.synthid_detector",
    "ConfigField": "genplug.config.fields",
    # errors
    "GenerationConfigError": "genplug.errors",
    "GenerationInputError": "genplug.errors",
    "PluginError": "genplug.errors",
    # entry points
    "generate": "genplug.generation",
    "GenerationMixin": "genplug.mixin",
    "compute_transition_scores": "genplug.transition_scores",
    # outputs
    "GenerateDecoderOnlyOutput": "genplug.outputs",
    "GenerateEncoderDecoderOutput": "genplug.outputs",
    "GenerateBeamDecoderOnlyOutput": "genplug.outputs",
    "GenerateBeamEncoderDecoderOutput": "genplug.outputs",
    # pipeline objects
    "LogitsProcessor": "genplug.processing",
    "LogitsProcessorList": "genplug.processing",
    "StoppingCriteria": "genplug.stopping",
    "StoppingCriteriaList": "genplug.stopping",
    "BaseStreamer": "genplug.streamers",
    "TextStreamer": "genplug.streamers",
    "TextIteratorStreamer": "genplug.streamers",
    "AsyncTextIteratorStreamer": "genplug.streamers",
    # caches
    "Cache": "genplug.cache",
    # checkpoints
    "load_model": "genplug.loading",
    "default_model_path": "genplug.loading",
    # plugin manager
    "get_plugin_manager": "genplug.plugin_manager",
    "new_plugin_manager": "genplug.plugin_manager",
    "use_plugin_manager": "genplug.plugin_manager",
}

__all__ = ["hookimpl", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        # Cache classes and processor classes are provided by plugins; look them up there.
        from .public_plugin_names import lookup

        found = lookup(name)
        if found is not None:
            return found
        raise AttributeError(f"module 'genplug' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
