"""Attentions and hidden states of an assisted call, one entry per generated token, as greedy search gives them.

Each round of assisted decoding verifies several tokens in one forward, so its attentions and hidden states
cover several positions at once. They are cut into one entry per kept token: the first round's first entry is
the prompt's (every prompt position, as a plain call's first step), and every later token's entry is the row of
the position it was predicted from, attending to the keys up to that position -- the same tensors a plain greedy
call returns for the same tokens. transformers 5.25 cuts the later rounds the same way; in the first round it
takes the tokens after the first from the prompt's rows (row ``i`` instead of ``prompt_length - 1 + i``), and it
cuts cross-attentions ``[batch, heads, queries, source]`` along the heads; genplug does neither (see
docs/strategies.md).
"""

from __future__ import annotations

from typing import Any, List, Optional

from genplug.outputs import GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput


class AssistedOutputs:
    """Collects an assisted call's scores, logits, attentions and hidden states, one entry per kept token."""

    def __init__(self, config, is_encoder_decoder: bool):
        on = bool(config.return_dict_in_generate)
        self.is_encoder_decoder = is_encoder_decoder
        self.scores_on, self.logits_on = on and bool(config.output_scores), on and bool(config.output_logits)
        self.attentions = on and bool(config.output_attentions)
        self.hidden_states = on and bool(config.output_hidden_states)
        self.scores: List[Any] = []
        self.logits: List[Any] = []
        self._self_attentions: List[Any] = []
        self._cross_attentions: List[Any] = []
        self._hidden: List[Any] = []

    def add_round(self, out, processed, logits, *, cur: int, start: int, kept: int) -> None:
        """The round's ``kept`` tokens: ``out`` is the forward over positions ``start`` onwards (0 in the first
        round, else ``cur - 1``), ``cur`` the sequence length before the round; ``processed`` / ``logits``
        ``[batch, k + 1, vocab]`` the scores and raw logits at the verified positions."""
        if self.scores_on:
            self.scores.extend(processed[:, i] for i in range(kept))
        if self.logits_on:
            self.logits.extend(logits[:, i] for i in range(kept))
        for i in range(kept):
            position = cur - 1 + i  # where the token's distribution came from
            if start == 0 and i == 0:  # the prompt's entry: every prompt position
                rows, last = slice(0, cur), cur - 1
            else:
                rows, last = slice(position - start, position - start + 1), position
            if self.attentions:
                attentions = out.decoder_attentions if self.is_encoder_decoder else out.attentions
                # keys up to the entry's last position; a layer's keys end at the forward's last position (a
                # sliding layer's start later than position 0)
                self._self_attentions.append(_per_layer(
                    attentions, lambda a: a[..., rows, :a.shape[-1] - (start + a.shape[-2] - 1 - last)]))
                if self.is_encoder_decoder:
                    self._cross_attentions.append(_per_layer(out.cross_attentions, lambda a: a[..., rows, :]))
            if self.hidden_states:
                hidden = out.decoder_hidden_states if self.is_encoder_decoder else out.hidden_states
                self._hidden.append(_per_layer(hidden, lambda h: h[:, rows]))

    def output(self, sequences, cache, model_kwargs):
        def given(items, on):
            return tuple(items) if on else None

        if self.is_encoder_decoder:
            encoder_outputs = model_kwargs.get("encoder_outputs")
            return GenerateEncoderDecoderOutput(
                sequences=sequences, scores=given(self.scores, self.scores_on),
                logits=given(self.logits, self.logits_on),
                encoder_attentions=getattr(encoder_outputs, "attentions", None) if self.attentions else None,
                encoder_hidden_states=getattr(encoder_outputs, "hidden_states", None) if self.hidden_states else None,
                decoder_attentions=given(self._self_attentions, self.attentions),
                cross_attentions=given(self._cross_attentions, self.attentions),
                decoder_hidden_states=given(self._hidden, self.hidden_states), past_key_values=cache)
        return GenerateDecoderOnlyOutput(
            sequences=sequences, scores=given(self.scores, self.scores_on), logits=given(self.logits, self.logits_on),
            attentions=given(self._self_attentions, self.attentions),
            hidden_states=given(self._hidden, self.hidden_states), past_key_values=cache)


def _per_layer(tensors: Optional[tuple], cut) -> Optional[tuple]:
    """``cut`` applied to each layer's tensor (a model that returns no attentions -- SDPA -- gives None)."""
    if tensors is None:
        return None
    return tuple(None if t is None else cut(t) for t in tensors)
