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
        if _looks_like_hub_id(spec):
            cached = hub_cache_snapshot(spec)
            if cached is None:
                raise PluginError(
                    f"custom_generate={spec!r} looks like a hub repository id that is not in the local Hugging Face "
                    "cache, and genplug never downloads code at run time; download it once "
                    f"(huggingface-cli download {spec}) or clone it and pass its local path"
                )
            root = cached
        else:
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


def _looks_like_hub_id(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists()


def hub_cache_snapshot(repo_id: str) -> Optional[Path]:
    """The local snapshot of a hub repository already in the Hugging Face cache (no network), or None.

    Reads the cache layout directly (``<cache>/models--org--name/snapshots/<revision>``), preferring the
    revision ``refs/main`` points at, so huggingface_hub is not needed.
    """
    import os

    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    main = repo / "refs" / "main"
    if main.is_file() and (snapshots / main.read_text().strip()).is_dir():
        return snapshots / main.read_text().strip()
    candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


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
