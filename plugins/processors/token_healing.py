"""Token healing: re-choose the prompt's last token before generating (``token_healing=True``).

A prompt that ends mid-word ("http" before "s://...") ends on a token the model rarely saw followed by
the rest of the word, which skews the next token. Healing drops that tail token and lets the model
regenerate it, biased towards the tokens that *start with* the tail's text (so the prompt's text is
kept, only its tokenisation changes), with the original token slightly preferred.

This is not a logits processor: it runs once, before decoding, like transformers' ``heal_tokens``. The
core calls ``heal_tokens(model, input_ids, tokenizer)`` when the config sets ``token_healing``. It
loops over prompts in Python and calls generate() once per prompt with ``max_new_tokens=1``.

Differences from transformers 5.23: the tail token is looked up by its vocabulary string
(``convert_ids_to_tokens``) instead of decoding it and replacing spaces, and a tail with no vocabulary
entry extending it is left alone (transformers' trie falls back to the longest partial match).
"""

from __future__ import annotations

import bisect
import functools
from typing import Any, Callable, Dict, List

import torch

from genplug import hookimpl
from genplug.errors import GenerationConfigError

HEALED_BIAS = 10.0  # bias of every token extending the tail's text
ORIGINAL_BONUS = 1.0  # extra bias of the original tail token, to limit over-eager healing ("http" -> "https")


class TokenExtensions:
    """Finds the vocabulary tokens that start with a given token string (a sorted list and bisect)."""

    def __init__(self, vocab: Dict[str, int]):
        self._strings = sorted(vocab)
        self._ids = [vocab[s] for s in self._strings]

    def ids_starting_with(self, prefix: str) -> List[int]:
        start = bisect.bisect_left(self._strings, prefix)
        found = []
        for position in range(start, len(self._strings)):
            if not self._strings[position].startswith(prefix):
                break
            found.append(self._ids[position])
        return found


def _generate_function(model_or_generate_fn: Any) -> Callable:
    """``model.generate`` if the model has one, genplug.generate bound to a bare model, else the callable."""
    generate = getattr(model_or_generate_fn, "generate", None)
    if callable(generate):
        return generate
    if isinstance(model_or_generate_fn, torch.nn.Module):
        from genplug import generate as genplug_generate

        return functools.partial(genplug_generate, model_or_generate_fn)
    if callable(model_or_generate_fn):
        return model_or_generate_fn
    raise GenerationConfigError(
        f"token_healing=True needs a model or a generate function, got {type(model_or_generate_fn).__name__}"
    )


def heal_tokens(model_or_generate_fn: Any, input_ids: torch.LongTensor, tokenizer: Any) -> torch.LongTensor:
    """Return ``input_ids`` re-tokenised, with each row's last token re-chosen by the model.

    ``model_or_generate_fn`` is a model (its ``generate`` method, or genplug.generate) or any function
    called as ``fn(ids, max_new_tokens=1, pad_token_id=..., sequence_bias=..., token_healing=False)``
    that returns ``ids`` plus one token. Rows may change length: prompts are decoded, stripped of
    surrounding whitespace and encoded again with padding.
    """
    if tokenizer is None:
        raise GenerationConfigError(
            "token_healing=True needs the model's tokenizer to re-tokenise the prompt: pass tokenizer= to generate()"
        )
    pad_token_id, bos_token_id = tokenizer.pad_token_id, tokenizer.bos_token_id
    if pad_token_id is None:
        raise GenerationConfigError(
            "token_healing=True re-tokenises the prompts with padding, but the tokenizer has no pad token: "
            "set tokenizer.pad_token (for example to tokenizer.eos_token)"
        )
    generate = _generate_function(model_or_generate_fn)
    device = input_ids.device

    prompts = [text.strip() for text in tokenizer.batch_decode(input_ids, skip_special_tokens=True)]
    input_ids = tokenizer(prompts, return_tensors="pt", padding=True).input_ids.to(device)
    if bos_token_id is not None:
        input_ids = torch.where(input_ids == bos_token_id, pad_token_id, input_ids)  # do not condition on BOS
    if input_ids.numel() == 0:
        return input_ids

    extensions = TokenExtensions(tokenizer.get_vocab())
    for row, tail_id in enumerate(input_ids[:, -1].tolist()):  # once per call, per prompt
        row_ids = input_ids[row]
        real_tokens = int((row_ids != pad_token_id).sum())
        if real_tokens == 0 or row_ids.numel() < 2:
            continue
        tail = tokenizer.convert_ids_to_tokens(tail_id)
        alternatives = [i for i in extensions.ids_starting_with(tail) if i != tail_id] if tail else []
        if not alternatives:
            continue  # nothing to heal towards
        bias = {(token,): HEALED_BIAS for token in alternatives}
        bias[(tail_id,)] = HEALED_BIAS + ORIGINAL_BONUS
        trimmed = row_ids[:-1].clone()
        if real_tokens == 1 and bos_token_id is not None:
            trimmed[-1] = bos_token_id  # a one-token prompt is regenerated from BOS
        healed = generate(trimmed[None, :], max_new_tokens=1, pad_token_id=pad_token_id, sequence_bias=bias,
                          token_healing=False)
        healed = getattr(healed, "sequences", healed)  # generate() may return an output object
        input_ids[row] = healed[0, -row_ids.shape[0]:]
    return input_ids


@hookimpl
def genplug_prepare_prompt(model, input_ids, attention_mask, generation_config, tokenizer):
    """Heal the prompts when the config sets ``token_healing``."""
    if not getattr(generation_config, "token_healing", None):
        return None
    healed = heal_tokens(model, input_ids, tokenizer)
    return healed, (healed != tokenizer.pad_token_id).long()
