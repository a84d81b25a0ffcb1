"""The output classes generate() returns when ``return_dict_in_generate=True``.

Field names and order are transformers', and like transformers' ``ModelOutput`` an output can be read
by attribute, by key (``out["sequences"]``) or by position over its non-None fields (``out[0]``).

transformers 5.24 renamed the returned cache from ``past_key_values`` to ``cache``, keeping the old name
as an alias. genplug does the same whichever transformers is installed: the key is ``cache``, and both
names read it (by attribute, key, ``in`` and ``get``). The dataclass field keeps the old name, so code
that builds an output with ``past_key_values=...`` keeps working.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import torch


# field name -> the key it is shown under (transformers >= 5.24's name)
_KEY_OF_FIELD = {"past_key_values": "cache"}


def _key(name):
    return _KEY_OF_FIELD.get(name, name) if isinstance(name, str) else name


class _Output:
    """Attribute, key and index access over the fields that are set (transformers' ModelOutput)."""

    def _items(self):
        return [(_key(f.name), getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None]

    def keys(self):
        return [k for k, _ in self._items()]

    def values(self):
        return [v for _, v in self._items()]

    def items(self):
        return self._items()

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(self.values())

    def __getitem__(self, key):
        if isinstance(key, str):
            return dict(self._items())[_key(key)]
        return self.to_tuple()[key]

    def __contains__(self, key) -> bool:
        return _key(key) in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items())

    def get(self, key, default=None):
        return dict(self._items()).get(_key(key), default)

    @property
    def cache(self) -> Any:
        """The returned cache (transformers >= 5.24's name; ``past_key_values`` reads the same)."""
        return self.past_key_values

    @cache.setter
    def cache(self, value: Any) -> None:
        self.past_key_values = value


@dataclasses.dataclass
class GenerateDecoderOnlyOutput(_Output):
    """Greedy / sampling / assisted output of a decoder-only model.

    ``sequences`` (batch, length) includes the prompt. ``scores`` and ``logits`` are tuples with one
    (batch, vocab) tensor per generated token (processed scores / raw logits). ``attentions`` and
    ``hidden_states`` are tuples over steps of tuples over layers.
    """

    sequences: torch.LongTensor = None
    scores: Optional[Tuple[torch.FloatTensor, ...]] = None
    logits: Optional[Tuple[torch.FloatTensor, ...]] = None
    attentions: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    hidden_states: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    past_key_values: Optional[Any] = None


@dataclasses.dataclass
class GenerateEncoderDecoderOutput(_Output):
    """Greedy / sampling output of an encoder-decoder model; ``sequences`` starts with the decoder start."""

    sequences: torch.LongTensor = None
    scores: Optional[Tuple[torch.FloatTensor, ...]] = None
    logits: Optional[Tuple[torch.FloatTensor, ...]] = None
    encoder_attentions: Optional[Tuple[torch.FloatTensor, ...]] = None
    encoder_hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    decoder_attentions: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    cross_attentions: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    decoder_hidden_states: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    past_key_values: Optional[Any] = None


@dataclasses.dataclass
class GenerateBeamDecoderOnlyOutput(_Output):
    """Beam search output of a decoder-only model.

    ``sequences_scores`` are the final length-normalised beam scores (with ``output_scores``);
    ``beam_indices[i, t]`` is the flattened beam row that produced token t of sequence i (-1 = padding).
    """

    sequences: torch.LongTensor = None
    sequences_scores: Optional[torch.FloatTensor] = None
    scores: Optional[Tuple[torch.FloatTensor, ...]] = None
    logits: Optional[Tuple[torch.FloatTensor, ...]] = None
    beam_indices: Optional[torch.LongTensor] = None
    attentions: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    hidden_states: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    past_key_values: Optional[Any] = None


@dataclasses.dataclass
class GenerateBeamEncoderDecoderOutput(_Output):
    """Beam search output of an encoder-decoder model."""

    sequences: torch.LongTensor = None
    sequences_scores: Optional[torch.FloatTensor] = None
    scores: Optional[Tuple[torch.FloatTensor, ...]] = None
    logits: Optional[Tuple[torch.FloatTensor, ...]] = None
    beam_indices: Optional[torch.LongTensor] = None
    encoder_attentions: Optional[Tuple[torch.FloatTensor, ...]] = None
    encoder_hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    decoder_attentions: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    cross_attentions: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    decoder_hidden_states: Optional[Tuple[Tuple[torch.FloatTensor, ...], ...]] = None
    past_key_values: Optional[Any] = None


GenerateNonBeamOutput = (GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput)
GenerateBeamOutput = (GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput)
GenerateOutput = GenerateNonBeamOutput + GenerateBeamOutput
