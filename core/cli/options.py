"""Turning ``--config FILE`` and ``--set FIELD=VALUE`` options into a GenerationConfig."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false/null, lists, objects), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text


def parse_sets(pairs: Optional[List[str]]) -> Dict[str, Any]:
    values = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set {pair!r} must look like FIELD=VALUE")
        key, text = pair.split("=", 1)
        values[key.strip()] = parse_value(text.strip())
    return values


def add_config_options(parser) -> None:
    parser.add_argument("--config", metavar="FILE", help="a generation_config.json to start from")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                        help="set any config field, plugin-owned ones included (repeatable); "
                             "docs/config.md lists the built-in fields, `genplug explain --fields` the plugins'")


def load_config(config_file: Optional[str], overrides: Dict[str, Any]):
    from genplug.config import GenerationConfig

    config = GenerationConfig.from_pretrained(config_file) if config_file else GenerationConfig()
    config.update(**overrides)
    unknown = [k for k in overrides if not _is_field(config, k)]
    if unknown:
        GenerationConfig(**{k: overrides[k] for k in unknown})  # raises with a did-you-mean
    return config


def _is_field(config, name: str) -> bool:
    from genplug.config import BUILTIN_FIELD_NAMES
    from genplug.plugin_manager import active_config_fields

    return name in BUILTIN_FIELD_NAMES or name in active_config_fields()
