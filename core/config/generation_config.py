"""GenerationConfig: every generation setting of transformers 4.56 and 5.x, plus plugin-owned fields.

Every field defaults to None, meaning "unset": generate() fills unset fields from the model's
generation config, then from :meth:`GenerationConfig.default_values` (see :meth:`resolved`). Unknown
names are errors with a did-you-mean suggestion -- except in files, where unknown keys (Whisper's
``alignment_heads``, say) are kept as custom entries and written back.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import tempfile
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple

import attrs

from .. import hub
from ..errors import GenerationConfigError, did_you_mean
from . import plugin_lookup, serialization
from .builtin_fields import BUILTIN_FIELD_NAMES, BUILTIN_FIELD_SPECS, BuiltinFields
from .compile_config import compile_config_from
from .modes import GenerationMode, generation_mode
from .validation import GENERATE_ONLY_ARGUMENTS, generate_only_error, validate_config
from .watermarking import watermarking_config_from

# Unknown keys at least this similar to a field name are reported as probable typos (temprature: 0.95;
# Whisper's begin_suppress_ids vs begin_suppress_tokens: 0.82).
_TYPO_SIMILARITY = 0.85
_HUB_ONLY_KWARGS = (
    "cache_dir", "force_download", "local_files_only", "token", "revision", "proxies", "resume_download",
    "_from_auto", "_from_pipeline", "use_auth_token", "trust_remote_code",
)


@attrs.define(slots=False, init=False, eq=False, repr=False, on_setattr=attrs.setters.NO_OP)
class GenerationConfig(BuiltinFields):
    """The settings of one generate() call; None means "unset" (inherit, then use the default).

    The fields are declared in :mod:`genplug.config.builtin_fields`; plugin-owned fields and custom
    entries (unknown keys read from files) live beside them and read like attributes.
    """

    # ------------------------------------------------------------------------------------ building

    def __init__(self, **kwargs: Any) -> None:
        self._start_empty()
        for key, value in kwargs.items():
            self._assign(key, value, custom_ok=False)
        self.validate(user_set_attributes=set(kwargs))

    def _start_empty(self) -> None:
        self.__attrs_init__()
        state = {"_plugin_values": {}, "_plugin_specs": {}, "_custom": {}, "_loaded_fingerprint": None}
        state.update({name: None for name in serialization.METADATA_FIELDS})
        self.__dict__.update(state)

    @classmethod
    def _from_values(
        cls, values: Mapping[str, Any], *, custom_ok: bool, validate: bool = True
    ) -> "GenerationConfig":
        config = cls.__new__(cls)
        config._start_empty()
        for key, value in values.items():
            config._assign(key, value, custom_ok=custom_ok)
        if validate:
            config.validate(user_set_attributes=set(values))
        return config

    def _assign(self, key: str, value: Any, *, custom_ok: bool) -> None:
        """Store one setting; unknown keys become custom entries only where ``custom_ok``."""
        if key in BUILTIN_FIELD_NAMES or key in serialization.METADATA_FIELDS:
            setattr(self, key, value)
        elif key in serialization.DROPPED_ON_LOAD:
            return
        elif key in GENERATE_ONLY_ARGUMENTS:
            raise generate_only_error(key)
        elif self._plugin_field(key) is not None:
            self._plugin_values[key] = value
        elif custom_ok and isinstance(key, str):
            # Files carry model-specific keys (Whisper's alignment_heads); only warn about likely typos.
            typo_of = difflib.get_close_matches(key, self._known_names(), n=1, cutoff=_TYPO_SIMILARITY)
            if typo_of:
                warnings.warn(
                    f"unknown generation setting {key!r} is kept as a custom entry. Did you mean {typo_of[0]!r}?",
                    UserWarning,
                    stacklevel=4,
                )
            self._custom[key] = value
        else:
            raise self._unknown_name_error(key)

    def _plugin_field(self, name: str):
        """The ConfigField of plugin field ``name`` (looked up in the active plugin manager once), or None."""
        specs = self.__dict__["_plugin_specs"]
        if name not in specs:
            field = plugin_lookup.plugin_config_fields().get(name)
            if field is None:
                return None
            specs[name] = field
        return specs[name]

    def _known_names(self):
        return [*BUILTIN_FIELD_NAMES, *plugin_lookup.plugin_config_fields()]

    def _unknown_name_error(self, name: Any) -> GenerationConfigError:
        if not isinstance(name, str):
            return GenerationConfigError(f"{name!r} is not a field name: GenerationConfig field names are strings")
        owner = plugin_lookup.unloaded_owner_hint(name)
        if owner:
            return GenerationConfigError(f"{owner}; load the plugin to use {name!r}")
        message = f"{name!r} is not a GenerationConfig field.{did_you_mean(name, self._known_names())}"
        problem = plugin_lookup.manager_problem()
        if problem:
            message += f" (plugin fields are unavailable: {problem})"
        return GenerationConfigError(message)

    # ------------------------------------------------------------------------------------ attributes

    def __setattr__(self, name: str, value: Any) -> None:
        if name in BUILTIN_FIELD_NAMES:
            value = _convert(name, value)
        elif not (name.startswith("_") or name in serialization.METADATA_FIELDS):
            if name in self._custom:
                self._custom[name] = value
                return
            if self._plugin_field(name) is None:
                raise self._unknown_name_error(name)
            self._plugin_values[name] = value
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not built-in fields: plugin fields and custom entries.
        state = self.__dict__
        if name.startswith("_") or "_custom" not in state:
            raise AttributeError(name)
        if name in state["_custom"]:
            return state["_custom"][name]
        field = self._plugin_field(name)
        if field is None:
            suggestion = did_you_mean(name, self._known_names())
            raise AttributeError(f"GenerationConfig has no field {name!r}.{suggestion}")
        value = state["_plugin_values"].get(name)
        return field.default if value is None else value

    def custom_entries(self) -> Dict[str, Any]:
        """Settings kept from files that are neither built-in nor plugin fields (e.g. ``alignment_heads``)."""
        return dict(self._custom)

    def plugin_field_items(self) -> Dict[str, Tuple[Any, Any]]:
        """Plugin fields that were given a value: name -> (value, ConfigField or None if now unknown)."""
        return {name: (value, self._plugin_field(name)) for name, value in self._plugin_values.items()}

    @staticmethod
    def default_values() -> Dict[str, Any]:
        """The values unset fields take when neither the user nor the model sets them (transformers 5.23)."""
        return {spec.name: spec.default for spec in BUILTIN_FIELD_SPECS if spec.has_default}

    # ------------------------------------------------------------------------------------ behaviour

    def validate(self, strict: bool = False, user_set_attributes=None) -> None:
        """Raise GenerationConfigError on bad values; warn about flags that will be ignored (raise if strict).

        ``user_set_attributes`` names the fields the caller set: a sampling-only flag inherited from the
        model is not reported when the user explicitly asked for ``do_sample=False``.
        """
        validate_config(self, strict=strict, user_set_attributes=user_set_attributes)

    def get_generation_mode(self, assistant_model: Any = None) -> GenerationMode:
        """The decoding mode these settings select (transformers 5.23 precedence)."""
        return generation_mode(self, assistant_model)

    def update(
        self, defaults_only: bool = False, allow_custom_entries: bool = False, **kwargs: Any
    ) -> Dict[str, Any]:
        """Set the given fields and return the keyword arguments that are not fields.

        With ``defaults_only`` only unset fields change. ``allow_custom_entries`` keeps unknown keys as
        custom entries instead of returning them. The config is validated afterwards; if that fails the
        update is undone.
        """
        before = {**self.__dict__, "_custom": dict(self._custom), "_plugin_values": dict(self._plugin_values)}
        try:
            applied, unused = self._apply(kwargs, defaults_only, allow_custom_entries)
            self.validate(user_set_attributes=applied)
        except GenerationConfigError:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        return unused

    def _apply(self, kwargs: Dict[str, Any], defaults_only: bool, allow_custom_entries: bool):
        """:meth:`update` without the validation and the undo: ``(fields set, arguments that are not fields)``."""
        applied, unused = set(), {}
        for key, value in kwargs.items():
            known = key in BUILTIN_FIELD_NAMES or key in self._custom or self._plugin_field(key) is not None
            if not known and not (allow_custom_entries and key not in GENERATE_ONLY_ARGUMENTS):
                unused[key] = value
                continue
            if defaults_only and _stored(self, key) is not None:
                continue
            self._assign(key, value, custom_ok=True)
            applied.add(key)
        return applied, unused

    def resolved(self, model_generation_config: Any = None) -> "GenerationConfig":
        """A copy with every unset field filled: first from the model's generation config, then from defaults.

        This is the merge generate() performs before it applies its keyword overrides. Custom entries of
        the model's config are carried over; ``cache_implementation="hybrid"`` becomes None (dynamic).
        ``use_model_defaults=False`` skips the model's config.
        """
        user_set = {spec.name for spec in BUILTIN_FIELD_SPECS if getattr(self, spec.name) is not None}
        merged = copy.deepcopy(self)
        # filled without validating in between: the merged copy is validated once, below (every generate()
        # call resolves its config, and each validation is a walk over every field)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported once, below, with the user's provenance
            if model_generation_config is not None and self.use_model_defaults is not False:
                merged._apply(_model_settings(model_generation_config), defaults_only=True, allow_custom_entries=True)
            merged._apply(self.default_values(), defaults_only=True, allow_custom_entries=False)
        if merged.cache_implementation == "hybrid":
            merged.cache_implementation = None
        merged.validate(user_set_attributes=user_set | set(self._plugin_values))
        for name, field in plugin_lookup.plugin_config_fields().items():  # a plugin's own defaults
            if merged._plugin_values.get(name) is None and field.default is not None:
                merged._plugin_values[name] = copy.deepcopy(field.default)
        return merged

    # ------------------------------------------------------------------------------------ dicts and JSON

    def to_dict(self) -> Dict[str, Any]:
        """Every setting as JSON-ready values: built-in fields, plugin fields, custom entries, metadata."""
        out = {spec.name: _json_value(spec.name, getattr(self, spec.name)) for spec in BUILTIN_FIELD_SPECS}
        out.update({name: serialization.to_jsonable(v) for name, v in sorted(self._plugin_values.items())})
        out.update(copy.deepcopy(self._custom))
        out.update({name: getattr(self, name) for name in serialization.METADATA_FIELDS})
        return out

    def to_diff_dict(self) -> Dict[str, Any]:
        """Only what is set: fields that are not None, every custom entry, and metadata that is present."""
        custom = self._custom
        return {k: v for k, v in self.to_dict().items() if v is not None or k in custom}

    def to_json_string(self, use_diff: bool = True, ignore_metadata: bool = False, keys_to_pop=None) -> str:
        config_dict = self.to_diff_dict() if use_diff else self.to_dict()
        for key in [*(keys_to_pop or ()), *(serialization.METADATA_FIELDS if ignore_metadata else ())]:
            config_dict.pop(key, None)
        return serialization.dumps(config_dict)

    def to_json_file(self, json_file_path: "str | os.PathLike", use_diff: bool = True) -> None:
        text = self.to_json_string(use_diff=use_diff)
        with open(json_file_path, "w", encoding="utf-8") as writer:
            writer.write(text)

    @classmethod
    def from_dict(cls, config_dict: Mapping[str, Any], **kwargs: Any):
        """Build a config from a dict such as a parsed generation_config.json.

        Unknown keys of ``config_dict`` become custom entries. ``kwargs`` override it; unknown ``kwargs``
        are errors, or are returned with ``return_unused_kwargs=True`` as ``(config, unused)``.
        """
        if not isinstance(config_dict, Mapping):
            raise GenerationConfigError(
                f"from_dict needs a mapping of settings, got a {type(config_dict).__name__}"
            )
        return_unused = kwargs.pop("return_unused_kwargs", False)
        for key in _HUB_ONLY_KWARGS:
            kwargs.pop(key, None)
        if kwargs.pop("_from_model_config", False):
            config = cls.from_model_config(dict(config_dict))
        else:
            config = cls._from_values(config_dict, custom_ok=True, validate=False)
        unused = {}
        for key, value in kwargs.items():
            if key in BUILTIN_FIELD_NAMES or key in serialization.METADATA_FIELDS or config._plugin_field(key):
                config._assign(key, value, custom_ok=False)
            elif return_unused:
                unused[key] = value
            else:
                raise config._unknown_name_error(key)
        config.validate(user_set_attributes=set(config_dict) | set(kwargs))
        return (config, unused) if return_unused else config

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name: "str | os.PathLike",
        config_file_name: Optional[str] = None,
        cache_dir: "str | os.PathLike | None" = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: "str | bool | None" = None,
        revision: str = "main",
        *,
        proxies: Optional[Dict[str, str]] = None,
        subfolder: str = "",
        return_unused_kwargs: bool = False,
        **kwargs: Any,
    ):
        """Load generation_config.json from a local directory or file, or from a Hub repository id.

        A local path is always read locally, and the download options are then unused. Any other string
        shaped like a Hub repository id (``"org/name"``) is fetched with huggingface_hub into its cache
        (``cache_dir``) at ``revision``; ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` read the cache only.
        This is the only way from_pretrained reaches the network.
        """
        path = serialization.resolve_config_file(
            pretrained_model_name, config_file_name, subfolder, cache_dir=cache_dir, force_download=force_download,
            proxies=proxies, token=token, revision=revision, local_files_only=local_files_only,
        )
        data = serialization.read_json_object(path)
        try:
            result = cls.from_dict(data, return_unused_kwargs=return_unused_kwargs, **kwargs)
        except GenerationConfigError as exc:
            raise GenerationConfigError(f"while loading {path}: {exc}") from exc
        config = result[0] if return_unused_kwargs else result
        config._loaded_fingerprint = config._fingerprint()
        return result

    def save_pretrained(
        self,
        save_directory: "str | os.PathLike",
        config_file_name: Optional[str] = None,
        push_to_hub: bool = False,
        *,
        repo_id: Optional[str] = None,
        commit_message: Optional[str] = None,
        commit_description: Optional[str] = None,
        private: Optional[bool] = None,
        token: "str | bool | None" = None,
        create_pr: bool = False,
        revision: Optional[str] = None,
        **kwargs: Any,
    ) -> str:
        """Write the set fields to ``save_directory/generation_config.json``; return the file path.

        A config changed since it was loaded (or never loaded) is validated strictly, so settings that
        would be ignored are refused. ``compile_config`` is not saved (it is a run-time choice, and
        transformers refuses it in files). With ``push_to_hub=True`` the written file is then uploaded
        to the Hub repository ``repo_id`` (by default the directory's name, in your namespace), as
        :meth:`push_to_hub` does.
        """
        if push_to_hub and kwargs:
            raise TypeError(
                f"save_pretrained(push_to_hub=True) got unknown arguments {sorted(kwargs)}; it accepts repo_id, "
                "commit_message, commit_description, private, token, create_pr and revision"
            )
        modified = self._loaded_fingerprint != self._fingerprint()
        try:
            self.validate(strict=modified)
        except GenerationConfigError as exc:
            raise GenerationConfigError(f"{exc}. Fix these issues to save the configuration.") from exc
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"{save_directory!r} is a file; save_pretrained needs a directory")
        text = self.to_json_string(use_diff=True, keys_to_pop=["compile_config"])
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, config_file_name or serialization.GENERATION_CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as writer:
            writer.write(text)
        if push_to_hub:
            _upload(path, repo_id or os.path.basename(os.path.abspath(save_directory)), commit_message=commit_message,
                    commit_description=commit_description, private=private, token=token, create_pr=create_pr,
                    revision=revision)
        return path

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: Optional[str] = None,
        commit_description: Optional[str] = None,
        private: Optional[bool] = None,
        token: "str | bool | None" = None,
        revision: Optional[str] = None,
        create_pr: bool = False,
    ):
        """Upload this config as ``generation_config.json`` to the Hub repository ``repo_id``.

        The repository is created if missing (``private`` applies then); ``revision`` names the branch to
        commit to, and ``create_pr=True`` opens a pull request instead. Needs huggingface_hub; returns its
        CommitInfo. The file is exactly what :meth:`save_pretrained` writes.
        """
        with tempfile.TemporaryDirectory() as directory:
            path = self.save_pretrained(directory)
            return _upload(path, repo_id, commit_message=commit_message, commit_description=commit_description,
                           private=private, token=token, create_pr=create_pr, revision=revision)

    @classmethod
    def from_model_config(cls, model_config: Any) -> "GenerationConfig":
        """The generation settings stored in a (legacy) model config, object or dict.

        Only generation fields are read; values of a decoder sub-config (``decoder``, ``generator``,
        ``text_config``) fill what the outer config leaves unset. Marks the result ``_from_model_config``.
        """
        outer = serialization.model_config_dict(model_config)
        decoder = serialization.decoder_config_dict(model_config, outer)
        values = {k: v for k, v in outer.items() if k in BUILTIN_FIELD_NAMES and v is not None}
        for key, value in decoder.items():
            if key in BUILTIN_FIELD_NAMES and value is not None and key not in values:
                values[key] = value
        if outer.get("force_bos_token_to_be_generated") and values.get("bos_token_id") is not None:
            values.setdefault("forced_bos_token_id", values["bos_token_id"])
        if not values.get("return_dict_in_generate") and any(values.get(f) is True for f in _OUTPUT_FLAGS):
            values["return_dict_in_generate"] = True
        config = cls._from_values(values, custom_ok=False)
        config._from_model_config = True
        config._loaded_fingerprint = config._fingerprint()
        return config

    # ------------------------------------------------------------------------------------ object protocol

    def _fingerprint(self) -> str:
        diff = {k: v for k, v in self.to_diff_dict().items() if k not in serialization.METADATA_FIELDS}
        return json.dumps(serialization.to_jsonable(diff), sort_keys=True, default=repr)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, GenerationConfig):
            return NotImplemented
        return self._fingerprint() == other._fingerprint()

    def __hash__(self) -> int:
        return hash(self._fingerprint())

    def __repr__(self) -> str:
        values = [(s.name, getattr(self, s.name)) for s in BUILTIN_FIELD_SPECS] + list(self._plugin_values.items())
        items = [f"{k}={v!r}" for k, v in values if v is not None]
        items += [f"{k}={v!r}" for k, v in self._custom.items()]
        return f"{type(self).__name__}({', '.join(items)})"

    def __copy__(self) -> "GenerationConfig":
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        for key in ("_plugin_values", "_plugin_specs", "_custom"):
            new.__dict__[key] = dict(self.__dict__[key])
        return new

    def __deepcopy__(self, memo: dict) -> "GenerationConfig":
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if type(value) in _ATOMIC_TYPES:  # most fields: shared as they are (copy.deepcopy per value costs ~25 us a copy)
                new.__dict__[key] = value
            else:  # ConfigFields are immutable and may hold unpicklable validators: share them
                new.__dict__[key] = dict(value) if key == "_plugin_specs" else copy.deepcopy(value, memo)
        return new

    def __getstate__(self) -> Dict[str, Any]:
        return {**self.__dict__, "_plugin_specs": {}}  # looked up again after unpickling

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)


_ATOMIC_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes})
_OUTPUT_FLAGS = ("output_attentions", "output_hidden_states", "output_scores", "output_logits")


def _upload(path: str, repo_id: str, commit_message: Optional[str] = None, **options: Any):
    # transformers' default message for configuration classes
    return hub.upload_file(path, repo_id, path_in_repo=os.path.basename(path),
                           commit_message=commit_message or "Upload config", **options)


def _stored(config: GenerationConfig, key: str) -> Any:
    """The stored value of a field or custom entry, without plugin defaults."""
    if key in BUILTIN_FIELD_NAMES:
        return getattr(config, key)
    if key in config._custom:
        return config._custom[key]
    return config._plugin_values.get(key)


def _convert(name: str, value: Any) -> Any:
    """Turn JSON forms into the objects a field holds (settings classes, tuple-keyed sequence bias)."""
    if name == "watermarking_config":
        return watermarking_config_from(value)
    if name == "compile_config":
        return compile_config_from(value)
    if name == "continuous_batching_config" and value is not None:
        if not isinstance(value, dict) and callable(getattr(value, "to_dict", None)):
            value = value.to_dict()
        warnings.warn(
            "continuous_batching_config in GenerationConfig is deprecated (removed in transformers 5.19); "
            "pass continuous-batching settings separately",
            FutureWarning,
            stacklevel=4,
        )
        return value
    if name == "sequence_bias":
        return serialization.sequence_bias_from_json(value)
    return value


def _json_value(name: str, value: Any) -> Any:
    if name == "sequence_bias":
        value = serialization.sequence_bias_to_list(value)
    return serialization.to_jsonable(value)


def _model_settings(model_generation_config: Any) -> Dict[str, Any]:
    """The settings of a model's generation config (ours, transformers', or a dict), metadata left out."""
    if isinstance(model_generation_config, GenerationConfig):
        settings = {s.name: getattr(model_generation_config, s.name) for s in BUILTIN_FIELD_SPECS}
        settings.update(model_generation_config._plugin_values)
        settings.update(model_generation_config._custom)
    elif isinstance(model_generation_config, Mapping):
        settings = dict(model_generation_config)
    else:
        settings = serialization.model_config_dict(model_generation_config)
    return {
        k: v for k, v in settings.items()
        if v is not None and k not in serialization.METADATA_FIELDS and k not in serialization.DROPPED_ON_LOAD
    }
