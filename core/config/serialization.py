"""Reading and writing generation_config.json the way transformers does, and reading model configs.

Files written here load in transformers' ``GenerationConfig.from_pretrained`` and vice versa: nested
settings are plain dicts, ``sequence_bias`` is written in its list form (transformers writes dict keys
as strings like ``"(1, 2)"``, which this module also reads back), and tuples become lists.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from typing import Any, Dict, Mapping, Optional

from .. import hub
from ..errors import GenerationConfigError
from .checks import is_real

GENERATION_CONFIG_NAME = "generation_config.json"

# Written by transformers; kept as metadata, never compared or validated.
METADATA_FIELDS = ("_from_model_config", "transformers_version")
# Written by older transformers versions or only meaningful inside one process: dropped on load.
DROPPED_ON_LOAD = ("_commit_hash", "_original_object_hash")

_SEQUENCE_KEY = re.compile(r"^\(\s*-?\d+\s*(,\s*-?\d+\s*)*,?\s*\)$")


def to_jsonable(value: Any) -> Any:
    """A JSON-ready copy of ``value``: settings objects as dicts, tuples as lists, dict keys as strings.

    Values JSON cannot hold (e.g. constraint objects) are returned unchanged; :func:`dumps` then
    reports them.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else str(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):
        return to_jsonable(to_dict())
    return value


def sequence_bias_to_list(value: Any) -> Any:
    """``{(1, 2): 0.5}`` -> ``[[[1, 2], 0.5]]``: the form transformers can read back from JSON."""
    if not isinstance(value, dict):
        return value
    return [
        [list(ids) if isinstance(ids, (tuple, list)) else ids, float(bias) if is_real(bias) else bias]
        for ids, bias in value.items()
    ]


def sequence_bias_from_json(value: Any) -> Any:
    """Undo transformers' stringified tuple keys (``{"(1, 2)": 0.5}``); anything else is returned as is."""
    if not isinstance(value, dict) or not value:
        return value
    if not all(isinstance(k, str) and _SEQUENCE_KEY.match(k) for k in value):
        return value
    return {tuple(int(t) for t in k.strip("() ").split(",") if t.strip()): v for k, v in value.items()}


def dumps(config_dict: Mapping[str, Any]) -> str:
    """The JSON text of a config dict, sorted and indented like transformers' files."""

    def refuse(obj: Any) -> Any:
        owner = next((k for k, v in config_dict.items() if _contains(v, obj)), "?")
        raise GenerationConfigError(
            f"{owner}={config_dict.get(owner)!r} cannot be written to JSON: it holds a "
            f"{type(obj).__name__}; keep such objects out of saved configs and pass them to generate() instead"
        )

    return json.dumps(to_jsonable(dict(config_dict)), indent=2, sort_keys=True, default=refuse) + "\n"


def _contains(container: Any, obj: Any) -> bool:
    if container is obj:
        return True
    if isinstance(container, dict):
        return any(_contains(v, obj) for v in container.values())
    if isinstance(container, (list, tuple)):
        return any(_contains(v, obj) for v in container)
    return False


def read_json_object(path: str) -> Dict[str, Any]:
    """The JSON object in ``path``; a GenerationConfigError names the file and where parsing failed."""
    try:
        with open(path, "r", encoding="utf-8") as reader:
            text = reader.read()
    except UnicodeDecodeError as exc:
        raise GenerationConfigError(
            f"{path} is not a generation config: it is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GenerationConfigError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} (char {exc.pos})"
        ) from None
    if not isinstance(data, dict):
        raise GenerationConfigError(
            f"{path} holds a JSON {type(data).__name__}, but a generation config is a JSON object "
            '({"max_new_tokens": 32, ...})'
        )
    return data


def resolve_config_file(path: "str | os.PathLike", config_file_name: Optional[str], subfolder: str = "",
                        **download_options: Any) -> str:
    """The file ``from_pretrained(path)`` reads: ``path`` itself, ``config_file_name`` inside it, or that file
    downloaded from the Hub.

    A local file or directory is always read locally. Only a string that is not one and has the shape of a
    Hub repository id (``"org/name"``; a name ending in ``.json`` is taken for a file) is fetched from the Hub,
    with ``download_options`` (``revision``, ``cache_dir``, ``token``, ``local_files_only``, ...). A missing
    path raises OSError naming it.
    """
    path = os.fspath(path)
    if not path.lower().endswith(".json") and hub.looks_like_repo_id(path):
        return hub.download_file(path, config_file_name or GENERATION_CONFIG_NAME, subfolder=subfolder,
                                 **download_options)
    if subfolder:
        path = os.path.join(path, subfolder)
    if os.path.isfile(path) and config_file_name is None:
        return path
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path!r} does not exist: GenerationConfig.from_pretrained reads a local directory or file, or a "
            "Hugging Face Hub repository given by its id (\"org/name\")"
        )
    if not os.path.isdir(path):
        raise NotADirectoryError(
            f"{path!r} is a file, so config_file_name={config_file_name!r} cannot be inside it"
        )
    candidate = os.path.join(path, config_file_name or GENERATION_CONFIG_NAME)
    if not os.path.isfile(candidate):
        raise FileNotFoundError(f"{candidate!r} does not exist: the directory {path!r} has no generation config")
    return candidate


def model_config_dict(model_config: Any) -> Dict[str, Any]:
    """A transformers-style model config (object or dict) as a plain dict."""
    if isinstance(model_config, Mapping):
        return dict(model_config)
    if callable(getattr(model_config, "to_dict", None)):
        return dict(model_config.to_dict())
    if hasattr(model_config, "__dict__"):
        return dict(vars(model_config))
    raise GenerationConfigError(
        f"from_model_config got a {type(model_config).__name__}; expected a model config object or a dict"
    )


def decoder_config_dict(model_config: Any, as_dict: Dict[str, Any]) -> Dict[str, Any]:
    """The decoder part of a composite model config, where generation settings sometimes live."""
    if not isinstance(model_config, Mapping):
        get_text_config = getattr(model_config, "get_text_config", None)
        if callable(get_text_config):
            try:
                text_config = get_text_config(decoder=True)
            except Exception:
                text_config = None
            if text_config is not None and text_config is not model_config:
                return model_config_dict(text_config)
    for name in ("decoder", "generator", "text_config"):
        sub = as_dict.get(name)
        if sub:
            return model_config_dict(sub)
    return {}
