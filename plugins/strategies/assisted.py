"""Assisted (speculative) decoding: cheap candidates checked by the target model in one forward.

Each round a candidate generator (:mod:`.candidates`: prompt lookup, a draft model, or the target's
own first layers) proposes ``k`` tokens; one target forward over them gives ``k + 1`` distributions.
Greedy search keeps the candidates up to the first one the target would not have chosen, plus the
target's own next token; sampling with a draft model uses speculative sampling (Leviathan et al.,
2023), which keeps the target's distribution exactly; prompt lookup samples each position from the
target and keeps the matching prefix. Rejected positions are cropped off the caches. Encoder-decoder
models draft decoder tokens (a draft model runs its own encoder once).

Batches (transformers takes one row): each row is checked on its own, then every row keeps as many
tokens as the row that matched least, so the rows stay aligned in one cache; the others' extra
matches are dropped, not wrong -- the token a row keeps at that position is the target's own choice.
"""

from __future__ import annotations

from typing import Optional

import torch

from genplug import hookimpl
from genplug.config.validation import KNOWN_SPECULATION_TYPES
from genplug.errors import GenerationInputError
from genplug.models import ModelAdapter
from genplug.step_inputs import StepInputs

from .assisted_outputs import AssistedOutputs
from .candidates import (CandidateContext, DraftModelCandidates, OtherTokenizerDraftCandidates,
                         PromptLookupCandidates, keeps_recurrent_state)


@torch.no_grad()
def assisted_generation(model, input_ids, logits_processor, stopping_criteria, generation_config,
                        synced_gpus=False, streamer=None, assistant_model=None, tokenizer=None,
                        assistant_tokenizer=None, inputs_tensor=None, **model_kwargs):
    """Generate with candidates from ``assistant_model`` (with its own ``assistant_tokenizer`` when the
    vocabularies differ: then ``tokenizer`` is the model's), the prompt, early exit, or a plugin's generator
    (``speculation_type``)."""
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    config = generation_config
    _check(adapter, input_ids, config, model_kwargs)
    do_sample = bool(config.do_sample)
    max_length = stopping_criteria.max_length or config.max_length
    cache = model_kwargs.pop("past_key_values")
    model_kwargs.pop("use_cache", None)
    rows, prompt_len = input_ids.shape
    # for an encoder-decoder model the attention_mask is the encoder's: it stays in model_kwargs
    prompt_mask = None if adapter.is_encoder_decoder else model_kwargs.get("attention_mask")
    inputs = StepInputs.take(adapter, model_kwargs, rows, prompt_len, max_length, input_ids.device)
    eos = stopping_criteria.eos_token_ids
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    generator = _candidate_generator(config, CandidateContext(
        adapter, input_ids, logits_processor, eos, max_length, input_ids.device, prompt_mask, assistant_model,
        tokenizer, assistant_tokenizer, encoder_inputs=(inputs_tensor, model_kwargs.get("attention_mask"))))

    verified = getattr(generator, "verified", None)  # optional: per-row outcomes (a draft tunes its threshold)
    tokens = input_ids
    finished = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
    recorded = AssistedOutputs(config, adapter.is_encoder_decoder)  # what the config asks to return
    first, done = True, False
    while True:
        if synced_gpus and _synced_round_over(done, tokens.device):
            break
        if done:
            if not synced_gpus:
                break
            _idle_forward(adapter, inputs, tokens, model_kwargs)  # this rank is done; the others still step
            continue
        cur = tokens.shape[1]
        candidates, draft_scores, lengths = _proposed(generator.candidates(tokens))
        # verify no more than can be kept, the last kept token being the target's own (never fed: a static
        # cache holds max_length - 1 tokens); transformers verifies all candidates, then drops the excess
        room = max_length - cur - 1
        if candidates.shape[1] > room:
            candidates = candidates[:, :room]
            draft_scores = None if draft_scores is None else draft_scores[:, :room]
        k = candidates.shape[1]
        lengths = lengths.clamp(max=k)
        proposal = torch.cat((tokens, candidates), dim=1)
        out = inputs.forward(adapter, proposal, 0 if first else cur - 1, cur + k, cache, model_kwargs,
                             use_cache=True, logits_to_keep=k + 1, output_attentions=recorded.attentions,
                             output_hidden_states=recorded.hidden_states)
        logits = out.logits[:, -(k + 1):].to(dtype=torch.float32, copy=True)
        processed = logits.clone()
        if logits_processor:
            for i in range(k + 1):
                processed[:, i] = logits_processor(proposal[:, :cur + i], processed[:, i])
        chosen, matches = _round_choice(candidates, draft_scores, processed, lengths, do_sample,
                                        config.assistant_ensemble_weight)
        # every row keeps as many tokens as the row that matched least (rows that stopped do not count), so
        # the rows stay aligned in the cache; a row that matched more keeps its candidate, which is the
        # target's own choice there
        n_matches = int(torch.where(finished, k, matches).min()) if rows > 1 else int(matches[0])
        accepted = chosen[:, :n_matches + 1][:, : max_length - cur]
        running = ~finished
        if eos is not None:
            accepted, finished_now = _pad_after_eos(accepted, finished, eos, pad)
            if bool(finished_now.all()):  # cut at the last row's EOS: nothing follows it
                accepted = accepted[:, :int(_first_eos(accepted, finished, eos).max()) + 1]
            finished = finished_now
        kept = accepted.shape[1]
        tokens = torch.cat((tokens, accepted), dim=1)
        if streamer is not None:
            streamer.put(accepted.cpu())
        cache.crop(n_matches - k)  # the target saw all k candidates; keep the n accepted ones
        generator.accepted(tokens.shape[1])
        if verified is not None:
            verified(matches, running)
        generator.update(n_matches, k)
        recorded.add_round(out, processed, logits, cur=cur, start=0 if first else cur - 1, kept=kept)
        first = False
        finished |= stopping_criteria(tokens, processed[:, kept - 1])
        done = tokens.shape[1] >= max_length or bool(finished.all())
    if streamer is not None:
        streamer.end()
    if getattr(generator, "schedule", None) == "heuristic" and assistant_model is not None:
        _remember_num_tokens(assistant_model, generator.num_tokens)
    if not config.return_dict_in_generate:
        return tokens
    return recorded.output(tokens, tokens.shape[1] - prompt_len, cache, model_kwargs)


