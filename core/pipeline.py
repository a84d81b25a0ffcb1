"""Assembling one call's pipeline from the registries: processors, stopping criteria and the cache.

This is where plugin registrations become plain objects, once per generate() call; the loop never
sees the plugin manager.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from .errors import GenerationInputError
from .processing import BuildContext, LogitsProcessorList, order_entries
from .stages import STAGE_RANK
from .stopping import StoppingCriteriaList


def build_logits_processors(registry, config, context: BuildContext,
                            user_processors: Optional[Iterable] = None) -> Tuple[LogitsProcessorList, List[str]]:
    """The processors the config enables, in stage order, with the caller's merged into the user stage.

    Returns the list and, parallel to it, the provider of each processor (for ``genplug explain``).
    A caller's processor of a type the config already builds is refused: two would run.
    """
    built = []
    user = list(user_processors or ())
    for entry in order_entries(registry.values()):
        processor = entry.obj(config, context)
        if processor is None:
            continue
        built.append((entry.options["stage"], processor, entry.provider))
    built_types = {type(p) for _, p, _ in built}
    for processor in user:
        if _same_kind(processor, built_types):
            raise GenerationInputError(
                f"logits_processor holds a {type(processor).__name__}, which the generation config already "
                f"builds; set the matching config field instead, or remove it from logits_processor"
            )
    user_rank = STAGE_RANK["user"]
    ordered = [(p, prov) for stage, p, prov in built if STAGE_RANK[stage] < user_rank]
    ordered += [(p, "caller (logits_processor=)") for p in user]
    ordered += [(p, prov) for stage, p, prov in built if STAGE_RANK[stage] >= user_rank]
    return LogitsProcessorList(p for p, _ in ordered), [prov for _, prov in ordered]


def build_stopping_criteria(registry, config, context: BuildContext,
                            user_criteria: Optional[Iterable] = None) -> Tuple[StoppingCriteriaList, List[str]]:
    """The criteria the config enables, by their declared order, then the caller's."""
    criteria, providers = [], []
    for entry in sorted(registry.values(), key=lambda e: (e.options.get("order", 100), e.name)):
        criterion = entry.obj(config, context)
        if criterion is not None:
            criteria.append(criterion)
            providers.append(entry.provider)
    built_types = {type(c) for c in criteria}
    for criterion in user_criteria or ():
        if _same_kind(criterion, built_types):
            raise GenerationInputError(
                f"stopping_criteria holds a {type(criterion).__name__}, which the generation config already "
                "builds; set the matching config field instead, or remove it from stopping_criteria"
            )
        criteria.append(criterion)
        providers.append("caller (stopping_criteria=)")
    return StoppingCriteriaList(criteria), providers


def _same_kind(obj, built_types: set) -> bool:
    """``obj`` is of a type the config builds -- or is transformers' class of that name, which a caller
    moving from transformers passes for the same job (and which would otherwise run twice)."""
    kind = type(obj)
    if kind in built_types:
        return True
    return kind.__module__.split(".")[0] == "transformers" and kind.__name__ in {t.__name__ for t in built_types}
