"""Config fields that plugins add to GenerationConfig.

A plugin declares a field with a default and a validator; the field is then accepted by
GenerationConfig(...) and generate(**kwargs), validated, written to JSON and listed by the CLI,
exactly like a built-in field.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs


@attrs.frozen
class ConfigField:
    """One plugin-owned GenerationConfig field.

    `validator(value)` raises ValueError with a message saying what is wrong; the config turns it
    into a GenerationConfigError naming the field and the value. `None` always means "unset" and is
    never passed to the validator.
    """

    name: str
    default: Any = None
    validator: Optional[Callable[[Any], None]] = None
    help: str = ""
    provider: str = ""  # filled by the registry: "plugin (distribution version)"
