"""Assisted (speculative) decoding: cheap candidates checked by the target model in one forward.

Each round a candidate generator (:mod:`.candidates`: prompt lookup, a draft model, or the target's
own first layers) proposes ``k`` tokens; one target forward over them gives ``k + 1`` distributions.
Greedy search keeps the candidates up to the first one the target would not have chosen, plus the
target's own next token; sampling with a draft model uses speculative sampling (Leviathan et al.,
2023), which keeps the target's distribution exactly; prompt lookup samples each position from the
target and keeps the matching prefix. Rejected positions are cropped off the caches. One row only, as
in transformers; encoder-decoder models draft decoder tokens (a draft model runs its own encoder once).
"""

from __future__ import annotations

from typing import Optional

import torch

from genplug import hookimpl
from genplug.errors import GenerationInputError
from genplug.models import ModelAdapter
from genplug.outputs import GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput
from genplug.step_inputs import StepInputs

from .candidates import DraftModelCandidates, OtherTokenizerDraftCandidates, PromptLookupCandidates


@torch.no_grad()
def assisted_generation(model, input_ids, logits_processor, stopping_criteria, generation_config,
                        synced_gpus=False, streamer=None, assistant_model=None, tokenizer=None,
                        assistant_tokenizer=None, inputs_tensor=None, **model_kwargs):
    """Generate for one row with candidates from ``assistant_model`` (with its own ``assistant_tokenizer``
    when the vocabularies differ: then ``tokenizer`` is the model's), the prompt, or early exit."""
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    config = generation_config
    _check(adapter, input_ids, config, model_kwargs)
    if config.output_attentions or config.output_hidden_states:
        raise GenerationInputError("assisted generation returns scores and logits, not attentions or hidden "
                                   "states; unset output_attentions / output_hidden_states")
    do_sample = bool(config.do_sample)
    max_length = stopping_criteria.max_length or config.max_length
    cache = model_kwargs.pop("past_key_values")
    model_kwargs.pop("use_cache", None)
    prompt_len = input_ids.shape[1]
    # for an encoder-decoder model the attention_mask is the encoder's: it stays in model_kwargs
    prompt_mask = None if adapter.is_encoder_decoder else model_kwargs.get("attention_mask")
    inputs = StepInputs.take(adapter, model_kwargs, 1, prompt_len, max_length, input_ids.device)
    eos = stopping_criteria.eos_token_ids
    generator = _candidate_generator(adapter, assistant_model, config, logits_processor, eos, max_length,
                                     prompt_mask, input_ids.device, tokenizer, assistant_tokenizer,
                                     encoder_inputs=(inputs_tensor, model_kwargs.get("attention_mask")))

    tokens = input_ids
    scores, raw_logits = [], []  # kept only when asked for
    first, done = True, False
    while not done:
        cur = tokens.shape[1]
        candidates, draft_scores = generator.candidates(tokens)
        # verify no more than can be kept, the last kept token being the target's own (never fed: a static
        # cache holds max_length - 1 tokens); transformers verifies all candidates, then drops the excess
        room = max_length - cur - 1
        if candidates.shape[1] > room:
            candidates = candidates[:, :room]
            draft_scores = None if draft_scores is None else draft_scores[:, :room]
        k = candidates.shape[1]
        proposal = torch.cat((tokens, candidates), dim=1)
        out = inputs.forward(adapter, proposal, 0 if first else cur - 1, cur + k, cache, model_kwargs,
                             use_cache=True, logits_to_keep=k + 1)
        logits = out.logits[:, -(k + 1):].to(dtype=torch.float32, copy=True)
        processed = logits.clone()
        if logits_processor:
            for i in range(k + 1):
                processed[:, i] = logits_processor(proposal[:, :cur + i], processed[:, i])
        weight = config.assistant_ensemble_weight
        if do_sample and draft_scores is not None:
            accepted = speculative_sampling(candidates, draft_scores, processed, weight)
        else:
            if do_sample:
                chosen = torch.multinomial(processed[0].softmax(dim=-1), num_samples=1).squeeze(1)[None, :]
            elif weight is not None and draft_scores is not None:  # pick from the blend of target and draft
                blend = weight * processed[:, :k].softmax(dim=-1) + (1.0 - weight) * draft_scores.softmax(dim=-1)
                chosen = torch.cat((blend.argmax(dim=-1), processed[:, k:].argmax(dim=-1)), dim=-1)
            else:
                chosen = processed.argmax(dim=-1)
            n_matches = int(((candidates != chosen[:, :-1]).cumsum(dim=-1) < 1).sum())
            accepted = chosen[:, :n_matches + 1]
        accepted = accepted[:, : max_length - cur]
        if eos is not None:
            at_eos = torch.isin(accepted[0], eos.to(accepted.device)).nonzero()
            if at_eos.numel():
                accepted = accepted[:, : int(at_eos[0]) + 1]
        n_matches = accepted.shape[1] - 1
        tokens = torch.cat((tokens, accepted), dim=1)
        if streamer is not None:
            streamer.put(accepted.cpu())
        cache.crop(n_matches - k)  # the target saw all k candidates; keep the n accepted ones
        generator.accepted(tokens.shape[1])
        generator.update(n_matches, k)
        if config.return_dict_in_generate and config.output_scores:
            scores.extend(processed[:, i] for i in range(n_matches + 1))
        if config.return_dict_in_generate and config.output_logits:
            raw_logits.extend(logits[:, i] for i in range(n_matches + 1))
        first = False
        done = tokens.shape[1] >= max_length or bool(stopping_criteria(tokens, processed[:, n_matches]).all())
    if streamer is not None:
        streamer.end()
    if getattr(generator, "schedule", None) == "heuristic" and assistant_model is not None:
        _remember_num_tokens(assistant_model, generator.num_tokens)
    if not config.return_dict_in_generate:
        return tokens
    output = GenerateEncoderDecoderOutput if adapter.is_encoder_decoder else GenerateDecoderOnlyOutput
    return output(sequences=tokens, scores=tuple(scores) if config.output_scores else None,
                  logits=tuple(raw_logits) if config.output_logits else None, past_key_values=cache)


