"""SynthID-Text watermarking (Dathathri et al., Nature 2024), from a ``SynthIDTextWatermarkingConfig``.

Each step, every candidate token gets one pseudo-random bit ("g-value") per key, drawn from a sampling
table at a hash of the last ``ngram_len - 1`` tokens, the candidate and the key. The distribution is
then tilted towards tokens with g = 1, key by key (a tournament in expectation), and the detector later
measures how often the generated tokens had g = 1. Contexts seen before in the same sequence are left
unwatermarked, so repeated text does not pile up the signal. The hashes, table and state follow
transformers' implementation step for step, so both libraries watermark -- and detect -- alike.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from genplug import hookimpl
from genplug.processing import LogitsProcessor

from .validation import fail

HASH_MULTIPLIER = 6364136223846793005  # a 64-bit linear congruential step; int64 products wrap around
HASH_INCREMENT = 1


def accumulate_hash(current: torch.LongTensor, data: torch.LongTensor) -> torch.LongTensor:
    """Fold the last dimension of ``data`` into ``current``, one LCG step per entry (broadcasting)."""
    for i in range(data.shape[-1]):
        current = (current + data[..., i]) * HASH_MULTIPLIER + HASH_INCREMENT
    return current


class SynthIDTextWatermarkState:
    """Per call: the last ``ngram_len - 1`` tokens of each row and the hashes of the contexts seen."""

    def __init__(self, batch_size: int, ngram_len: int, context_history_size: int, device):
        self.context = torch.zeros(batch_size, ngram_len - 1, dtype=torch.int64, device=device)
        self.context_history = torch.zeros(batch_size, context_history_size, dtype=torch.int64, device=device)
        self.num_calls = 0


class SynthIDTextWatermarkLogitsProcessor(LogitsProcessor):
    """Tilt each step's distribution towards tokens whose g-values (one per key) are 1.

    Returns log-probabilities (the tilted softmax); tokens with probability 0 get the dtype's lowest
    finite value. Like transformers, the first step hashes an all-zero context (the state starts empty)
    and each later step shifts in the newest token. The processor keeps state across the steps of one
    call: genplug builds a new one per generate() call.
    """

    compile_safe = False  # the context history grows step by step in Python-held state
    history_use = "sequence"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, ngram_len: int, keys: List[int], sampling_table_size: int, sampling_table_seed: int,
                 context_history_size: int, device, skip_first_ngram_calls: bool = False, debug_mode: bool = False):
        if not keys:
            fail("watermarking_config.keys", keys, "is empty", "give one int key per tournament layer")
        self.ngram_len = int(ngram_len)
        self.keys = torch.tensor(list(keys), dtype=torch.int64, device=device)
        generator = torch.Generator(device=device).manual_seed(sampling_table_seed)
        self.sampling_table = torch.randint(0, 2, (sampling_table_size,), generator=generator, device=device)
        self.context_history_size = int(context_history_size)
        self.device = device
        self.skip_first_ngram_calls = bool(skip_first_ngram_calls)
        self.debug_mode = bool(debug_mode)
        self.state: Optional[SynthIDTextWatermarkState] = None

    # ------------------------------------------------------------------ hashing and g-values

    def _keyed(self, hashes: torch.LongTensor) -> torch.LongTensor:
        """``hashes [...]`` folded with each key: ``[..., depth]``."""
        return accumulate_hash(hashes[..., None], self.keys[:, None])

    def sample_g_values(self, ngram_keys: torch.LongTensor) -> torch.LongTensor:
        """The sampling table's bits at ``ngram_keys`` (any shape)."""
        return self.sampling_table[ngram_keys % self.sampling_table.shape[0]]

    def compute_ngram_keys(self, ngrams: torch.LongTensor) -> torch.LongTensor:
        """``ngrams [batch, count, ngram_len]`` -> keys ``[batch, count, depth]``."""
        if ngrams.dim() != 3 or ngrams.shape[2] != self.ngram_len:
            raise ValueError(f"n-grams must be (batch, count, {self.ngram_len}), got {tuple(ngrams.shape)}")
        hashes = torch.ones(ngrams.shape[:2], dtype=torch.long, device=ngrams.device)
        return self._keyed(accumulate_hash(hashes, ngrams))

    def compute_g_values(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """The g-values of every token of ``input_ids`` after its ``ngram_len - 1`` predecessors:
        ``[batch, length - ngram_len + 1, depth]`` (what a detector averages)."""
        _check_ids(input_ids)
        return self.sample_g_values(self.compute_ngram_keys(input_ids.unfold(1, self.ngram_len, 1)))

    def compute_context_repetition_mask(self, input_ids: torch.LongTensor) -> torch.BoolTensor:
        """``[batch, length - ngram_len + 1]``: False where the context had occurred before in the row
        (such tokens were left unwatermarked and a detector skips them)."""
        _check_ids(input_ids)
        state = SynthIDTextWatermarkState(input_ids.shape[0], self.ngram_len, self.context_history_size,
                                          input_ids.device)
        contexts = input_ids[:, :-1].unfold(1, self.ngram_len - 1, 1)
        repeated = []
        for i in range(contexts.shape[1]):
            context_hash = accumulate_hash(torch.ones_like(contexts[:, i, 0]), contexts[:, i])[:, None]
            repeated.append((state.context_history == context_hash).any(dim=1, keepdim=True))
            state.context_history = torch.cat((context_hash, state.context_history), dim=1)[:, :-1]
        return ~torch.cat(repeated, dim=1)

    @staticmethod
    def compute_eos_token_mask(input_ids: torch.LongTensor, eos_token_id: int) -> torch.BoolTensor:
        """True before each row's first ``eos_token_id``, False from it on."""
        _check_ids(input_ids)
        return (input_ids == eos_token_id).long().cumsum(dim=1) == 0

    @staticmethod
    def expected_mean_g_value(vocab_size: int, coinflip_prob: float = 0.5) -> float:
        """The mean g-value of watermarked text under the tournament (for detection thresholds)."""
        return coinflip_prob + coinflip_prob * (1 - coinflip_prob) * (1 - (1 / vocab_size))

    # ------------------------------------------------------------------ the step

    @staticmethod
    def update_scores(scores: torch.FloatTensor, g_values: torch.LongTensor) -> torch.FloatTensor:
        """Log of the softmax tilted by each key's g-values in turn (``probs * (1 + g - E[g])``)."""
        probs = torch.softmax(scores, dim=1)
        for depth in range(g_values.shape[2]):
            g = g_values[:, :, depth]
            probs = probs * (1 + g - (g * probs).sum(dim=1, keepdim=True))
        log_probs = torch.log(probs)
        return torch.where(torch.isfinite(log_probs), log_probs, torch.finfo(log_probs.dtype).min)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        _check_ids(input_ids)
        batch, vocab = scores.shape
        if self.debug_mode:
            scores = torch.ones_like(scores)
        if self.state is None:
            self.state = SynthIDTextWatermarkState(batch, self.ngram_len, self.context_history_size, scores.device)
        else:
            self.state.context = torch.cat((self.state.context, input_ids[:, -1:]), dim=1)[:, 1:]
        self.state.num_calls += 1
        if self.skip_first_ngram_calls and self.state.num_calls < self.ngram_len:
            return scores
        context_hash = accumulate_hash(torch.ones(batch, dtype=torch.long, device=scores.device), self.state.context)
        candidates = torch.arange(vocab, device=scores.device)
        # hash of (context, candidate) for every candidate, then with each key: [batch, vocab, depth]
        ngram_keys = self._keyed(accumulate_hash(context_hash[:, None], candidates[None, :, None]))
        updated = self.update_scores(scores, self.sample_g_values(ngram_keys))
        context_hash = context_hash[:, None]
        repeated = (self.state.context_history == context_hash).any(dim=1, keepdim=True)
        self.state.context_history = torch.cat((context_hash, self.state.context_history), dim=1)[:, :-1]
        return torch.where(repeated, scores, updated)


def _check_ids(input_ids: torch.LongTensor) -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")


def build(config, context):
    settings = getattr(config, "watermarking_config", None)
    from genplug.config import SynthIDTextWatermarkingConfig

    if not isinstance(settings, SynthIDTextWatermarkingConfig):
        return None
    return SynthIDTextWatermarkLogitsProcessor(
        settings.ngram_len, settings.keys, settings.sampling_table_size, settings.sampling_table_seed,
        settings.context_history_size, context.device, settings.skip_first_ngram_calls, settings.debug_mode)


@hookimpl
def genplug_register_logits_processors(register):
    register("synthid_watermarking", build, stage="watermark", fields=("watermarking_config",),
             description="tilts sampling towards tokens with keyed pseudo-random g-values (SynthID-Text)")
