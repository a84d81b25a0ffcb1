"""The per-step model inputs every decoding loop needs besides the tokens: the attention mask and the
position ids over the whole call, preallocated once, and what goes with the prompt only (its
embeddings, images, audio) or with every token (token types).

Shared by the greedy/sampling loop's shape of decoding and the beam strategies: rows may be reordered
between steps (beam search) because every row of one prompt has the same mask and positions.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import attrs
import torch

from .models import ModelAdapter, returned_cache


# Extra model inputs with one entry per token, extended with each row's last value as tokens are added
# and sliced to the tokens of each forward (transformers' token type ids, multimodal token types).
PER_TOKEN_INPUTS = ("token_type_ids", "mm_token_type_ids", "moe_mm_token_type_ids")


@attrs.define
class StepInputs:
    """Attention mask, positions and prompt-only inputs for ``rows x max_length`` tokens; ``forward`` runs one step.

    ``mask`` is None when the model needs none (no padding); ``positions`` is None for
    encoder-decoder models (the decoder works them out from the cache).

    A prompt given as ``inputs_embeds`` (``embeds``) is fed instead of the prompt's token ids in the
    first forward. With embeddings alone there are no prompt tokens: the token buffer holds only new
    tokens while the model sees ``offset`` more positions before them, so the mask and positions
    cover ``offset + max_length`` positions and token column ``t`` is position ``offset + t``.
    ``prompt_only`` inputs (images, audio features: ``ModelAdapter.prompt_only_inputs``) go with the
    first forward only -- later tokens find them in the cache; ``per_token`` inputs are sliced like the tokens.
    """

    mask: Optional[torch.Tensor]
    positions: Optional[torch.Tensor]
    embeds: Optional[torch.Tensor] = None
    offset: int = 0
    prompt_only: Dict[str, Any] = attrs.field(factory=dict)
    per_token: Dict[str, torch.Tensor] = attrs.field(factory=dict)
    positions_given: bool = False  # the prompt's positions came with the call (or from the model), not from the mask
    refill: Optional[int] = None  # ModelAdapter.refill_at(), read once per call
    prompt_fed: bool = attrs.field(default=False, init=False)  # a forward through the cache has seen the prompt

    @classmethod
    def take(cls, adapter: ModelAdapter, model_kwargs: Dict[str, Any], rows: int, prompt_len: int,
             max_length: int, device: torch.device) -> "StepInputs":
        """Build them from (and remove from) ``model_kwargs``: the decoder-only ``attention_mask``, an
        encoder-decoder's ``decoder_attention_mask``, the decoder-only ``position_ids`` (the prompt's,
        continued one per new token; else computed from the mask) and ``inputs_embeds``, the prompt-only
        and the per-token inputs.

        For encoder-decoder models ``attention_mask`` is the encoder's and stays in ``model_kwargs``.
        """
        attention_mask = None if adapter.is_encoder_decoder else model_kwargs.pop("attention_mask", None)
        given_positions = model_kwargs.pop("position_ids", None)
        embeds = None if adapter.is_encoder_decoder else model_kwargs.pop("inputs_embeds", None)
        offset = embeds.shape[1] - prompt_len if embeds is not None else 0
        length = offset + max_length
        mask = positions = None
        if adapter.is_encoder_decoder:
            decoder_mask = model_kwargs.pop("decoder_attention_mask", None)
            if decoder_mask is not None:
                mask = decoder_mask.new_ones((rows, max_length))
                mask[:, :prompt_len] = decoder_mask
        elif attention_mask is not None:
            mask = attention_mask.new_ones((rows, length))
            mask[:, :offset + prompt_len] = attention_mask
            positions = (mask.long().cumsum(-1) - 1).clamp_min_(0)
        else:
            positions = torch.arange(length, device=device).expand(rows, -1)
        if given_positions is not None and not adapter.is_encoder_decoder:
            positions = _continued(given_positions, length)
        prompt_only = {k: model_kwargs.pop(k) for k in adapter.prompt_only_inputs() if model_kwargs.get(k) is not None}
        per_token = {}
        for name in PER_TOKEN_INPUTS:
            given = model_kwargs.pop(name, None)
            if given is not None:
                per_token[name] = torch.cat([given, given[..., -1:].expand(*given.shape[:-1], length - given.shape[-1])],
                                            dim=-1)
        return cls(mask, positions, embeds, offset, prompt_only, per_token, given_positions is not None,
                   adapter.refill_at())

    @property
    def takes_tokens_only(self) -> bool:
        """True when every forward after the first needs nothing but the new token, its mask and position
        (what the CUDA-graph loop feeds): no positions before the token buffer, no per-token inputs."""
        return self.offset == 0 and not self.per_token and not self.positions_given

    def forward(self, adapter: ModelAdapter, tokens: torch.Tensor, start: int, end: int, cache: Any,
                model_kwargs: Dict[str, Any], *, use_cache: bool, output_attentions: bool = False,
                output_hidden_states: bool = False, logits_to_keep: int = 1):
        """Run the model on ``tokens[:, start:end]`` (the prompt, or the newest token(s) through the cache).

        Without a cache (``use_cache=False``) the caller passes ``start=0`` to recompute everything.
        ``logits_to_keep`` positions at the end get logits (assisted decoding verifies several).
        """
        from_the_start = not (use_cache and self.prompt_fed)
        if from_the_start and start:
            raise ValueError(f"the first forward must start at the first token, not at {start}")
        if not from_the_start and cache is not None and self.refills_between(start, end):
            _empty(cache, start + self.offset)  # run the whole sequence again through the emptied cache
            from_the_start, start = True, 0
        first, stop = (0 if from_the_start else start + self.offset), end + self.offset
        ids, embeds = tokens[:, start:end], None
        if from_the_start and self.embeds is not None:  # the prompt given as embeddings
            ids, embeds = None, self._prompt_and_new_embeddings(adapter, tokens, end)
        kwargs = model_kwargs
        if (from_the_start and self.prompt_only) or self.per_token:
            kwargs = dict(model_kwargs, **(self.prompt_only if from_the_start else {}))
            kwargs.update({name: values[..., first:stop] for name, values in self.per_token.items()})
        self.prompt_fed = self.prompt_fed or use_cache
        return adapter.step(
            ids,
            None if self.mask is None else self.mask[:, :stop],
            None if self.positions is None else self.positions[..., first:stop],
            cache if use_cache else None,
            kwargs,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            logits_to_keep=logits_to_keep,
            inputs_embeds=embeds,
        )

    def refills_between(self, start: int, end: int) -> bool:
        """Whether going from ``start`` to ``end`` tokens (token-buffer columns) reaches the model's refill
        length (``ModelAdapter.refill_at``) with the cache still short of it -- transformers' rule for dropping
        the cache there."""
        return self.refill is not None and start + self.offset < self.refill <= end + self.offset

    def _prompt_and_new_embeddings(self, adapter: ModelAdapter, tokens: torch.Tensor, end: int) -> torch.Tensor:
        """The prompt's embeddings, then (recomputing without a cache) those of the tokens generated since."""
        prompt_tokens = self.embeds.shape[1] - self.offset
        if end <= prompt_tokens:
            return self.embeds
        embed = adapter.get_input_embeddings() if hasattr(adapter.model, "get_input_embeddings") else None
        if embed is None:
            from .errors import GenerationInputError

            raise GenerationInputError("use_cache=False with inputs_embeds recomputes the prompt and the new tokens "
                                       "every step, which needs the model's get_input_embeddings()")
        return torch.cat([self.embeds, embed(tokens[:, prompt_tokens:end]).to(self.embeds.dtype)], dim=1)

    def prefill(self, adapter: ModelAdapter, tokens: torch.Tensor, end: int, cache: Any, model_kwargs: Dict[str, Any],
                *, use_cache: bool, chunk_size: Optional[int] = None, **options: Any):
        """``forward`` over the prompt ``tokens[:, :end]``; with ``chunk_size`` (``prefill_chunk_size``)
        in pieces of that many tokens through the cache, so that a long prompt's activations never
        exist all at once. The last piece's outputs are returned.

        A model whose forward cannot continue its cache over several tokens
        (``ModelAdapter.why_no_chunked_prefill``) is refused whatever the prompt's length, so that a setting
        that works on short prompts does not fail on the first long one."""
        from .errors import GenerationInputError

        why_not = adapter.why_no_chunked_prefill() if chunk_size else None
        if why_not is not None:
            raise GenerationInputError(
                f"prefill_chunk_size={chunk_size} feeds the prompt through the cache in pieces, but {why_not}, so "
                "every piece after the first would get wrong logits; unset prefill_chunk_size to feed the prompt in "
                "one forward")
        if not chunk_size or end + self.offset <= chunk_size:
            return self.forward(adapter, tokens, 0, end, cache, model_kwargs, use_cache=use_cache, **options)
        if not use_cache:
            raise GenerationInputError("prefill_chunk_size feeds the prompt through the cache piece by piece; it "
                                       "needs use_cache=True")
        if self.embeds is not None or self.prompt_only:
            raise GenerationInputError(
                "prefill_chunk_size splits the prompt's token ids; a prompt given as inputs_embeds or with "
                f"{', '.join(self.prompt_only) or 'inputs_embeds'} goes to the model in one piece: unset prefill_chunk_size")
        for start in range(0, end, chunk_size):
            outputs = self.forward(adapter, tokens, start, min(start + chunk_size, end), cache, model_kwargs,
                                   use_cache=True, **options)
            if cache is None:  # a model that makes its own cache (or state) returns it with the first piece
                cache = returned_cache(outputs)
        return outputs


def _continued(prompt_positions: torch.Tensor, length: int) -> torch.Tensor:
    """``prompt_positions [..., prompt]`` followed by one more per new token, up to ``length`` positions
    (transformers' rule; the leading dimensions are kept: 3-D rotary positions of vision models)."""
    prompt = prompt_positions.shape[-1]
    steps = torch.arange(1, length - prompt + 1, dtype=prompt_positions.dtype, device=prompt_positions.device)
    return torch.cat([prompt_positions, prompt_positions[..., -1:] + steps], dim=-1)


def _empty(cache: Any, held: int) -> None:
    """Forget every token ``cache`` holds: genplug's caches reset in place (keeping their storage); others
    (a transformers cache the caller passed) crop the ``held`` tokens away."""
    if hasattr(cache, "capabilities"):
        cache.reset()
    else:
        cache.crop(-held)