def speculative_sampling(candidates: torch.LongTensor, draft_scores: torch.FloatTensor,
                         target_scores: torch.FloatTensor, ensemble_weight: Optional[float] = None) -> torch.LongTensor:
    """Leviathan et al.'s acceptance for one row: keep candidate ``i`` with probability
    ``min(1, p_i / q_i)`` until the first refusal, then draw from ``max(p - q, 0)`` there -- or from
    the target after the last candidate. The kept tokens are distributed as the target alone would
    sample them. ``[1, k]`` candidates, ``[1, k, V]`` draft and ``[1, k + 1, V]`` target scores.
    ``ensemble_weight`` w accepts with ``1 - w + w * p_i / q_i`` instead (trusting the draft more)."""
    k = candidates.shape[1]
    positions = torch.arange(k, device=candidates.device)
    q = draft_scores.softmax(dim=-1)
    p = target_scores.softmax(dim=-1)
    ratio = p[0, positions, candidates[0]] / q[0, positions, candidates[0]]
    if ensemble_weight is not None:
        ratio = 1.0 - ensemble_weight + ensemble_weight * ratio
    kept = int(((~(torch.rand_like(ratio) <= ratio)).cumsum(dim=-1) < 1).sum())
    if kept < k:
        residual = torch.clamp(p[:, kept] - q[:, kept], min=0)
        total = residual.sum()
        if ensemble_weight is not None and total <= torch.finfo(residual.dtype).tiny:
            residual = p[:, kept]  # nothing left of p beyond q: draw from the target
        else:
            residual = residual / total
    else:
        residual = p[:, kept]
    last = torch.multinomial(residual, num_samples=1)
    return torch.cat((candidates[:, :kept], last), dim=1)


