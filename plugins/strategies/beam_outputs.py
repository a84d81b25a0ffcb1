"""What the beam strategies share around the search itself: the per-step records (scores, logits,
attentions, hidden states), the output classes they fill, the fill value of unused positions, and
the cache reordering that follows the beams.
"""

from __future__ import annotations

from typing import Any, List, Optional

import torch

from genplug.errors import GenerationInputError
from genplug.outputs import GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput

BEAM_STRATEGIES = ("beam_search", "beam_sample", "group_beam_search", "constrained_beam_search")


def refuse_streamer(streamer: Any, strategy: str) -> None:
    """Beam strategies cannot stream: a token is final only once the search is over.

    transformers raises for beam search and silently ignores the streamer for beam sampling (it gets
    the prompt, never ``end()``); genplug raises for every beam strategy.
    """
    if streamer is not None:
        raise GenerationInputError(
            f"streamer={type(streamer).__name__}(...) cannot be used with {strategy}: beam search only knows which "
            "tokens it keeps once the search ends, so there is nothing to stream step by step. Remove the "
            "streamer, or use greedy search / sampling (num_beams=1) to stream."
        )


def fill_token(config) -> int:
    """The token written after a returned hypothesis that is shorter than the longest one.

    transformers 5.23 uses ``pad_token_id or eos_token_id[0]`` (so a pad id of 0 falls through to EOS)
    and -1 when there is no EOS id. genplug uses ``pad_token_id`` whenever it is set (generate() sets
    it to the first EOS id when only EOS is given), else 0: always a real token id, as the greedy
    loop pads finished rows.
    """
    return config.pad_token_id if config.pad_token_id is not None else 0


def cache_reorderer(adapter, cache: Any):
    """The function ``(cache, beam_idx) -> cache`` that makes cache row ``i`` hold what row
    ``beam_idx[i]`` held, looked up once per call.

    A model-level ``_reorder_cache`` (RAG, XLNet) wins, as in transformers; then the cache's
    ``reorder_cache``; a cache with neither is refused with the fix. The adapter's ``reorder_state``
    follows either (state kept on the model's modules).
    """
    model_reorder = getattr(adapter.model, "_reorder_cache", None)
    if not callable(model_reorder):
        if cache is not None and not callable(getattr(cache, "reorder_cache", None)):
            raise GenerationInputError(
                f"the cache ({type(cache).__name__}) has no reorder_cache(beam_idx): beam search moves cache rows "
                "between beams every step. Use a cache backend with the 'reorder' capability (e.g. "
                "cache_implementation='dynamic') or use_cache=False."
            )

        def model_reorder(cache, beam_idx):
            cache.reorder_cache(beam_idx)
            return cache

    def reorder(cache, beam_idx):
        cache = model_reorder(cache, beam_idx)
        adapter.reorder_state(beam_idx)  # state the model keeps outside the cache (RecurrentGemma's)
        return cache

    return reorder


class BeamRecorder:
    """Collects the per-step outputs the config asks for and builds the beam output object."""

    def __init__(self, config, is_encoder_decoder: bool):
        on = bool(config.return_dict_in_generate)
        self.return_dict = on
        self.is_encoder_decoder = is_encoder_decoder
        self.want_scores = on and bool(config.output_scores)
        self.want_logits = on and bool(config.output_logits)
        self.want_attentions = on and bool(config.output_attentions)
        self.want_hidden_states = on and bool(config.output_hidden_states)
        self.scores: List[torch.Tensor] = []
        self.logits: List[torch.Tensor] = []
        self._attentions: List[Any] = []
        self._cross: List[Any] = []
        self._hidden: List[Any] = []

    def record(self, scores: Optional[torch.Tensor], logits: torch.Tensor, outputs: Any) -> None:
        if self.want_scores and scores is not None:
            self.scores.append(scores)
        if self.want_logits:
            self.logits.append(logits)
        if self.want_attentions:
            if self.is_encoder_decoder:
                self._attentions.append(outputs.decoder_attentions)
                self._cross.append(outputs.cross_attentions)
            else:
                self._attentions.append(outputs.attentions)
        if self.want_hidden_states:
            self._hidden.append(outputs.decoder_hidden_states if self.is_encoder_decoder else outputs.hidden_states)

    def scores_so_far(self) -> Optional[tuple]:
        """What transformers hands stopping criteria as ``scores`` in beam search: every step's scores."""
        return tuple(self.scores) if self.want_scores else None

    def output(self, sequences, sequences_scores, beam_indices, steps: int, cache, model_kwargs):
        def cut(items):
            return tuple(items[:steps]) if items else None

        if not self.want_scores:
            sequences_scores = None
        if self.is_encoder_decoder:
            encoder_outputs = model_kwargs.get("encoder_outputs")
            return GenerateBeamEncoderDecoderOutput(
                sequences=sequences,
                sequences_scores=sequences_scores,
                scores=cut(self.scores),
                logits=cut(self.logits),
                beam_indices=beam_indices,
                encoder_attentions=getattr(encoder_outputs, "attentions", None) if self.want_attentions else None,
                encoder_hidden_states=(getattr(encoder_outputs, "hidden_states", None)
                                       if self.want_hidden_states else None),
                decoder_attentions=cut(self._attentions),
                cross_attentions=cut(self._cross),
                decoder_hidden_states=cut(self._hidden),
                past_key_values=cache,
            )
        return GenerateBeamDecoderOnlyOutput(
            sequences=sequences,
            sequences_scores=sequences_scores,
            scores=cut(self.scores),
            logits=cut(self.logits),
            beam_indices=beam_indices,
            attentions=cut(self._attentions),
            hidden_states=cut(self._hidden),
            past_key_values=cache,
        )


def stateful_processors(processors) -> list:
    """The processors that keep per-row state and must follow each beam reordering."""
    from genplug.processing import LogitsProcessor

    base = LogitsProcessor.reorder
    return [p for p in processors if callable(getattr(type(p), "reorder", None)) and type(p).reorder is not base]
