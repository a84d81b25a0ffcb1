"""The rules factories share to decide whether, and how, a processor is built for one generate() call.

They reproduce transformers' ``GenerationMixin._get_logits_processor``. Everything here runs once per
call at set-up time, so the one-off host reads (``.tolist()``, ``.any()``) are fine.
"""

from __future__ import annotations

import warnings
from typing import Any, List, Optional

import torch

from genplug.processing import BuildContext

from .validation import eos_list

# Built-in processors are ordered in the stage they share by naming every earlier built-in of that
# stage in ``after`` (not just the previous one), so blocking one of them keeps the others in order.
PENALTY_ORDER = (
    "encoder_repetition_penalty", "repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids",
)
LENGTH_ORDER = ("min_length", "min_new_tokens")
CONSTRAINT_ORDER = (
    "prefix_allowed_tokens_fn", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
)
TRUNCATION_ORDER = ("top_h", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


def after(order: tuple, name: str) -> tuple:
    """The built-ins that precede ``name`` in its stage."""
    return order[: order.index(name)]


def setting(config: Any, name: str) -> Any:
    """A config value, or None when the config does not have the field at all."""
    return getattr(config, name, None)


def sampling(config: Any) -> bool:
    """Warpers are built only when sampling, whatever the strategy."""
    return bool(setting(config, "do_sample"))


def warper_min_tokens_to_keep(config: Any, context: BuildContext) -> int:
    """1, or with beams one more than the number of EOS tokens (2 without EOS).

    Beam methods must keep at least one non-EOS continuation per beam to explore.
    """
    num_beams = setting(config, "num_beams") or 1
    if num_beams <= 1:
        return 1
    eos = context.eos_token_ids
    return int(eos.numel()) + 1 if eos is not None else 2


def eos_ids(context: BuildContext) -> Optional[List[int]]:
    """The EOS ids as ints, or None when EOS is not defined for this call."""
    if context.eos_token_ids is None:
        return None
    return eos_list(context.eos_token_ids)


def usable_encoder_ids(context: BuildContext, field: str) -> Optional[torch.LongTensor]:
    """The encoder input ids if they are real ids (2-D, no negative dummies), else warn and give None.

    transformers passes the prompt as encoder input for decoder-only models too, and dummy ids of -100
    when only ``encoder_outputs`` were given.
    """
    ids = context.encoder_input_ids
    if ids is not None and ids.dim() == 2 and not bool((ids < 0).any()):
        return ids
    warnings.warn(
        f"Passing `{field}` requires some form of `input_ids` to be passed to `generate`, ignoring the argument.",
        UserWarning,
        stacklevel=3,
    )
    return None


def left_padding(mask: torch.Tensor) -> torch.LongTensor:
    """Per-row count of leading zeros in an attention mask."""
    return (mask.cumsum(-1) == 0).sum(-1)


def prompt_padding(context: BuildContext) -> Optional[torch.LongTensor]:
    """Left padding of each decoder-prompt row, or None without a mask (then nothing is skipped).

    Encoder-decoder models pad the decoder prompt through ``decoder_attention_mask``.
    """
    if context.is_encoder_decoder:
        mask = context.model_kwargs.get("decoder_attention_mask")
        return None if mask is None else left_padding(mask)
    if context.attention_mask is None:
        return None
    return context.left_padding
