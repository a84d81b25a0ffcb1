"""Logits processors: the base class, the list that runs them, and the context their factories get.

A processor is batched tensor code with transformers' signature ``(input_ids, scores) -> scores``.
Factories registered by plugins build processors once per generate() call from the config; the
token loop then calls the plain objects, never the plugin manager.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional

import attrs
import torch

from .stages import STAGE_RANK, STAGES


class LogitsProcessor:
    """Base class of every logits processor and warper (transformers' names and signature).

    Subclasses set two class attributes the loop uses:

    * ``compile_safe`` -- the call has no host synchronisation and no data-dependent shapes, so it can
      sit inside a compiled / CUDA-graph decode step.
    * ``argmax_invariant`` -- the processor never changes which token has the highest score (e.g.
      temperature, top-k). Greedy decoding skips such processors.
    """

    compile_safe: bool = True
    argmax_invariant: bool = False
    # How the processor reads input_ids: "none" (not at all), "set" (only which tokens occurred),
    # "length" (only input_ids.shape[-1]; the processor then also offers ``at_length(length, scores)``,
    # the same with the length as a 0-d device tensor), "prefix" (the tokens in order; it also offers
    # ``at_prefix(tokens, length, scores)``: the same over a fixed-size buffer whose first ``length``
    # columns are the tokens, with no host read), or "sequence" (anything else). The CUDA-graph loop
    # (genplug.graph_loop) feeds processors a fixed-size token buffer, so it takes all but "sequence".
    history_use: str = "sequence"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")

    def reorder(self, beam_idx: torch.LongTensor) -> None:
        """Follow a beam reordering; only processors with per-row state need this."""

    def fuse(self, following: Callable) -> Optional["LogitsProcessor"]:
        """One processor doing the work of ``self`` then ``following``, or None (the default).

        The fused processor must return the same scores bit for bit. LogitsProcessorList uses it to run
        neighbours together -- one copy of the scores for a run of in-place processors, one top-k
        shared by top-k, top-p and min-p -- while each processor stays usable alone.
        """
        return None


# transformers calls warpers "LogitsWarper"; they are the same kind of object here.
LogitsWarper = LogitsProcessor


class LogitsProcessorList(list):
    """An ordered list of processors, called in order on the scores of each step.

    Extra keyword arguments reach only the processors whose ``__call__`` declares them; which ones do
    is worked out when a processor is added, not on every step (transformers inspects signatures per
    call).
    """

    def __init__(self, processors: Iterable[Callable] = ()):
        super().__init__(processors)
        self._kwarg_takers: Optional[List[bool]] = None
        self._fused_key: Optional[tuple] = None
        self._fused_plan: List[Callable] = []

    def _fused(self) -> List[Callable]:
        """The processors with neighbours merged through ``fuse``; rebuilt when the list changes."""
        key = tuple(map(id, self))
        if key != getattr(self, "_fused_key", None):  # getattr: copies made without __init__
            plan: List[Callable] = []
            for processor in self:
                fuse = getattr(plan[-1], "fuse", None) if plan else None
                fused = fuse(processor) if fuse is not None else None
                if fused is None:
                    plan.append(processor)
                else:
                    plan[-1] = fused
            self._fused_key, self._fused_plan = key, plan
        return self._fused_plan

    def _takes_kwargs(self) -> List[bool]:
        if self._kwarg_takers is None or len(self._kwarg_takers) != len(self):
            self._kwarg_takers = [len(inspect.signature(p.__call__).parameters) > 2 for p in self]
        return self._kwarg_takers

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.FloatTensor:
        if not kwargs:
            for processor in self._fused():
                scores = processor(input_ids, scores)
            return scores
        for processor, takes in zip(self, self._takes_kwargs()):
            scores = processor(input_ids, scores, **kwargs) if takes else processor(input_ids, scores)
        return scores

    @property
    def compile_safe(self) -> bool:
        return all(getattr(p, "compile_safe", False) for p in self)

    def without_argmax_invariant(self) -> "LogitsProcessorList":
        """The processors that can change the argmax: all greedy decoding needs to run."""
        return LogitsProcessorList(p for p in self if not getattr(p, "argmax_invariant", False))


@attrs.define
class BuildContext:
    """What a processor or stopping-criterion factory may need besides the config, for one call.

    Tensors are on the device the decoding runs on. ``input_ids`` is the decoder prompt after
    expansion for beams / num_return_sequences (batch_size rows).
    """

    input_ids: torch.LongTensor
    vocab_size: int
    device: torch.device
    eos_token_ids: Optional[torch.LongTensor] = None  # 1-D, or None when EOS stopping is off
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    num_beams: int = 1
    strategy: str = "greedy_search"
    attention_mask: Optional[torch.Tensor] = None
    is_encoder_decoder: bool = False
    encoder_input_ids: Optional[torch.LongTensor] = None
    tokenizer: Any = None
    model: Any = None
    prefix_allowed_tokens_fn: Optional[Callable] = None
    negative_prompt_ids: Optional[torch.LongTensor] = None
    negative_prompt_attention_mask: Optional[torch.Tensor] = None
    model_kwargs: Dict[str, Any] = attrs.field(factory=dict)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1]

    @property
    def is_beam(self) -> bool:
        return self.strategy in ("beam_search", "beam_sample", "group_beam_search", "constrained_beam_search")

    @property
    def left_padding(self) -> torch.LongTensor:
        """Per-row count of left-padding tokens in the prompt (zeros without an attention mask)."""
        if self.attention_mask is None:
            return torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        return (self.attention_mask.cumsum(-1) == 0).sum(-1)


_ORDERED: Dict[tuple, tuple] = {}  # the entries (by identity) -> their order, for the registry's last states


def order_entries(entries) -> list:
    """Sort registry entries by stage, then by their before/after constraints, then by name.

    Deterministic whatever order plugins were loaded in. Unknown names in ``after``/``before`` are
    ignored (the processor they refer to may not be installed); a cycle is an error naming it. The
    order of a set of entries is kept (every generate() call asks for it; the sort took ~0.1 ms of a
    call's set-up): an entry is registered once, its options fixed.
    """
    entries = list(entries)
    key = tuple(id(e) for e in entries)
    kept = _ORDERED.get(key)
    if kept is None:
        if len(_ORDERED) >= 8:
            _ORDERED.clear()
        # the entries are kept with their order: no other object can take one of their ids while kept
        kept = _ORDERED[key] = (entries, _order(entries))
    return list(kept[1])


def _order(entries: list) -> list:
    by_stage: Dict[str, list] = {stage: [] for stage in STAGES}
    for entry in entries:
        by_stage[entry.options["stage"]].append(entry)
    ordered = []
    for stage in STAGES:
        ordered.extend(_topological(by_stage[stage]))
    return ordered


def _topological(entries: list) -> list:
    names = {e.name for e in entries}
    preds: Dict[str, set] = {e.name: set() for e in entries}
    for e in entries:
        for other in e.options.get("after", ()) or ():
            if other in names:
                preds[e.name].add(other)
        for other in e.options.get("before", ()) or ():
            if other in names:
                preds[other].add(e.name)
    by_name = {e.name: e for e in entries}
    result = []
    ready = sorted(n for n, p in preds.items() if not p)
    while ready:
        name = ready.pop(0)
        result.append(by_name[name])
        for other, p in preds.items():
            if name in p:
                p.discard(name)
                if not p and other not in {e.name for e in result} and other not in ready:
                    ready.append(other)
                    ready.sort()
    if len(result) != len(entries):
        stuck = sorted(set(names) - {e.name for e in result})
        raise ValueError(f"logits processors {stuck} have circular before/after constraints")
    return result


def stage_rank(stage: str) -> int:
    return STAGE_RANK[stage]
