"""The generation modes and the rules that pick one from a config (transformers 5.23 precedence)."""

from __future__ import annotations

import enum
import warnings
from typing import Any


class GenerationMode(str, enum.Enum):
    """The decoding method a config asks for; values are transformers' snake_case names."""

    CONTRASTIVE_SEARCH = "contrastive_search"
    GREEDY_SEARCH = "greedy_search"
    SAMPLE = "sample"
    ASSISTED_GENERATION = "assisted_generation"
    DOLA_GENERATION = "dola_generation"
    BEAM_SEARCH = "beam_search"
    BEAM_SAMPLE = "beam_sample"
    CONSTRAINED_BEAM_SEARCH = "constrained_beam_search"
    GROUP_BEAM_SEARCH = "group_beam_search"

    def __str__(self) -> str:
        return self.value


_EXTENSIBLE = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)


def _base_mode(config: Any) -> GenerationMode:
    if config.constraints is not None or config.force_words_ids is not None:
        return GenerationMode.CONSTRAINED_BEAM_SEARCH  # even with num_beams=1, as in transformers
    if config.num_beams is None or config.num_beams == 1:
        if config.do_sample is True:
            return GenerationMode.SAMPLE
        contrastive = (
            config.top_k is not None and config.top_k > 1
            and config.penalty_alpha is not None and config.penalty_alpha > 0
        )
        return GenerationMode.CONTRASTIVE_SEARCH if contrastive else GenerationMode.GREEDY_SEARCH
    if config.num_beam_groups is not None and config.num_beam_groups > 1:
        return GenerationMode.GROUP_BEAM_SEARCH
    return GenerationMode.BEAM_SAMPLE if config.do_sample is True else GenerationMode.BEAM_SEARCH


def generation_mode(config: Any, assistant_model: Any = None) -> GenerationMode:
    """The mode ``config`` selects: the base mode, then the assisted overlay, then the DoLa overlay.

    An overlay only extends greedy search and sampling; on any other mode its flags are ignored
    with a warning (so DoLa plus prompt lookup stays assisted generation).
    """
    mode = _base_mode(config)
    assisted = (
        assistant_model is not None
        or config.use_mtp
        or config.prompt_lookup_num_tokens is not None
        or config.assistant_early_exit is not None
        # a candidate generator a plugin registered (transformers' own "dflash" needs an assistant_model)
        or (config.speculation_type is not None and config.speculation_type != "dflash")
    )
    if assisted:
        if mode in _EXTENSIBLE:
            mode = GenerationMode.ASSISTED_GENERATION
        else:
            warnings.warn(
                f"assisted generation (assistant_model, use_mtp, prompt_lookup_num_tokens or "
                f"assistant_early_exit) only extends greedy search and sampling, but the other settings "
                f"select {mode.value}; the assisted settings are ignored",
                UserWarning,
                stacklevel=3,
            )
    if config.dola_layers is not None:
        if mode in _EXTENSIBLE:
            mode = GenerationMode.DOLA_GENERATION
        else:
            warnings.warn(
                f"dola_layers only extends greedy search and sampling, but the other settings select "
                f"{mode.value}; dola_layers is ignored",
                UserWarning,
                stacklevel=3,
            )
    return mode
