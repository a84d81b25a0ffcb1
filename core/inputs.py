"""Preparing generate()'s inputs: checking tensors, special tokens, masks, expansion and lengths.

Everything here runs once per call, before any model call, and raises GenerationInputError with a
message that names the argument, the value and the fix.
"""

from __future__ import annotations

import warnings
from typing import Any, List, Optional

import torch

from .errors import GenerationConfigError, GenerationInputError


def as_id_list(value: Any, field: str) -> Optional[List[int]]:
    """An int, list of ints or 1-D int tensor as a list of ints (None stays None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dim() > 1:
            raise GenerationConfigError(f"{field}={value!r} must be an int or a list of ints")
        value = value.reshape(-1).tolist()
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise GenerationConfigError(
            f"{field}={value!r} is a {type(value).__name__}: it must be a token id (int) or a list of ids"
        )
    ids = [value] if isinstance(value, int) else list(value)
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int):
            raise GenerationConfigError(f"{field}={value!r} holds {token!r}, which is not an int token id")
    return ids


def check_token_ids(ids: torch.Tensor, name: str, vocab_size: Optional[int]) -> None:
    """Integer dtype, 2-D, non-empty, every id in [0, vocab_size)."""
    if not isinstance(ids, torch.Tensor):
        raise GenerationInputError(f"{name} must be a torch.LongTensor of shape (batch, length), got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise GenerationInputError(f"{name} has dtype {ids.dtype}; token ids must be an integer tensor (torch.long)")
    if ids.dim() != 2:
        raise GenerationInputError(f"{name} has shape {tuple(ids.shape)}; expected (batch, length)")
    if ids.shape[0] == 0:
        raise GenerationInputError(f"{name} is an empty batch (shape {tuple(ids.shape)}); pass at least one row")
    if ids.numel() and vocab_size is not None:
        low, high = torch.stack(torch.aminmax(ids)).tolist()  # one read from the device, not two
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise GenerationInputError(
                f"{name} holds token id {bad}, outside the model's vocabulary [0, {vocab_size}); "
                "check that the tokenizer matches the model"
            )


def check_attention_mask(mask: torch.Tensor, ids: torch.Tensor, name: str = "attention_mask") -> None:
    if not isinstance(mask, torch.Tensor):
        raise GenerationInputError(f"{name} must be a tensor, got {type(mask).__name__}")
    if mask.dim() != 2:
        raise GenerationInputError(
            f"{name} has {mask.dim()} dimensions (shape {tuple(mask.shape)}); generate() takes a 2-D (batch, length) mask"
        )
    if mask.shape != ids.shape:
        raise GenerationInputError(
            f"{name} has shape {tuple(mask.shape)} but the input ids have shape {tuple(ids.shape)}; they must match"
        )
    if mask.device != ids.device:
        raise GenerationInputError(f"{name} is on {mask.device} but the input ids are on {ids.device}")


def infer_attention_mask(ids: torch.Tensor, pad: Optional[int], eos: Optional[List[int]]) -> Optional[torch.Tensor]:
    """transformers' rule: ``ids != pad`` only when pad is set, appears in the ids and is not an EOS id."""
    if pad is None or (eos is not None and pad in eos):
        return None
    is_pad = ids == pad
    if not bool(is_pad.any()):
        return None
    return (~is_pad).long()


def warn_right_padding(ids: torch.Tensor, mask: Optional[torch.Tensor], pad: Optional[int]) -> None:
    if ids.shape[0] < 2 or pad is None:
        return
    last_is_pad = (mask[:, -1] == 0) if mask is not None else (ids[:, -1] == pad)
    if bool(last_is_pad.any()):
        warnings.warn(
            "A decoder-only model got right-padded inputs; generation will be wrong for the padded rows. "
            "Pad on the left (tokenizer.padding_side = 'left').",
            UserWarning,
            stacklevel=4,
        )


def expand_rows(value: Any, times: int) -> Any:
    """Repeat every row ``times`` times (beams / num_return_sequences), in tensors and encoder outputs."""
    if times == 1 or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.repeat_interleave(times, dim=0) if value.dim() > 0 else value
    if hasattr(value, "last_hidden_state"):  # an encoder output (transformers' ModelOutput or alike)
        for key in ("last_hidden_state", "hidden_states", "attentions"):
            item = getattr(value, key, None)
            if isinstance(item, torch.Tensor):
                setattr(value, key, item.repeat_interleave(times, dim=0))
        return value
    return value


def generated_lengths(config, prompt_len: int, has_default_max_length: bool, max_position_embeddings: Optional[int],
                      user_set_max_length: bool = False, embedded: int = 0) -> None:
    """Turn max_new_tokens / min_new_tokens into absolute lengths, as transformers does (in place).

    Lengths count token ids. A prompt given as ``embedded`` positions of embeddings without ids has
    none, so a max_length / min_length set for the whole sequence loses those positions.
    """
    if config.max_new_tokens is not None:
        if user_set_max_length:
            warnings.warn(
                f"Both max_new_tokens (={config.max_new_tokens}) and max_length (={config.max_length}) are set; "
                "max_new_tokens takes precedence.",
                UserWarning,
                stacklevel=4,
            )
        config.max_length = config.max_new_tokens + prompt_len
    elif embedded and not has_default_max_length:
        config.max_length -= embedded
    elif has_default_max_length:
        config.max_length = config.max_length + prompt_len
        if max_position_embeddings is not None:
            config.max_length = min(config.max_length, max_position_embeddings)
    if config.min_new_tokens is not None:
        config.min_length = config.min_new_tokens + prompt_len
    elif embedded and config.min_length:
        config.min_length = max(config.min_length - embedded, 0)
    if prompt_len >= config.max_length:
        raise GenerationInputError(
            f"the prompt is {prompt_len} tokens long but max_length={config.max_length}: nothing can be generated; "
            "set max_new_tokens (or a larger max_length)"
        )
    if config.min_length is not None and config.min_length > config.max_length:
        warnings.warn(
            f"min_length={config.min_length} is larger than max_length={config.max_length}; "
            "generation will stop at max_length",
            UserWarning,
            stacklevel=4,
        )
