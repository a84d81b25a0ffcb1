"""Green-list watermarking (Kirchenbauer et al., 2023), from ``watermarking_config``.

Each step, a pseudo-random share of the vocabulary -- the "green list" -- gets a bias added. The list
is the head of a random permutation of the vocabulary whose generator is seeded from the previous
token(s), so a detector that knows the hashing key can recompute it from the text alone and count how
many tokens are green. The generator lives on the scores' device and is seeded exactly as in
transformers, so the same settings mark the same tokens: a text watermarked by one library is
detected by the other's detector.
"""

from __future__ import annotations

import warnings

import torch

from genplug import hookimpl
from genplug.processing import LogitsProcessor

from .validation import fail

TABLE_SIZE = 1_000_003  # the selfhash scheme's fixed random table (a prime)
SELFHASH_CANDIDATES = 40  # how many of the best candidates the selfhash scheme tests, per row and step
_SEED_MODULUS = 2**64 - 1


class WatermarkLogitsProcessor(LogitsProcessor):
    """Add ``bias`` to ``greenlist_ratio`` of the vocabulary, chosen from the previous ``context_width`` tokens.

    ``"lefthash"`` seeds the green list with ``hashing_key`` times the last token. ``"selfhash"`` seeds
    one list per candidate from the context *and the candidate* (through a fixed random table) and
    biases the candidates, among the best ``SELFHASH_CANDIDATES``, that are green in their own list.
    Rows are processed one by one and the seeds are read on the host: the processor runs in the
    eager loop only.
    """

    compile_safe = False  # a host read of the seed per row and step
    argmax_invariant = False
    history_use = "sequence"  # see genplug.processing.LogitsProcessor.history_use

    def __init__(self, vocab_size: int, device, greenlist_ratio: float = 0.25, bias: float = 2.0,
                 hashing_key: int = 15485863, seeding_scheme: str = "lefthash", context_width: int = 1):
        if seeding_scheme not in ("lefthash", "selfhash"):
            fail("watermarking_config.seeding_scheme", seeding_scheme, "is not 'lefthash' or 'selfhash'",
                 "use one of the two schemes")
        if not 0.0 < greenlist_ratio < 1.0:
            fail("watermarking_config.greenlist_ratio", greenlist_ratio, "is not strictly between 0 and 1",
                 "a watermark needs both green and red tokens: use e.g. 0.25")
        self.vocab_size = int(vocab_size)
        self.greenlist_size = int(self.vocab_size * greenlist_ratio)
        self.bias = float(bias)
        self.hash_key = int(hashing_key)
        self.seeding_scheme = seeding_scheme
        self.context_width = int(context_width)
        self.rng = torch.Generator(device=device)
        self._table = None

    def _fixed_table(self) -> torch.LongTensor:
        """The selfhash scheme's table: a permutation drawn from ``hashing_key`` (built on first use)."""
        if self._table is None:
            self.rng.manual_seed(self.hash_key)
            self._table = torch.randperm(TABLE_SIZE, generator=self.rng, device=self.rng.device)
        return self._table

    def _seed(self, context: torch.LongTensor) -> int:
        """The generator seed for one row's last ``context_width`` tokens (``context`` may be longer)."""
        context = context[-self.context_width:]
        if self.seeding_scheme == "lefthash":
            seed = self.hash_key * int(context[-1])
        else:  # int64 products wrap around, as transformers computes them
            table = self._fixed_table()
            first = table[context % TABLE_SIZE] + 1
            last = table[context[-1] % TABLE_SIZE] + 1
            seed = int((self.hash_key * first * last).min())
        return seed % _SEED_MODULUS

    def greenlist(self, context: torch.LongTensor) -> torch.LongTensor:
        """The green token ids that follow ``context`` (one row's tokens so far)."""
        self.rng.manual_seed(self._seed(context))
        permutation = torch.randperm(self.vocab_size, generator=self.rng, device=self.rng.device)
        return permutation[: self.greenlist_size].to(context.device)

    def _self_green(self, context: torch.LongTensor, row_scores: torch.FloatTensor) -> torch.LongTensor:
        """The best candidates that are green in the list seeded with themselves appended."""
        candidates = row_scores.argsort(descending=True)[:SELFHASH_CANDIDATES]
        green = [token for token in candidates
                 if bool((self.greenlist(torch.cat((context, token[None]))) == token).any())]
        return torch.stack(green) if green else candidates[:0]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] < self.context_width:
            warnings.warn(f"watermarking needs {self.context_width} previous tokens but the sequences have "
                          f"{input_ids.shape[-1]}; this step is not watermarked", UserWarning, stacklevel=2)
            return scores
        out = scores.clone()
        for row, context in enumerate(input_ids):
            green = (self._self_green(context, scores[row]) if self.seeding_scheme == "selfhash"
                     else self.greenlist(context))
            out[row, green] = out[row, green] + self.bias
        return out


def build(config, context):
    settings = getattr(config, "watermarking_config", None)
    if settings is None:
        return None
    from genplug.config import WatermarkingConfig

    if not isinstance(settings, WatermarkingConfig):
        return None  # SynthID-Text has its own processor
    return WatermarkLogitsProcessor(context.vocab_size, context.device, settings.greenlist_ratio, settings.bias,
                                    settings.hashing_key, settings.seeding_scheme, settings.context_width)


@hookimpl
def genplug_register_logits_processors(register):
    register("watermarking_config", build, stage="watermark", fields=("watermarking_config",),
             description="adds a bias to a green list of tokens seeded by the previous tokens (green-list watermark)")
