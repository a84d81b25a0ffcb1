"""genplug.config: GenerationConfig, its nested settings classes, and the generation modes."""

from .compile_config import CompileConfig
from .builtin_fields import GROUPS, FieldSpec
from .fields import ConfigField
from .generation_config import BUILTIN_FIELD_NAMES, BUILTIN_FIELD_SPECS, GenerationConfig
from .modes import GenerationMode
from .serialization import GENERATION_CONFIG_NAME
from .watermarking import SynthIDTextWatermarkingConfig, WatermarkingConfig

__all__ = [
    "BUILTIN_FIELD_NAMES",
    "BUILTIN_FIELD_SPECS",
    "CompileConfig",
    "ConfigField",
    "FieldSpec",
    "GENERATION_CONFIG_NAME",
    "GROUPS",
    "GenerationConfig",
    "GenerationMode",
    "SynthIDTextWatermarkingConfig",
    "WatermarkingConfig",
]
