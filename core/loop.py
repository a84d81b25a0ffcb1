"""The step loop shared by greedy search and sampling.

Prefill once, then one token per step through the cache. Everything per step is tensor work on the
device: the output buffer is preallocated, finished rows are tracked as a bool tensor, and the host
looks at "is every row finished?" only once every ``stop_check_interval`` steps. Steps run past the
point where every row finished are cut off afterwards, so the output is the same for every interval.
"""

from __future__ import annotations

from typing import Any, List

import torch

from . import graphed_forward, prefill_graph
from .graph_loop import graph_decode, graph_decode_possible
from .models import ModelAdapter, returned_cache
from .outputs import GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput
from .processing import LogitsProcessorList
from .step_inputs import StepInputs
from .stopping import StoppingCriteriaList

DEFAULT_STOP_CHECK_INTERVAL = 8


@torch.no_grad()
def decode(model, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList,
           stopping_criteria: StoppingCriteriaList, generation_config, synced_gpus: bool = False,
           streamer=None, do_sample: bool = False, **model_kwargs: Any):
    """Generate tokens after ``input_ids`` until every row is stopped or ``max_length`` is reached.

    ``model`` is a :class:`ModelAdapter` (or a model, adapted here). ``model_kwargs`` holds
    ``attention_mask``, ``past_key_values`` (the cache, or None to recompute without one),
    ``encoder_outputs`` and any extra model arguments.
    """
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    config = generation_config
    batch, prompt_len = input_ids.shape
    max_length = stopping_criteria.max_length or config.max_length
    device = input_ids.device
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    has_eos = stopping_criteria.has_eos

    want = StepRecorder(config, adapter.is_encoder_decoder)
    # Greedy search may skip argmax-invariant warpers unless their scores are returned; sampling needs them.
    processors = logits_processor if (do_sample or want.scores) else logits_processor.without_argmax_invariant()

    cache = model_kwargs.pop("past_key_values", None)
    use_cache = bool(model_kwargs.pop("use_cache", True))
    step_inputs = StepInputs.take(adapter, model_kwargs, batch, prompt_len, max_length, device)
    mask = step_inputs.mask

    tokens = input_ids.new_full((batch, max_length), pad)
    tokens[:, :prompt_len] = input_ids
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    generated = torch.zeros((), dtype=torch.long, device=device)  # tokens until every row stopped

    def forward(start: int, end: int):
        return step_inputs.forward(adapter, tokens, start, end, cache, model_kwargs, use_cache=use_cache,
                                   output_attentions=want.attentions, output_hidden_states=want.hidden_states)

    chunk_size = getattr(config, "prefill_chunk_size", None)

    def eager_prefill():
        return step_inputs.prefill(adapter, tokens, prompt_len, cache, model_kwargs, use_cache=use_cache,
                                   chunk_size=chunk_size, output_attentions=want.attentions,
                                   output_hidden_states=want.hidden_states)

    crosses_refill = step_inputs.refills_between(prompt_len, max_length)  # the CUDA-graph step never refills

    def graph_loop_possible() -> bool:
        return use_cache and cache is not None and step_inputs.takes_tokens_only and not crosses_refill and (
            graph_decode_possible(adapter, processors, stopping_criteria, config, cache, streamer, synced_gpus) is None)

    def graphed_forward_possible() -> bool:  # (asked only where the whole-step graph is not possible)
        return use_cache and max_length - prompt_len > 1 and not crosses_refill and (
            graphed_forward.graphed_forward_possible(adapter, cache, config, step_inputs,
                                                     want.attentions or want.hidden_states, synced_gpus))

    if (prefill_graph.ENABLED and use_cache and cache is not None and step_inputs.embeds is None
            and not step_inputs.prompt_only and not chunk_size):
        # opt-in: replayed from a CUDA graph where an earlier call with a prompt of this shape captured it
        outputs = prefill_graph.prefill(
            adapter, cache, tokens[:, :prompt_len], None if step_inputs.mask is None else step_inputs.mask[:, :prompt_len],
            None if step_inputs.positions is None else step_inputs.positions[..., :prompt_len], model_kwargs,
            eager_prefill, lambda: graph_loop_possible() or graphed_forward_possible())  # either keeps the cache
        step_inputs.prompt_fed = True
    else:
        outputs = eager_prefill()
    if use_cache and cache is None:  # the model made its own cache
        cache = returned_cache(outputs)
    interval = 1 if (streamer is not None or synced_gpus) else int(
        getattr(config, "stop_check_interval", None) or DEFAULT_STOP_CHECK_INTERVAL)
    if use_cache and not adapter.can_crop(cache):
        interval = 1  # steps past the stop could not be undone in the returned cache
    if graph_loop_possible():
        sequences, n_generated = graph_decode(adapter, input_ids, mask, outputs.logits[:, -1, :], processors,
                                              stopping_criteria, config, cache, do_sample, max_length, interval,
                                              streamer)
        if streamer is not None:
            streamer.end()
        if not config.return_dict_in_generate:
            return sequences
        return want.output(sequences, n_generated, cache, model_kwargs)
    # the one-token forward replayed from a CUDA graph where the whole step could not be (host-side criteria,
    # callbacks, per-step scores): the forward itself needs no host
    graphed = None
    if graphed_forward_possible():
        graphed = graphed_forward.graphed_forward(adapter, cache, tokens, mask, prompt_len, config)
    per_step_criteria = stopping_criteria.per_step()
    # the last position's logits are copied only where something keeps or changes them (processors work in
    # place, recorded scores and logits are kept); a token choice alone reads them where they are
    copy_logits = bool(processors) or want.scores or want.logits
    cur = prompt_len
    steps_run = 0
    while True:
        logits = outputs.logits[:, -1]
        if copy_logits or logits.dtype != torch.float32 or logits.device != device:  # else a no-op (~0.7 us a step)
            logits = logits.to(dtype=torch.float32, device=device, copy=copy_logits)
        scores = processors(tokens[:, :cur], logits) if processors else logits
        want.record(scores, logits, outputs)
        if do_sample:
            next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            next_tokens = torch.argmax(scores, dim=-1)
        if has_eos:
            next_tokens = torch.where(unfinished, next_tokens, pad)
        tokens[:, cur] = next_tokens
        cur += 1
        steps_run += 1
        if streamer is not None:
            streamer.put(next_tokens.cpu())
        if per_step_criteria:  # else no row can stop before max_length: nothing to track
            generated += unfinished.any()
        if cur >= max_length:
            if synced_gpus:  # the other ranks may still be decoding: keep their forwards company
                idle_until_all_finished(
                    lambda: step_inputs.forward(adapter, tokens, 0, cur, None, model_kwargs, use_cache=False),
                    lambda: _all_finished(torch.zeros_like(unfinished), True))
            break
        if per_step_criteria:
            unfinished &= ~per_step_criteria(tokens[:, :cur], scores)
        if (per_step_criteria or synced_gpus) and steps_run % interval == 0 and _all_finished(unfinished, synced_gpus):
            break
        del outputs
        if graphed is not None:
            outputs = graphed.forward(tokens[:, cur - 1:cur])
        else:
            outputs = forward(cur - 1, cur) if use_cache else forward(0, cur)

    n_generated = int(generated) if per_step_criteria else steps_run  # the one host read of the length
    end = prompt_len + n_generated
    if graphed is not None:
        graphed.crop(n_generated)  # the graph writes the cache without moving its counters
    elif steps_run > n_generated and use_cache:
        cache.crop(n_generated - steps_run)  # negative: remove that many; transformers' caches take only this form
    if streamer is not None:
        streamer.end()
    sequences = tokens[:, :end]
    if not config.return_dict_in_generate:
        return sequences
    return want.output(sequences, n_generated, cache if use_cache else None, model_kwargs)