def _round_choice(candidates, draft_scores, processed, lengths, do_sample: bool, weight: Optional[float]):
    """``(tokens [batch, k + 1], matches [batch])``: the target's token at each candidate position and one
    past them, and how many leading candidates each row keeps (never past its ``lengths``).

    Speculative sampling with draft scores; else the target's own picks -- sampled, argmax, or argmax of
    the blend ``w * p + (1 - w) * q`` with ``assistant_ensemble_weight`` -- and the candidates that match them.
    """
    if do_sample and draft_scores is not None:
        return speculative_choice(candidates, draft_scores, processed, weight, lengths)
    rows, k = candidates.shape
    if do_sample:
        chosen = torch.multinomial(processed.reshape(-1, processed.shape[-1]).softmax(dim=-1),
                                   num_samples=1).view(rows, k + 1)
    elif weight is not None and draft_scores is not None:
        blend = weight * processed[:, :k].softmax(dim=-1) + (1.0 - weight) * draft_scores.softmax(dim=-1)
        chosen = torch.cat((blend.argmax(dim=-1), processed[:, k:].argmax(dim=-1)), dim=-1)
    else:
        chosen = processed.argmax(dim=-1)
    matches = ((candidates != chosen[:, :-1]).cumsum(dim=-1) < 1).sum(dim=-1)
    return chosen, torch.minimum(matches, lengths)


def _synced_round_over(done_here: bool, device) -> bool:
    """synced_gpus: whether every rank is done (every rank calls this once per round)."""
    import torch.distributed as dist

    running = torch.tensor(0.0 if done_here else 1.0, device=device)
    dist.all_reduce(running, op=dist.ReduceOp.SUM)
    return running.item() == 0.0


