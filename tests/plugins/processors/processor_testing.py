"""Shared helpers of the processor tests: configs, build contexts, the registry, input strategies."""

from __future__ import annotations

import warnings

import torch
from hypothesis import strategies as st

import genplug
from genplug.config import GenerationConfig
from genplug.processing import BuildContext, LogitsProcessorList, order_entries

NEG_INF = float("-inf")


def config(**fields) -> GenerationConfig:
    """A resolved GenerationConfig (defaults filled), as factories receive it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flag set but ignored" warnings are the point of some cases
        return GenerationConfig(**fields).resolved()


def context(input_ids=None, vocab_size=32, eos=None, **fields) -> BuildContext:
    if input_ids is None:
        input_ids = torch.arange(6).reshape(2, 3) % vocab_size
    eos_tensor = None if eos is None else torch.tensor(eos if isinstance(eos, list) else [eos])
    return BuildContext(input_ids=input_ids, vocab_size=vocab_size, device=torch.device("cpu"),
                        eos_token_ids=eos_tensor, **fields)


def registry():
    return genplug.get_plugin_manager().registries.logits_processors


def factory(name: str):
    return registry()[name].obj


def build_all(generation_config, build_context) -> LogitsProcessorList:
    """Every enabled built-in processor, in registry order -- what the core assembles."""
    built = (entry.obj(generation_config, build_context) for entry in order_entries(registry().values()))
    return LogitsProcessorList(p for p in built if p is not None)


def distinct_rows(batch=st.integers(1, 3), vocab=st.integers(2, 40), low=-20.0, high=20.0):
    """Float32 score matrices without ties: scores differ by at least 0.01 within a row.

    Ties (and near-ties that float rounding turns into ties) make "the k best" ambiguous.
    """
    steps = st.integers(int(low * 100), int(high * 100))

    @st.composite
    def matrices(draw):
        b, v = draw(batch), draw(vocab)
        rows = [draw(st.lists(steps, min_size=v, max_size=v, unique=True)) for _ in range(b)]
        return torch.tensor(rows, dtype=torch.float32) / 100

    return matrices()


def score_rows(batch=st.integers(1, 3), vocab=st.integers(1, 40), low=-30.0, high=30.0):
    """Float32 score matrices, ties allowed."""

    @st.composite
    def matrices(draw):
        b, v = draw(batch), draw(vocab)
        values = draw(st.lists(st.floats(low, high, width=32), min_size=b * v, max_size=b * v))
        return torch.tensor(values, dtype=torch.float32).reshape(b, v)

    return matrices()


def history(batch: int, length: int, vocab: int, seed: int = 0) -> torch.LongTensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator)


def kept(scores: torch.Tensor) -> torch.Tensor:
    return ~torch.isneginf(scores)
