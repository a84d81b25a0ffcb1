"""How generate() calls ``torch.compile`` on the decode step when the cache allows it."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional, Union

import attrs

from ..errors import GenerationConfigError, did_you_mean
from .checks import Flag, OneOf

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@attrs.define
class CompileConfig:
    """Arguments for ``torch.compile`` of the one-token decode step (static caches only).

    ``fullgraph=True`` makes graph breaks an error, ``dynamic`` picks dynamic-shape graphs,
    ``backend`` and ``mode`` are passed through, and ``options`` goes to the backend.
    """

    fullgraph: bool = False
    dynamic: Optional[bool] = None
    backend: Union[str, Callable] = "inductor"
    mode: Optional[str] = "reduce-overhead"
    options: Optional[dict] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "fullgraph": self.fullgraph,
            "dynamic": self.dynamic,
            "backend": self.backend,
            "mode": self.mode,
            "options": copy.deepcopy(self.options),
        }

    @classmethod
    def from_dict(cls, config_dict: Dict[str, Any]) -> "CompileConfig":
        names = [f.name for f in attrs.fields(cls)]
        for key in config_dict:
            if key not in names:
                raise GenerationConfigError(
                    f"compile_config has the unknown key {key!r}.{did_you_mean(str(key), names)} "
                    f"Known keys: {', '.join(names)}"
                )
        return cls(**config_dict)

    def validate(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise GenerationConfigError(f"compile_config.{name}={getattr(self, name)!r} {problem}; {fix}")

        if Flag().problem(self.fullgraph):
            fail("fullgraph", "is not a bool", "use True to make graph breaks an error")
        if self.dynamic is not None and Flag().problem(self.dynamic):
            fail("dynamic", "is not a bool or None", "use None to let torch decide")
        if not (isinstance(self.backend, str) and self.backend) and not callable(self.backend):
            fail(
                "backend", "is not a backend name or callable",
                "use 'inductor' (see torch._dynamo.list_backends())",
            )
        if self.mode is not None and OneOf(COMPILE_MODES).problem(self.mode):
            fail("mode", "is not a torch.compile mode", f"use one of {', '.join(COMPILE_MODES)} or None")
        if self.options is not None and not (
            isinstance(self.options, dict) and all(isinstance(k, str) for k in self.options)
        ):
            fail("options", "is not a dict of backend options", "use None or a dict like {'max_autotune': True}")


def compile_config_from(value: Any) -> Optional[CompileConfig]:
    """Accept a CompileConfig, a dict of its fields, or another library's object with ``to_dict()``."""
    if value is None or isinstance(value, CompileConfig):
        return value
    if not isinstance(value, dict) and callable(getattr(value, "to_dict", None)):
        value = value.to_dict()
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise GenerationConfigError(
            f"compile_config={value!r} is a {type(value).__name__}, expected a CompileConfig or a dict of its "
            "fields (fullgraph, dynamic, backend, mode, options)"
        )
    return CompileConfig.from_dict(value)
