"""The per-step model inputs every decoding loop needs besides the tokens: the attention mask and the
position ids over the whole call, preallocated once.

Shared by the greedy/sampling loop's shape of decoding and the beam strategies: rows may be reordered
between steps (beam search) because every row of one prompt has the same mask and positions.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import attrs
import torch

from .models import ModelAdapter, returned_cache


@attrs.define
class StepInputs:
    """Attention mask and positions for ``rows x max_length`` tokens; ``forward`` runs one step.

    ``mask`` is None when the model needs none (no padding); ``positions`` is None for
    encoder-decoder models (the decoder works them out from the cache).
    """

    mask: Optional[torch.Tensor]
    positions: Optional[torch.Tensor]

    @classmethod
    def take(cls, adapter: ModelAdapter, model_kwargs: Dict[str, Any], rows: int, prompt_len: int,
             max_length: int, device: torch.device) -> "StepInputs":
        """Build them from (and remove from) ``model_kwargs``: the decoder-only ``attention_mask``, an
        encoder-decoder's ``decoder_attention_mask`` and any ``position_ids`` (recomputed here).

        For encoder-decoder models ``attention_mask`` is the encoder's and stays in ``model_kwargs``.
        """
        attention_mask = None if adapter.is_encoder_decoder else model_kwargs.pop("attention_mask", None)
        model_kwargs.pop("position_ids", None)
        mask = positions = None
        if adapter.is_encoder_decoder:
            decoder_mask = model_kwargs.pop("decoder_attention_mask", None)
            if decoder_mask is not None:
                mask = decoder_mask.new_ones((rows, max_length))
                mask[:, :prompt_len] = decoder_mask
        elif attention_mask is not None:
            mask = attention_mask.new_ones((rows, max_length))
            mask[:, :prompt_len] = attention_mask
            positions = (mask.long().cumsum(-1) - 1).clamp_min_(0)
        else:
            positions = torch.arange(max_length, device=device).expand(rows, -1)
        return cls(mask, positions)

    def forward(self, adapter: ModelAdapter, tokens: torch.Tensor, start: int, end: int, cache: Any,
                model_kwargs: Dict[str, Any], *, use_cache: bool, output_attentions: bool = False,
                output_hidden_states: bool = False, logits_to_keep: int = 1):
        """Run the model on ``tokens[:, start:end]`` (the prompt, or the newest token(s) through the cache).

        Without a cache (``use_cache=False``) the caller passes ``start=0`` to recompute everything.
        ``logits_to_keep`` positions at the end get logits (assisted decoding verifies several).
        """
        return adapter.step(
            tokens[:, start:end],
            None if self.mask is None else self.mask[:, :end],
            None if self.positions is None else self.positions[:, start:end],
            cache if use_cache else None,
            model_kwargs,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            logits_to_keep=logits_to_keep,
        )

    def prefill(self, adapter: ModelAdapter, tokens: torch.Tensor, end: int, cache: Any, model_kwargs: Dict[str, Any],
                *, use_cache: bool, chunk_size: Optional[int] = None, **options: Any):
        """``forward`` over the prompt ``tokens[:, :end]``; with ``chunk_size`` (``prefill_chunk_size``)
        in pieces of that many tokens through the cache, so that a long prompt's activations never
        exist all at once. The last piece's outputs are returned."""
        if not chunk_size or end <= chunk_size:
            return self.forward(adapter, tokens, 0, end, cache, model_kwargs, use_cache=use_cache, **options)
        if not use_cache:
            from .errors import GenerationInputError

            raise GenerationInputError("prefill_chunk_size feeds the prompt through the cache piece by piece; it "
                                       "needs use_cache=True")
        for start in range(0, end, chunk_size):
            outputs = self.forward(adapter, tokens, start, min(start + chunk_size, end), cache, model_kwargs,
                                   use_cache=True, **options)
            if cache is None:  # a model that makes its own cache (or state) returns it with the first piece
                cache = returned_cache(outputs)
        return outputs