def _idle_forward(adapter, inputs, tokens, model_kwargs) -> None:
    """One forward of the target that changes nothing (no cache): a sharded model (FSDP, ZeRO-3) needs every
    rank in every forward while another rank still decodes."""
    inputs.forward(adapter, tokens, 0, tokens.shape[1], None, model_kwargs, use_cache=False)


def _proposed(proposal):
    """A generator's ``(ids, draft_scores[, lengths])`` with the lengths filled in (every row: ``k``)."""
    ids, draft_scores = proposal[0], proposal[1]
    lengths = proposal[2] if len(proposal) > 2 and proposal[2] is not None else None
    if lengths is None:
        lengths = torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=ids.device)
    return ids, draft_scores, lengths


def _first_eos(accepted, finished, eos):
    """Per row, the index of the first EOS in ``accepted`` (rows finished before: -1; none: the last index)."""
    is_eos = torch.isin(accepted, eos.to(accepted.device))
    first = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), accepted.shape[1] - 1)
    return torch.where(finished, -1, first)


def _pad_after_eos(accepted, finished, eos, pad):
    """Tokens after each row's first EOS -- and every token of a row finished before -- become ``pad``, as
    plain greedy search and sampling fill finished rows; also returns the rows finished now."""
    is_eos = torch.isin(accepted, eos.to(accepted.device))
    after = (is_eos.int().cumsum(dim=1) - is_eos.int()) > 0
    accepted = torch.where(after | finished[:, None], pad, accepted)
    return accepted, finished | is_eos.any(dim=1)


def speculative_sampling(candidates: torch.LongTensor, draft_scores: torch.FloatTensor,
                         target_scores: torch.FloatTensor, ensemble_weight: Optional[float] = None) -> torch.LongTensor:
    """Leviathan et al.'s acceptance for one row: keep candidate ``i`` with probability
    ``min(1, p_i / q_i)`` until the first refusal, then draw from ``max(p - q, 0)`` there -- or from
    the target after the last candidate. The kept tokens are distributed as the target alone would
    sample them. ``[1, k]`` candidates, ``[1, k, V]`` draft and ``[1, k + 1, V]`` target scores.
    ``ensemble_weight`` w accepts with ``1 - w + w * p_i / q_i`` instead (trusting the draft more)."""
    chosen, kept = speculative_choice(candidates, draft_scores, target_scores, ensemble_weight)
    return chosen[:, :int(kept[0]) + 1]


def speculative_choice(candidates: torch.LongTensor, draft_scores: torch.FloatTensor, target_scores: torch.FloatTensor,
                       ensemble_weight: Optional[float] = None, lengths: Optional[torch.LongTensor] = None):
    """Speculative sampling for every row at once: ``(tokens [batch, k + 1], kept [batch])`` where row ``r``
    keeps its first ``kept[r]`` candidates and ``tokens[r, kept[r]]`` is drawn from the residual there (or
    from the target past its last candidate). Candidates at or past a row's ``lengths`` are refused. With
    one row the random draws are :func:`speculative_sampling`'s (and transformers')."""
    rows, k = candidates.shape
    q = draft_scores.softmax(dim=-1)
    p = target_scores.softmax(dim=-1)
    index = candidates[:, :, None]
    ratio = p[:, :k].gather(-1, index)[..., 0] / q.gather(-1, index)[..., 0]
    if ensemble_weight is not None:
        ratio = 1.0 - ensemble_weight + ensemble_weight * ratio
    # strict: r is uniform in [0, 1), so `r < ratio` accepts with probability exactly min(1, ratio), and a token
    # the target rules out (ratio 0) never (`<=` took it when r came out as 0.0; transformers >= 5.25 is strict too)
    accept = torch.rand_like(ratio) < ratio
    if lengths is not None:
        accept &= torch.arange(k, device=candidates.device) < lengths[:, None]
    kept = ((~accept).cumsum(dim=-1) < 1).sum(dim=-1)
    row = torch.arange(rows, device=candidates.device)
    p_there = p[row, kept]
    has_candidate = kept < (lengths if lengths is not None else k)
    residual = torch.clamp(p_there - q[row, kept.clamp(max=max(k - 1, 0))], min=0) if k else p_there
    total = residual.sum(dim=-1, keepdim=True)
    if ensemble_weight is not None:  # nothing left of p beyond q: draw from the target
        residual = torch.where(total <= torch.finfo(residual.dtype).tiny, p_there, residual / total)
    else:
        residual = residual / total
    residual = torch.where(has_candidate[:, None], residual, p_there)
    last = torch.multinomial(residual, num_samples=1)
    tokens = torch.cat((candidates, last), dim=1)
    tokens[row, kept] = last[:, 0]
    return tokens, kept


