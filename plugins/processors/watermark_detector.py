"""Detecting the green-list watermark: how many tokens of a text are green, and how unlikely that is.

Without the watermark a token is green with probability ``greenlist_ratio``; the count of green tokens
among T scored ones then has mean ``ratio * T`` and variance ``ratio * (1 - ratio) * T``. A z-score
above ``z_threshold`` (3 by default, a one-sided p-value of ~0.0013) says "watermarked". The green lists
are :class:`.watermark.WatermarkLogitsProcessor`'s, so the verdicts are transformers' detector's.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Optional

import attrs
import torch

from .watermark import WatermarkLogitsProcessor


@attrs.define
class WatermarkDetectorOutput:
    """Per row (float64 tensors; ``prediction`` bool): tokens scored, green tokens, their share, the
    z-score, the one-sided p-value, the verdict, and ``1 - p_value``."""

    num_tokens_scored: Optional[torch.Tensor] = None
    num_green_tokens: Optional[torch.Tensor] = None
    green_fraction: Optional[torch.Tensor] = None
    z_score: Optional[torch.Tensor] = None
    p_value: Optional[torch.Tensor] = None
    prediction: Optional[torch.Tensor] = None
    confidence: Optional[torch.Tensor] = None


class WatermarkDetector:
    """Score texts for the green-list watermark made with ``watermarking_config`` (object or dict).

    ``model_config`` gives the vocabulary size and the BOS id (the decoder start id for encoder-decoder
    models), which is skipped when every row starts with it. ``ignore_repeated_ngrams`` counts each
    distinct (context, token) n-gram once, so that repeated text does not inflate the score.
    """

    def __init__(self, model_config: Any, device, watermarking_config: Any, ignore_repeated_ngrams: bool = False,
                 max_cache_size: int = 128):
        settings = watermarking_config if isinstance(watermarking_config, dict) else watermarking_config.to_dict()
        self.bos_token_id = (model_config.decoder_start_token_id if getattr(model_config, "is_encoder_decoder", False)
                             else model_config.bos_token_id)
        self.greenlist_ratio = settings["greenlist_ratio"]
        self.ignore_repeated_ngrams = ignore_repeated_ngrams
        self.processor = WatermarkLogitsProcessor(model_config.vocab_size, device, **settings)
        self.max_cache_size = max_cache_size  # accepted for transformers' signature; green lists are not cached

    def _is_green(self, ngram: tuple) -> bool:
        """Whether the n-gram's last token is green after the ones before it (with it, for selfhash)."""
        selfhash = self.processor.seeding_scheme == "selfhash"
        ids = torch.tensor(ngram, device=self.processor.rng.device)
        green = self.processor.greenlist(ids if selfhash else ids[:-1])
        return bool((green == ngram[-1]).any())

    def _score(self, input_ids: torch.LongTensor):
        selfhash = self.processor.seeding_scheme == "selfhash"
        n = self.processor.context_width + 1 - int(selfhash)
        scored, green = [], []
        for row in input_ids.tolist():
            counts = collections.Counter(tuple(row[i:i + n]) for i in range(len(row) - n + 1))
            verdicts = {ngram: self._is_green(ngram) for ngram in counts}
            if self.ignore_repeated_ngrams:
                scored.append(len(counts))
                green.append(sum(verdicts.values()))
            else:
                scored.append(sum(counts.values()))
                green.append(sum(count * verdicts[ngram] for ngram, count in counts.items()))
        as_tensor = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
        return as_tensor(scored), as_tensor(green)

    def __call__(self, input_ids: torch.LongTensor, z_threshold: float = 3.0, return_dict: bool = False):
        """The verdict per row (bool tensor), or a :class:`WatermarkDetectorOutput` with ``return_dict``."""
        starts_with_bos = input_ids[:, 0] == self.bos_token_id
        if bool(starts_with_bos.any()) != bool(starts_with_bos.all()):
            raise ValueError("some rows start with the BOS token and others do not: tokenize every text "
                             "the same way before detecting")
        if bool(starts_with_bos[0]):
            input_ids = input_ids[:, 1:]
        if input_ids.shape[-1] - self.processor.context_width < 1:
            raise ValueError(f"a text needs more than context_width={self.processor.context_width} tokens "
                             "(after any BOS) to be scored")
        scored, green = self._score(input_ids)
        ratio = self.greenlist_ratio
        z_score = (green - ratio * scored) / torch.sqrt(scored * ratio * (1 - ratio))
        prediction = z_score > z_threshold
        if not return_dict:
            return prediction
        p_value = 0.5 * torch.special.erfc(z_score / math.sqrt(2))
        return WatermarkDetectorOutput(num_tokens_scored=scored, num_green_tokens=green, green_fraction=green / scored,
                                       z_score=z_score, p_value=p_value, prediction=prediction,
                                       confidence=1 - p_value)