def _candidate_generator(adapter, assistant_model, config, processors, eos, max_length, prompt_mask, device,
                         tokenizer=None, assistant_tokenizer=None, encoder_inputs=(None, None)):
    if config.use_mtp or config.speculation_type is not None:
        raise GenerationInputError(
            "use_mtp / speculation_type ask for drafting variants genplug does not provide (multi-token-prediction "
            "heads, DFlash); use assistant_model, prompt_lookup_num_tokens or assistant_early_exit")
    if config.prompt_lookup_num_tokens is not None:
        return PromptLookupCandidates(eos, config.prompt_lookup_num_tokens, config.max_matching_ngram_size or 2,
                                      max_length, processors, adapter.vocab_size)
    exit_layer = config.assistant_early_exit
    # the drafting settings: the assistant's own generation config first (where transformers reads
    # them), then this call's (which holds the defaults: 20 tokens, constant, threshold 0.4)
    own = getattr(assistant_model, "generation_config", None) if assistant_model is not None else None
    num_tokens = _first_set(getattr(own, "num_assistant_tokens", None), config.num_assistant_tokens, 20)
    schedule = _first_set(getattr(own, "num_assistant_tokens_schedule", None), config.num_assistant_tokens_schedule,
                          "constant")
    threshold = _first_set(getattr(own, "assistant_confidence_threshold", None), config.assistant_confidence_threshold)
    if assistant_model is not None:
        from genplug.plugin_manager import get_plugin_manager

        draft = get_plugin_manager().hook.genplug_adapt_model(model=assistant_model)
        draft.configure(config)  # e.g. a transformers draft runs on its native twin, as the target does
        if assistant_tokenizer is not None or tokenizer is not None:
            if assistant_tokenizer is None or tokenizer is None:
                raise GenerationInputError("assisted generation with the assistant's own tokenizer needs both "
                                           "tokenizer= (the model's) and assistant_tokenizer=")
            return OtherTokenizerDraftCandidates(draft, tokenizer, assistant_tokenizer, bool(config.do_sample),
                                                 num_tokens, schedule, max_length, device)
        if draft.vocab_size is not None and adapter.vocab_size is not None and draft.vocab_size != adapter.vocab_size:
            raise GenerationInputError(
                f"the assistant model's vocabulary ({draft.vocab_size}) differs from the model's "
                f"({adapter.vocab_size}); pass tokenizer= and assistant_tokenizer= to draft across tokenizers, or "
                "use an assistant of the same family or prompt_lookup_num_tokens")
        if draft.is_encoder_decoder != adapter.is_encoder_decoder:
            raise GenerationInputError("the assistant model must be encoder-decoder exactly when the model is")
    elif exit_layer is not None:
        draft = adapter  # self-speculation: the target's own first layers draft
        if adapter.is_encoder_decoder:
            raise GenerationInputError("assistant_early_exit is supported for decoder-only models only")
        if not adapter.accepts("exit_layer"):
            raise GenerationInputError(
                f"assistant_early_exit needs a model whose forward can stop after a few layers (exit_layer): "
                f"{type(adapter.model).__name__} cannot; genplug's native models and their twins can")
    else:
        raise GenerationInputError("assisted generation needs assistant_model, prompt_lookup_num_tokens or "
                                   "assistant_early_exit")
    inputs = StepInputs.take(draft, {"attention_mask": prompt_mask} if prompt_mask is not None else {}, 1,
                             prompt_mask.shape[1] if prompt_mask is not None else 0, max_length, device)
    extra = {"exit_layer": exit_layer} if assistant_model is None and exit_layer is not None else {}
    if draft.is_encoder_decoder:  # the draft's own encoder, run once on the call's encoder input
        encoder_ids, encoder_mask = encoder_inputs
        if encoder_ids is None:
            raise GenerationInputError("an encoder-decoder draft needs the encoder input ids of the call")
        extra = {"encoder_outputs": draft.encode(encoder_ids, {"attention_mask": encoder_mask}),
                 "attention_mask": encoder_mask}
    return DraftModelCandidates(draft, inputs, processors, bool(config.do_sample), eos, num_tokens, schedule,
                                threshold or None, max_length, extra=extra)


def _check(adapter, input_ids, config, model_kwargs) -> None:
    if input_ids.shape[0] != 1:
        raise GenerationInputError(
            f"assisted generation handles one row at a time (got a batch of {input_ids.shape[0]}, "
            "num_return_sequences included), as in transformers; generate the rows one by one")
    if getattr(adapter.model, "_is_stateful", False) or adapter.makes_own_cache():
        raise GenerationInputError(
            f"assisted generation is not supported with stateful models such as {type(adapter.model).__name__}: "
            "rejected candidates would have to be taken back out of a recurrent state, which cannot be undone "
            "(as in transformers); use greedy search or sampling")
    if model_kwargs.get("inputs_embeds") is not None:
        raise GenerationInputError("assisted generation drafts from and verifies token ids; pass the prompt as "
                                   "input_ids, not inputs_embeds")
    cache = model_kwargs.get("past_key_values")
    if not config.use_cache or cache is None:
        raise GenerationInputError("assisted generation needs a cache (use_cache=True)")
    record_past = getattr(cache, "activate_past_recording", None)
    if callable(record_past):
        record_past()  # transformers' convolution-state layers (LFM2) crop only what they recorded
    if "crop" not in getattr(cache, "capabilities", ("crop",)):
        raise GenerationInputError("assisted generation crops rejected candidates off the cache, which a "
                                   f"{type(cache).__name__} cannot do; use the dynamic cache")


def _first_set(*values):
    return next((v for v in values if v is not None), None)


def _remember_num_tokens(assistant_model, value: float) -> None:
    """transformers' "heuristic" schedule carries the learned length over to the next call."""
    generation_config = getattr(assistant_model, "generation_config", None)
    if generation_config is not None:
        try:
            generation_config.num_assistant_tokens = value
        except Exception:  # a frozen or foreign config: keep it as it is
            pass


@hookimpl
def genplug_register_strategies(register):
    register("assisted_generation", assisted_generation, requires=frozenset(),
             description="candidates from a draft model, the prompt (prompt lookup) or early exit, verified in one forward")