def idle_until_all_finished(idle_forward, all_finished) -> None:
    """synced_gpus, on a rank that cannot decode further (``max_length``): take part in the other ranks'
    "all finished?" checks (``all_finished()``, the same collective they call, saying this rank is done) and
    run ``idle_forward`` (a forward whose result is dropped) after each that says no, so a sharded model
    sees every rank in every forward."""
    while not all_finished():
        idle_forward()


def _all_finished(unfinished: torch.Tensor, synced_gpus: bool) -> bool:
    if synced_gpus:
        import torch.distributed as dist

        flag = unfinished.any().to(torch.float32)
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
        return flag.item() == 0.0
    return not bool(unfinished.any())


class StepRecorder:
    """Collects the per-step scores, logits, attentions and hidden states the config asks for, and builds the
    output class from them (the greedy / sampling loop's, and assisted decoding's one entry per token)."""

    def __init__(self, config, is_encoder_decoder: bool):
        on = bool(config.return_dict_in_generate)
        self.is_encoder_decoder = is_encoder_decoder
        self.scores = on and bool(config.output_scores)
        self.logits = on and bool(config.output_logits)
        self.attentions = on and bool(config.output_attentions)
        self.hidden_states = on and bool(config.output_hidden_states)
        self._scores: List[torch.Tensor] = []
        self._logits: List[torch.Tensor] = []
        self._attn: List[Any] = []
        self._cross: List[Any] = []
        self._hidden: List[Any] = []

    def record(self, scores, logits, outputs) -> None:
        if self.scores:
            self._scores.append(scores)
        if self.logits:
            self._logits.append(logits)
        if self.attentions:
            if self.is_encoder_decoder:
                self._attn.append(outputs.decoder_attentions)
                self._cross.append(outputs.cross_attentions)
            else:
                self._attn.append(outputs.attentions)
        if self.hidden_states:
            self._hidden.append(outputs.decoder_hidden_states if self.is_encoder_decoder else outputs.hidden_states)

    def output(self, sequences, steps: int, cache, model_kwargs):
        def cut(items):
            return tuple(items[:steps]) if items else None

        if self.is_encoder_decoder:
            encoder_outputs = model_kwargs.get("encoder_outputs")
            return GenerateEncoderDecoderOutput(
                sequences=sequences,
                scores=cut(self._scores),
                logits=cut(self._logits),
                encoder_attentions=getattr(encoder_outputs, "attentions", None) if self.attentions else None,
                encoder_hidden_states=getattr(encoder_outputs, "hidden_states", None) if self.hidden_states else None,
                decoder_attentions=cut(self._attn),
                cross_attentions=cut(self._cross),
                decoder_hidden_states=cut(self._hidden),
                past_key_values=cache,
            )
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=cut(self._scores),
            logits=cut(self._logits),
            attentions=cut(self._attn),
            hidden_states=cut(self._hidden),
            past_key_values=cache,
        )
