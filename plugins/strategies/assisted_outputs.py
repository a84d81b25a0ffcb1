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

from types import SimpleNamespace
from typing import Optional

from genplug.loop import StepRecorder


class AssistedOutputs(StepRecorder):
    """The loop's recorder, fed one entry per kept token of each verifying forward."""

    def add_round(self, out, processed, logits, *, cur: int, start: int, kept: int) -> None:
        """The round's ``kept`` tokens: ``out`` is the forward over positions ``start`` onwards (0 in the first
        round, else ``cur - 1``), ``cur`` the sequence length before the round; ``processed`` / ``logits``
        ``[batch, k + 1, vocab]`` the scores and raw logits at the verified positions."""
        if not (self.scores or self.logits or self.attentions or self.hidden_states):
            return  # nothing asked for: no per-token work in the loop
        for i in range(kept):
            position = cur - 1 + i  # where the token's distribution came from
            if start == 0 and i == 0:  # the prompt's entry: every prompt position
                rows, last = slice(0, cur), cur - 1
            else:
                rows, last = slice(position - start, position - start + 1), position
            self.record(processed[:, i], logits[:, i], _entry(out, rows, last, start, self.is_encoder_decoder)
                        if self.attentions or self.hidden_states else None)


def _entry(out, rows: slice, last: int, start: int, is_encoder_decoder: bool) -> SimpleNamespace:
    """The forward's attentions and hidden states at ``rows``, self-attention keys up to position ``last``: a
    layer's keys end at the forward's last position (a sliding layer's start later than position 0)."""
    def self_attention(a):
        return a[..., rows, :a.shape[-1] - (start + a.shape[-2] - 1 - last)]

    if is_encoder_decoder:
        return SimpleNamespace(decoder_attentions=_per_layer(out.decoder_attentions, self_attention),
                               cross_attentions=_per_layer(out.cross_attentions, lambda a: a[..., rows, :]),
                               decoder_hidden_states=_per_layer(out.decoder_hidden_states, lambda h: h[:, rows]))
    return SimpleNamespace(attentions=_per_layer(out.attentions, self_attention),
                           hidden_states=_per_layer(out.hidden_states, lambda h: h[:, rows]))


def _per_layer(tensors: Optional[tuple], cut) -> Optional[tuple]:
    """``cut`` applied to each layer's tensor (a model that returns no attentions -- SDPA -- gives None)."""
    if tensors is None:
        return None
    return tuple(None if t is None else cut(t) for t in tensors)
