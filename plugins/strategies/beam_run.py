"""The model side every beam strategy shares: the cache, the per-step inputs, the recorder, reordering.

Beam search, diverse beam search and constrained beam search differ in how they pick beams, not in
how they run the model; this keeps that part in one place.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from genplug.models import ModelAdapter, returned_cache
from genplug.step_inputs import StepInputs

from .beam_outputs import BeamRecorder, cache_reorderer, stateful_processors


class BeamModelRun:
    """Runs the model for a beam strategy and follows its beam reorderings.

    Takes ``past_key_values`` / ``use_cache`` / the masks out of ``model_kwargs``; ``cache`` is the
    live cache (the model's own one after the prefill when none was given).
    """

    def __init__(self, adapter: ModelAdapter, config, logits_processor, model_kwargs: Dict[str, Any], rows: int,
                 prompt_len: int, max_length: int, device: torch.device):
        self.adapter = adapter
        self.model_kwargs = model_kwargs
        self.recorder = BeamRecorder(config, adapter.is_encoder_decoder)
        self.cache = model_kwargs.pop("past_key_values", None)
        self.use_cache = bool(model_kwargs.pop("use_cache", True))
        self.inputs = StepInputs.take(adapter, model_kwargs, rows, prompt_len, max_length, device)
        self.prefill_chunk_size = getattr(config, "prefill_chunk_size", None)
        self.followers = stateful_processors(logits_processor)
        self._reorder = None

    def forward(self, tokens: torch.Tensor, start: int, end: int):
        """The model on ``tokens[:, start:end]`` (``start`` is ignored without a cache: all is recomputed)."""
        options = dict(output_attentions=self.recorder.want_attentions,
                       output_hidden_states=self.recorder.want_hidden_states)
        if start == 0 and self.use_cache:  # the prompt: in pieces with prefill_chunk_size
            outputs = self.inputs.prefill(self.adapter, tokens, end, self.cache, self.model_kwargs, use_cache=True,
                                          chunk_size=self.prefill_chunk_size, **options)
        else:
            outputs = self.inputs.forward(self.adapter, tokens, start if self.use_cache else 0, end, self.cache,
                                          self.model_kwargs, use_cache=self.use_cache, **options)
        if self.use_cache and self.cache is None:  # the model made its own cache
            self.cache = returned_cache(outputs)
        return outputs

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Make the cache and stateful processors follow the rows each beam now continues."""
        if self.use_cache:
            if self._reorder is None:
                self._reorder = cache_reorderer(self.adapter, self.cache)
            self.cache = self._reorder(self.cache, beam_idx)
        for processor in self.followers:
            processor.reorder(beam_idx)

    def graphed_forward(self, tokens: torch.Tensor, prompt_len: int, max_length: int, config, synced_gpus: bool):
        """The one-token forward replayed from a CUDA graph (:mod:`genplug.graphed_forward`) where it can be:
        as for greedy search, plus a cache that the beams reorder in place (static layers do; a model's own
        ``_reorder_cache`` may hand back another cache). None: the loop runs :meth:`forward`."""
        from genplug import graphed_forward

        if not self.use_cache or max_length - prompt_len <= 1 or callable(getattr(self.adapter.model, "_reorder_cache", None)):
            return None
        if self.inputs.refills_between(prompt_len, max_length) or not graphed_forward.graphed_forward_possible(
                self.adapter, self.cache, config, self.inputs,
                self.recorder.want_attentions or self.recorder.want_hidden_states, synced_gpus):
            return None
        return graphed_forward.graphed_forward(self.adapter, self.cache, tokens, self.inputs.mask, prompt_len, config)

    @property
    def returned_cache(self):
        return self.cache if self.use_cache else None


def stopped_everywhere(stopped_here: bool, device) -> bool:
    """synced_gpus: whether every rank has stopped (every rank calls this at every step)."""
    import torch.distributed as dist

    running = torch.tensor(0.0 if stopped_here else 1.0, device=device)
    dist.all_reduce(running, op=dist.ReduceOp.SUM)
    return running.item() == 0.0
