"""Loading a ``custom_generate`` repository from a local directory or a Hugging Face Hub repository id.

The layout is transformers': ``<repo>/custom_generate/generate.py`` defines ``generate(model, **kwargs)``,
and an optional ``custom_generate/requirements.txt`` lists the packages it needs. The code runs only
with ``trust_remote_code=True`` (local paths included: a directory can come from anywhere). A hub id is
read from the local Hugging Face cache when a snapshot there has the code (no network, no huggingface_hub);
otherwise, and only with ``trust_remote_code=True``, its ``custom_generate/`` folder is downloaded. If the
module also defines genplug hook implementations, they are registered for that call only.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional, Tuple

from . import hub
from .errors import GenerationInputError

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(==|>=|<=|>|<|!=|~=)?\s*([^\s;#]*)")
_SCRIPT = Path("custom_generate") / "generate.py"
# What transformers fetches for custom_generate: generate.py, the modules it imports, requirements.txt.
_HUB_PATTERNS = ["custom_generate/*"]


def load_local_repository(spec: str, trust_remote_code: Optional[bool], *, revision: Optional[str] = None,
                          token: "str | bool | None" = None, cache_dir: Optional[str] = None,
                          local_files_only: bool = False,
                          force_download: bool = False) -> Optional[Tuple[object, object]]:
    """``(generate_function, module_or_None)`` for a local directory or a Hub repository id.

    Nothing is downloaded, or run, without ``trust_remote_code=True``.
    """
    root = Path(spec).expanduser()
    if not root.is_dir():
        if not hub.looks_like_repo_id(spec):
            raise GenerationInputError(
                f"custom_generate={spec!r} is neither a local directory nor a Hub repository id (\"org/name\")"
            )
        root = _hub_repository(spec, trust_remote_code, revision=revision, token=token, cache_dir=cache_dir,
                               local_files_only=local_files_only, force_download=force_download)
    script = root / _SCRIPT
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


def _hub_repository(repo_id: str, trust_remote_code: Optional[bool], *, revision: Optional[str],
                    cache_dir: Optional[str], force_download: bool, **download_options) -> Path:
    """The local snapshot of ``repo_id`` holding its custom_generate code: cached, or downloaded once trusted."""
    cached = hub.cached_snapshot(repo_id, revision, cache_dir)
    if cached is not None and (cached / _SCRIPT).is_file() and not force_download:
        return cached
    if trust_remote_code is not True:
        raise GenerationInputError(
            f"custom_generate={repo_id!r} is not a local directory, so it would be downloaded from the Hugging Face "
            "Hub and its custom_generate/generate.py run; pass trust_remote_code=True to allow it (only for a "
            "repository whose code you have read)"
        )
    return Path(hub.download_snapshot(repo_id, _HUB_PATTERNS, revision=revision, cache_dir=cache_dir,
                                      force_download=force_download, **download_options))


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