def _candidate_generator(config, context: CandidateContext):
    """The call's candidate generator: a plugin's, named by ``speculation_type``, else the built-in one the
    config asks for (prompt lookup, then a draft model, then early exit)."""
    if config.use_mtp or config.speculation_type in KNOWN_SPECULATION_TYPES:
        raise GenerationInputError(
            "use_mtp / speculation_type ask for drafting variants genplug does not provide (multi-token-prediction "
            "heads, DFlash); use assistant_model, prompt_lookup_num_tokens or assistant_early_exit, or install a "
            "plugin that registers a candidate generator")
    if config.speculation_type is not None:
        from genplug.plugin_manager import get_plugin_manager

        entry = get_plugin_manager().registries.candidate_generators.lookup(config.speculation_type,
                                                                           asked_by="speculation_type")
        generator = entry.obj(config, context)
        if generator is None:
            raise GenerationInputError(
                f"candidate generator {config.speculation_type!r} ({entry.provider}) declined this call's settings")
        return generator
    for build in (prompt_lookup, draft_model, early_exit):
        generator = build(config, context)
        if generator is not None:
            return generator
    raise GenerationInputError("assisted generation needs assistant_model, prompt_lookup_num_tokens or "
                               "assistant_early_exit")


def prompt_lookup(config, context: CandidateContext):
    """Built-in generator ``prompt_lookup``: when ``prompt_lookup_num_tokens`` is set."""
    if config.prompt_lookup_num_tokens is None:
        return None
    return PromptLookupCandidates(context.eos_token_ids, config.prompt_lookup_num_tokens,
                                  config.max_matching_ngram_size or 2, context.max_length, context.logits_processor,
                                  context.model.vocab_size)


def draft_model(config, context: CandidateContext):
    """Built-in generator ``draft_model``: when an ``assistant_model`` is given (with ``assistant_tokenizer``
    and ``tokenizer`` when its vocabulary is another)."""
    assistant_model, adapter = context.assistant_model, context.model
    if assistant_model is None:
        return None
    from genplug.plugin_manager import get_plugin_manager

    num_tokens, schedule, threshold = _drafting_settings(config, assistant_model)
    draft = get_plugin_manager().hook.genplug_adapt_model(model=assistant_model)
    draft.configure(config)  # e.g. a transformers draft runs on its native twin, as the target does
    if context.assistant_tokenizer is not None or context.tokenizer is not None:
        if context.assistant_tokenizer is None or context.tokenizer is None:
            raise GenerationInputError("assisted generation with the assistant's own tokenizer needs both "
                                       "tokenizer= (the model's) and assistant_tokenizer=")
        return OtherTokenizerDraftCandidates(draft, context.tokenizer, context.assistant_tokenizer,
                                             bool(config.do_sample), num_tokens, schedule, context.max_length,
                                             context.device, context.eos_token_ids, context.attention_mask,
                                             context.input_ids.shape[1])
    if draft.vocab_size is not None and adapter.vocab_size is not None and draft.vocab_size != adapter.vocab_size:
        raise GenerationInputError(
            f"the assistant model's vocabulary ({draft.vocab_size}) differs from the model's "
            f"({adapter.vocab_size}); pass tokenizer= and assistant_tokenizer= to draft across tokenizers, or "
            "use an assistant of the same family or prompt_lookup_num_tokens")
    if draft.is_encoder_decoder != adapter.is_encoder_decoder:
        raise GenerationInputError("the assistant model must be encoder-decoder exactly when the model is")
    extra = {}
    if draft.is_encoder_decoder:  # the draft's own encoder, run once on the call's encoder input
        encoder_ids, encoder_mask = context.encoder_inputs
        if encoder_ids is None:
            raise GenerationInputError("an encoder-decoder draft needs the encoder input ids of the call")
        extra = {"encoder_outputs": draft.encode(encoder_ids, {"attention_mask": encoder_mask}),
                 "attention_mask": encoder_mask}
    # the threshold is tuned for this call only: transformers tunes a copy of the assistant's generation config
    return DraftModelCandidates(draft, _draft_inputs(draft, context), context.logits_processor, bool(config.do_sample),
                                context.eos_token_ids, num_tokens, schedule, threshold or None, context.max_length,
                                extra=extra, tune_confidence=True)


