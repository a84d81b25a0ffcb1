"""GenerationConfig.validate(): per-field checks, rules between fields, and "minor issues".

Hard errors raise GenerationConfigError naming the field, the value, the rule and the fix. Minor
issues -- flags that are set but will be ignored -- are collected and reported in one UserWarning, or
raised with ``strict=True`` (as ``save_pretrained`` does for configs changed since they were loaded).
The rules are transformers 5.23's plus the type and range checks its processors apply later.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, Optional, Set

from ..errors import GenerationConfigError, did_you_mean
from . import plugin_lookup
from .builtin_fields import FieldSpec, builtin_field_specs

# Arguments of generate() that users put into configs by mistake.
GENERATE_ONLY_ARGUMENTS = (
    "logits_processor",
    "stopping_criteria",
    "prefix_allowed_tokens_fn",
    "synced_gpus",
    "assistant_model",
    "streamer",
    "negative_prompt_ids",
    "negative_prompt_attention_mask",
    "custom_generate",
)

STATIC_CACHE_NAMES = (
    "static", "offloaded_static", "sliding_window", "hybrid", "hybrid_chunked",
    "offloaded_hybrid", "offloaded_hybrid_chunked",
)
OUTPUT_FLAGS = ("output_attentions", "output_hidden_states", "output_scores", "output_logits")
KNOWN_SPECULATION_TYPES = ("dflash",)


def field_error(spec: FieldSpec, value: Any, problem: str) -> GenerationConfigError:
    """``top_p=1.5 is outside (0, 1]: top_p is the probability mass to keep; use 1.0 to disable it``."""
    message = f"{spec.name}={value!r} {problem}: {spec.name} is {spec.help}"
    if spec.fix:
        message += f"; {spec.fix}"
    return GenerationConfigError(message)


def generate_only_error(name: str) -> GenerationConfigError:
    return GenerationConfigError(
        f"{name!r} is an argument of generate(), not a GenerationConfig field: pass it to generate() directly"
    )


def _should_warn(outer: str, inner: str, user_set: Optional[Set[str]]) -> bool:
    # Quiet only when the user set the mode flag but the ignored flag was inherited (e.g. from the
    # model's generation_config.json): generate(do_sample=False) on a sampling model is no mistake.
    if user_set is None:
        return True
    return not (outer in user_set and inner not in user_set)


def validate_config(
    config: Any, strict: bool = False, user_set_attributes: Optional[Iterable[str]] = None
) -> None:
    """Check ``config``; see :meth:`GenerationConfig.validate`."""
    user_set = None if user_set_attributes is None else set(user_set_attributes)
    _check_fields(config)
    _check_plugin_fields(config)
    _check_cache_implementation(config.cache_implementation)
    _check_speculation_type(config.speculation_type)
    _check_rules(config)
    if config.max_cache_len is not None and config.cache_implementation not in STATIC_CACHE_NAMES:
        warnings.warn(
            f"max_cache_len={config.max_cache_len} only sizes static caches; it is ignored with "
            f"cache_implementation={config.cache_implementation!r}",
            UserWarning,
            stacklevel=4,
        )
    issues = minor_issues(config, user_set)
    if not issues:
        return
    details = "; ".join(f"{name}: {why}" for name, why in issues.items())
    if strict:
        raise GenerationConfigError(f"GenerationConfig has settings that would be ignored: {details}")
    warnings.warn(
        f"these generation flags are set but will be ignored: {details}. If you did not set them, "
        "they may come from the model's generation_config.json.",
        UserWarning,
        stacklevel=4,
    )


def _check_fields(config: Any) -> None:
    for spec in builtin_field_specs(type(config)):
        value = getattr(config, spec.name)
        if value is None:
            continue
        problem = spec.check.problem(value)
        if problem:
            raise field_error(spec, value, problem)
    for name in config.custom_entries():
        if name in GENERATE_ONLY_ARGUMENTS:
            raise generate_only_error(name)
    if config.watermarking_config is not None:
        config.watermarking_config.validate()
    if config.compile_config is not None:
        config.compile_config.validate()


def _check_plugin_fields(config: Any) -> None:
    for name, (value, field) in config.plugin_field_items().items():
        if value is None or field is None or field.validator is None:
            continue
        try:
            field.validator(value)
        except Exception as exc:  # a validator's TypeError is as much a bad value as its ValueError
            provider = f" (field provided by {field.provider})" if field.provider else ""
            help_text = f": {name} is {field.help}" if field.help else ""
            raise GenerationConfigError(f"{name}={value!r} is invalid: {exc}{help_text}{provider}") from exc


def _check_cache_implementation(name: Optional[str]) -> None:
    if name is None or name == "hybrid":  # "hybrid" is always accepted: generate() resets it to None
        return
    known, registry = plugin_lookup.cache_backends()
    if not known:
        known = list(plugin_lookup.TRANSFORMERS_CACHE_IMPLEMENTATIONS)
        registry = {}
    if name in known:
        return
    detail = ""
    lookup = getattr(registry, "lookup", None)
    if callable(lookup):
        try:
            lookup(name, asked_by="cache_implementation")
        except Exception as exc:
            detail = f" ({exc})"
    if not detail:
        detail = f".{did_you_mean(name, known)} Known: {', '.join(known)}"
    raise GenerationConfigError(
        f"cache_implementation={name!r} is not a registered cache backend: cache_implementation names the KV "
        f"cache generate() builds{detail}"
    )


def _check_speculation_type(name: Optional[str]) -> None:
    if name is None or name in KNOWN_SPECULATION_TYPES:
        return
    known = list(KNOWN_SPECULATION_TYPES) + plugin_lookup.candidate_generator_names()
    if name not in known:
        raise GenerationConfigError(
            f"speculation_type={name!r} is not a known speculation type: speculation_type picks the speculative "
            f"decoding variant.{did_you_mean(name, known)} Known: {', '.join(known)}"
        )


def _check_rules(config: Any) -> None:
    """Rules between fields; every field already has the right type here."""
    beams = config.num_beams if config.num_beams is not None else 1
    sampling = config.do_sample is True
    if sampling and config.temperature is not None and config.temperature == 0:
        raise GenerationConfigError(
            f"temperature={config.temperature!r} with do_sample=True divides the logits by zero: temperature "
            "is the divisor of the logits before sampling; for greedy decoding use do_sample=False, otherwise "
            "use a temperature > 0"
        )
    returns = config.num_return_sequences
    if returns is not None and returns > 1:
        if beams == 1 and not sampling:
            raise GenerationConfigError(
                f"num_return_sequences={returns} needs several candidates, but greedy decoding (do_sample is not "
                f"True, num_beams=1) makes one per prompt; set do_sample=True or num_beams >= {returns}"
            )
        if beams > 1 and returns > beams:
            raise GenerationConfigError(
                f"num_return_sequences={returns} is more than num_beams={beams}: beam search returns at most one "
                f"sequence per beam; use num_beams >= {returns}"
            )
    groups = config.num_beam_groups
    if groups is not None and groups > 1 and beams % groups != 0:
        raise GenerationConfigError(
            f"num_beam_groups={groups} does not divide num_beams={beams}: group beam search splits the beams into "
            f"equal groups; use a num_beams that is a multiple of {groups}"
        )
    if config.diversity_penalty and (groups is None or groups <= 1):
        raise GenerationConfigError(
            f"diversity_penalty={config.diversity_penalty!r} needs num_beam_groups > 1: the penalty applies "
            "between beam groups; set num_beam_groups (and num_beams divisible by it) or use diversity_penalty=0.0"
        )
    if config.suppress_tokens:
        suppressed = set(config.suppress_tokens)
        for name in ("forced_bos_token_id", "forced_eos_token_id"):
            forced = getattr(config, name)
            if forced is None:
                continue
            forced = {forced} if not isinstance(forced, (list, tuple)) else set(forced)
            if forced and forced <= suppressed:
                raise GenerationConfigError(
                    f"{name}={getattr(config, name)!r} is also in suppress_tokens: forcing a suppressed token "
                    "leaves every logit at -inf and sampling produces nan; remove it from one of the two (to delay "
                    "EOS, use min_new_tokens instead)"
                )


def minor_issues(config: Any, user_set: Optional[Set[str]]) -> Dict[str, str]:
    """Flags that are set but will be ignored, name -> why (transformers 5.23's list, plus bos/eos)."""
    issues: Dict[str, str] = {}
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(config, name)
        ids = value if isinstance(value, (list, tuple)) else [value]
        if any(t is not None and t < 0 for t in ids):
            issues[name] = f"{name}={value!r} is negative, which breaks padding and stopping; set a real token id"
    if config.do_sample is not True:
        sampling_only = {
            "temperature": config.temperature not in (None, 1.0),
            "top_p": config.top_p not in (None, 1.0),
            "min_p": config.min_p is not None,
            "top_h": config.top_h is not None,
            "typical_p": config.typical_p not in (None, 1.0),
            "top_k": config.top_k not in (None, 50),
            "epsilon_cutoff": config.epsilon_cutoff not in (None, 0.0),
            "eta_cutoff": config.eta_cutoff not in (None, 0.0),
        }
        for name, is_set in sampling_only.items():
            if is_set and _should_warn("do_sample", name, user_set):
                value = getattr(config, name)
                issues[name] = f"{name}={value!r} only affects sampling; set do_sample=True or unset it"
    if config.num_beams is None or config.num_beams == 1:
        beam_only = {
            "early_stopping": config.early_stopping not in (None, False),
            "length_penalty": config.length_penalty not in (None, 1.0),
        }
        for name, is_set in beam_only.items():
            if is_set and _should_warn("num_beams", name, user_set):
                value = getattr(config, name)
                issues[name] = f"{name}={value!r} only affects beam search; set num_beams > 1 or unset it"
    if config.use_cache is False:
        for name in ("cache_implementation", "cache_config"):
            if getattr(config, name) is not None:
                issues[name] = f"{name} is set but use_cache=False, so no cache is built"
    if config.return_dict_in_generate is not True:
        for name in OUTPUT_FLAGS:
            if getattr(config, name) is True:
                issues[name] = f"{name}=True is only returned with return_dict_in_generate=True"
    return issues
