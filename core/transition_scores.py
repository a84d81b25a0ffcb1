"""``compute_transition_scores``: the score of each chosen token at each step.

Same semantics as transformers: ``scores`` holds one (rows, vocab) tensor per step, the processed
scores (or log-probs for beam search); ``beam_indices`` says which beam row produced each token.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def compute_transition_scores(sequences: torch.Tensor, scores: Sequence[torch.Tensor],
                              beam_indices: Optional[torch.Tensor] = None, normalize_logits: bool = False,
                              vocab_size: Optional[int] = None) -> torch.Tensor:
    """Scores of the generated tokens, shape (sequences, generated length).

    With ``normalize_logits`` each step's scores are turned into log-probabilities first. For beam
    search, positions after a sequence finished (``beam_indices < 0``) get 0, so that
    ``sum(transition_scores) / length ** length_penalty == sequences_scores``.
    """
    if not scores:
        raise ValueError("scores is empty: generate with return_dict_in_generate=True and output_scores=True")
    steps = len(scores)
    if beam_indices is None:
        beam_indices = torch.arange(scores[0].shape[0], device=sequences.device).view(-1, 1).expand(-1, steps)
    stacked = torch.stack(tuple(scores), dim=0)  # (steps, rows, vocab)
    vocab = stacked.shape[-1] if vocab_size is None else vocab_size
    if normalize_logits:
        stacked = torch.log_softmax(stacked.reshape(steps, -1, vocab).float(), dim=-1).to(stacked.dtype)
    flat = stacked.reshape(steps, -1).transpose(0, 1)  # (rows * vocab, steps)

    padding = beam_indices < 0
    longest = int((~padding).sum(-1).max()) if beam_indices.numel() else 0
    beam_indices = beam_indices[:, :longest].clone()
    padding = padding[:, :longest]
    beam_indices[padding] = 0
    chosen = sequences[:, -longest:] if longest else sequences[:, :0]
    flat_index = chosen + beam_indices * vocab
    transition = flat.gather(0, flat_index)
    transition[padding] = 0
    return transition