def early_exit(config, context: CandidateContext):
    """Built-in generator ``early_exit``: the target's own first ``assistant_early_exit`` layers draft."""
    exit_layer, adapter = config.assistant_early_exit, context.model
    if exit_layer is None:
        return None
    if adapter.is_encoder_decoder:
        raise GenerationInputError("assistant_early_exit is supported for decoder-only models only")
    if not adapter.accepts("exit_layer"):
        raise GenerationInputError(
            f"assistant_early_exit needs a model whose forward can stop after a few layers (exit_layer): "
            f"{type(adapter.model).__name__} cannot; genplug's native models and their twins can")
    num_tokens, schedule, threshold = _drafting_settings(config, None)
    return DraftModelCandidates(adapter, _draft_inputs(adapter, context), context.logits_processor,
                                bool(config.do_sample), context.eos_token_ids, num_tokens, schedule, threshold or None,
                                context.max_length, extra={"exit_layer": exit_layer})


def _drafting_settings(config, assistant_model):
    """``(num_tokens, schedule, confidence threshold)``: the assistant's own generation config first (where
    transformers reads them), then this call's (which holds the defaults: 20 tokens, constant, 0.4)."""
    own = getattr(assistant_model, "generation_config", None) if assistant_model is not None else None
    num_tokens = _first_set(getattr(own, "num_assistant_tokens", None), config.num_assistant_tokens, 20)
    schedule = _first_set(getattr(own, "num_assistant_tokens_schedule", None), config.num_assistant_tokens_schedule,
                          "constant")
    threshold = _first_set(getattr(own, "assistant_confidence_threshold", None), config.assistant_confidence_threshold)
    return num_tokens, schedule, threshold


def _draft_inputs(draft, context: CandidateContext) -> StepInputs:
    """The draft's mask and positions over the call (the prompt's padding, every row)."""
    mask = context.attention_mask
    return StepInputs.take(draft, {"attention_mask": mask} if mask is not None else {}, context.input_ids.shape[0],
                           context.input_ids.shape[1], context.max_length, context.device)


def _check(adapter, input_ids, config, model_kwargs) -> None:
    if keeps_recurrent_state(adapter):
        # transformers < 5.25 refuses these too; 5.25 rolls recorded states back, but not exactly for every
        # layer kind (Mamba's verified logits leave the model's), so genplug keeps refusing
        raise GenerationInputError(
            f"assisted generation is not supported with stateful models such as {type(adapter.model).__name__}: "
            "rejected candidates would have to be taken back out of a recurrent state, which genplug cannot "
            "undo exactly for every layer kind (transformers 5.25 runs it, with logits that differ from the "
            "model's for Mamba); use greedy search or sampling")
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
            generation_config.num_assistant_tokens = int(value)  # a whole number kept as a float; configs take ints
        except Exception:  # a frozen or foreign config: keep it as it is
            pass


@hookimpl
def genplug_register_candidate_generators(register):
    register("prompt_lookup", prompt_lookup, description="continues an n-gram that occurred before in the sequence")
    register("draft_model", draft_model, description="a smaller assistant_model drafts (also with its own tokenizer)")
    register("early_exit", early_exit, description="the target's own first assistant_early_exit layers draft")


@hookimpl
def genplug_register_strategies(register):
    register("assisted_generation", assisted_generation, requires=frozenset(),
             description="candidates from a draft model, the prompt (prompt lookup) or early exit, verified in one forward")
