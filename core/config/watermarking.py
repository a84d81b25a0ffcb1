"""Settings for the two watermarking schemes, and their conversion from JSON dicts.

They are written to ``generation_config.json`` as plain dicts with transformers' key names, so files
move between genplug and transformers unchanged (transformers itself can only read back the
green-list scheme: it turns every dict into its ``WatermarkingConfig``).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Optional, Union

import attrs

from ..errors import GenerationConfigError, did_you_mean
from .checks import Flag, Integer, OneOf, Real, is_int, is_list


def _check_all(config: Any, owner: str, checks) -> None:
    """Run ``(field, check, what the field is)`` checks; the first problem raises."""
    for name, check, what in checks:
        value = getattr(config, name)
        problem = check.problem(value)
        if problem:
            raise GenerationConfigError(
                f"watermarking_config.{name}={value!r} {problem}: {name} is {what} ({owner})"
            )


class _WatermarkSettings:
    """Dict conversion shared by both schemes."""

    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(attrs.asdict(self, recurse=False))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path) -> None:
        with open(json_file_path, "w", encoding="utf-8") as writer:
            writer.write(self.to_json_string())

    @classmethod
    def from_dict(cls, config_dict: Dict[str, Any], **kwargs: Any):
        values = {**config_dict, **kwargs}
        names = [f.name for f in attrs.fields(cls)]
        for key in values:
            if key not in names:
                raise GenerationConfigError(
                    f"watermarking_config has the unknown key {key!r} for {cls.__name__}."
                    f"{did_you_mean(str(key), names)} Known keys: {', '.join(names)}"
                )
        missing = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING and f.name not in values]
        if missing:
            raise GenerationConfigError(f"watermarking_config for {cls.__name__} lacks {', '.join(missing)}")
        return cls(**values)

    def update(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            if hasattr(self, key):
                setattr(self, key, value)


@attrs.define
class WatermarkingConfig(_WatermarkSettings):
    """Green-list watermarking (Kirchenbauer et al., 2023): bias a pseudo-random part of the vocabulary.

    ``greenlist_ratio`` of the vocabulary, chosen from a hash of the previous ``context_width`` tokens
    (``seeding_scheme="lefthash"``) or of the candidate token too (``"selfhash"``), gets ``bias`` added
    to its logits; ``hashing_key`` seeds the hash.
    """

    greenlist_ratio: float = 0.25
    bias: float = 2.0
    hashing_key: int = 15485863
    seeding_scheme: str = "lefthash"
    context_width: int = 1

    def validate(self) -> None:
        _check_all(self, "green-list watermarking", (
            ("greenlist_ratio", Real(0.0, 1.0), "the share of the vocabulary that is green"),
            ("bias", Real(), "the value added to green logits"),
            ("hashing_key", Integer(-(2**63)), "the seed of the green-list hash"),
            ("seeding_scheme", OneOf(("lefthash", "selfhash")), "how the green list is seeded"),
            ("context_width", Integer(1), "how many previous tokens seed the hash"),
        ))


@attrs.define
class SynthIDTextWatermarkingConfig(_WatermarkSettings):
    """SynthID-Text watermarking (Dathathri et al., 2024): tournament sampling keyed by ``keys``.

    ``ngram_len`` tokens form each watermarking context, one key per tournament layer; the
    sampling table of ``sampling_table_size`` entries is drawn from ``sampling_table_seed``.
    """

    ngram_len: int
    keys: list
    context_history_size: int = 1024
    sampling_table_seed: int = 0
    sampling_table_size: int = 2**16
    skip_first_ngram_calls: bool = False
    debug_mode: bool = False

    def validate(self) -> None:
        owner = "SynthID-Text watermarking"
        if not is_list(self.keys) or not self.keys or not all(is_int(k) for k in self.keys):
            raise GenerationConfigError(
                f"watermarking_config.keys={self.keys!r} is not a non-empty list of ints: keys are the "
                f"watermarking keys, one per tournament layer ({owner})"
            )
        _check_all(self, owner, (
            ("ngram_len", Integer(1), "the length of each watermarking n-gram"),
            ("context_history_size", Integer(1), "how many contexts are remembered"),
            ("sampling_table_seed", Integer(-(2**63)), "the seed of the sampling table"),
            ("sampling_table_size", Integer(1), "the size of the sampling table"),
            ("skip_first_ngram_calls", Flag(), "whether the first n-grams are left unwatermarked"),
            ("debug_mode", Flag(), "whether logits are made uniform first (for tests)"),
        ))
        if self.sampling_table_size > 2**24:
            raise GenerationConfigError(
                f"watermarking_config.sampling_table_size={self.sampling_table_size} is more than 2**24: "
                f"the sampling table must fit in memory; use the default 2**16 ({owner})"
            )


AnyWatermarkingConfig = Union[WatermarkingConfig, SynthIDTextWatermarkingConfig]


def watermarking_config_from(value: Any) -> Optional[AnyWatermarkingConfig]:
    """Turn what a user or a JSON file gave into one of the two settings classes.

    A dict with ``ngram_len`` and ``keys`` is SynthID-Text, any other dict is green-list; an object
    from another library with a ``to_dict()`` (e.g. transformers' classes) is converted the same way.
    """
    if value is None or isinstance(value, (WatermarkingConfig, SynthIDTextWatermarkingConfig)):
        return value
    if not isinstance(value, dict) and callable(getattr(value, "to_dict", None)):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise GenerationConfigError(
            f"watermarking_config={value!r} is a {type(value).__name__}, expected a WatermarkingConfig, "
            "a SynthIDTextWatermarkingConfig or a dict of their settings"
        )
    for key in value:
        if not isinstance(key, str):
            raise GenerationConfigError(f"watermarking_config has the key {key!r}, but keys must be strings")
    if "ngram_len" in value and "keys" in value:
        return SynthIDTextWatermarkingConfig.from_dict(value)
    return WatermarkingConfig.from_dict(value)
