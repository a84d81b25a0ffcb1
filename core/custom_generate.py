"""Loading a ``custom_generate`` repository from a local directory.

The layout is transformers': ``<repo>/custom_generate/generate.py`` defines ``generate(model, **kwargs)``,
and an optional ``custom_generate/requirements.txt`` lists the packages it needs. The code runs only
with ``trust_remote_code=True`` (local paths included: a directory can come from anywhere). If the
module also defines genplug hook implementations, they are registered for that call only.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional, Tuple

from .errors import GenerationInputError, PluginError

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(==|>=|<=|>|<|!=|~=)?\s*([^\s;#]*)")


def load_local_repository(spec: str, trust_remote_code: Optional[bool]) -> Optional[Tuple[object, object]]:
    """``(generate_function, module_or_None)`` for a local repository; None when ``spec`` is not a directory."""
    root = Path(spec).expanduser()
    if not root.is_dir():
        if "/" in spec and not spec.startswith((".", "/", "~")) and not root.exists():
            raise PluginError(
                f"custom_generate={spec!r} looks like a hub repository id, and genplug never downloads code at "
                "run time; clone the repository and pass its local path"
            )
        raise GenerationInputError(f"custom_generate={spec!r} is not a directory")
    script = root / "custom_generate" / "generate.py"
    if not script.is_file():
        raise GenerationInputError(
            f"custom_generate={spec!r} has no custom_generate/generate.py; a custom_generate repository must "
            "define generate(model, **kwargs) in that file"
        )
    if trust_remote_code is not True:
        raise GenerationInputError(
            f"custom_generate={spec!r} runs the code in {script}; pass trust_remote_code=True to allow it "
            "(required for local directories too)"
        )
    check_requirements(root / "custom_generate" / "requirements.txt")
    module = _import_file(script)
    function = getattr(module, "generate", None)
    if not callable(function):
        raise GenerationInputError(f"{script} defines no top-level generate(model, **kwargs) function")
    has_hooks = any(name.startswith("genplug_") for name in vars(module))
    return function, (module if has_hooks else None)


def check_requirements(path: Path) -> None:
    """Raise ImportError naming every unmet requirement of a requirements.txt file."""
    if not path.is_file():
        return
    problems = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _REQUIREMENT.match(line)
        if not match:
            continue
        name, op, wanted = match.groups()
        name = name.split("[", 1)[0]
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{line} (not installed)")
            continue
        if op and wanted and not _satisfies(installed, op, wanted):
            problems.append(f"{line} (installed: {installed})")
    if problems:
        raise ImportError(
            f"custom_generate requirements in {path} are not met: " + ", ".join(problems)
            + "; install them (pip install ...) and retry"
        )


def _version_tuple(text: str):
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+-]", text)[:4])


def _satisfies(installed: str, op: str, wanted: str) -> bool:
    a, b = _version_tuple(installed), _version_tuple(wanted)
    return {"==": a == b, ">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b, "!=": a != b,
            "~=": a >= b and a[: max(1, len(b) - 1)] == b[: max(1, len(b) - 1)]}[op]


def _import_file(script: Path):
    name = f"genplug_custom_generate_{abs(hash(str(script.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
