"""A thin tokenizer over the ``tokenizers`` library, with the part of transformers' tokenizer API generate() uses.

It reads ``tokenizer.json`` and takes its special tokens from ``tokenizer_config.json`` /
``special_tokens_map.json`` (falling back to the ids in ``config.json`` / ``generation_config.json``).
Batches are padded on the left, as decoder-only generation needs. Enough for prompts, streamers
(``decode``) and stop strings (``get_vocab`` / ``convert_ids_to_tokens``); nothing more.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch

from .errors import CheckpointError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
_SPECIAL_NAMES = ("bos", "eos", "pad", "unk")


class BatchEncoding(dict):
    """``input_ids`` and ``attention_mask``, readable as keys or attributes, movable with ``.to(device)``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device) -> "BatchEncoding":
        return BatchEncoding({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


class NativeTokenizer:
    """Encodes text to ids and back; special tokens and left padding as transformers' fast tokenizers do."""

    padding_side = "left"

    def __init__(self, tokenizer, bos_token: Optional[str] = None, eos_token: Optional[str] = None,
                 pad_token: Optional[str] = None, unk_token: Optional[str] = None,
                 clean_up_tokenization_spaces: bool = False, model_max_length: Optional[int] = None):
        self.backend = tokenizer  # a tokenizers.Tokenizer
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.model_max_length = model_max_length

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike]) -> "NativeTokenizer":
        """Read a checkpoint directory's tokenizer files (see the module docstring)."""
        from tokenizers import Tokenizer

        path = os.fspath(path)
        file_path = os.path.join(path, TOKENIZER_FILE)
        if not os.path.isfile(file_path):
            raise CheckpointError(
                f"{file_path} does not exist: the native tokenizer reads the tokenizer.json that transformers' "
                "fast tokenizers save; run AutoTokenizer.from_pretrained(dir).save_pretrained(dir) to write it."
            )
        try:
            backend = Tokenizer.from_file(file_path)
        except Exception as error:  # tokenizers raises a bare Exception for bad JSON
            raise CheckpointError(f"{file_path} is not a valid tokenizers file ({error}); restore it from the original checkpoint.") from None
        settings = _read_json(os.path.join(path, SPECIAL_TOKENS_MAP_FILE))
        settings.update(_read_json(os.path.join(path, TOKENIZER_CONFIG_FILE)))
        tokens = {name: _token_text(settings.get(f"{name}_token")) for name in _SPECIAL_NAMES}
        # Ids from the model configs fill in tokens the tokenizer files do not name.
        for side_file in ("generation_config.json", "config.json"):
            side = _read_json(os.path.join(path, side_file))
            for name in _SPECIAL_NAMES:
                token_id = side.get(f"{name}_token_id")
                if isinstance(token_id, list):
                    token_id = token_id[0] if token_id else None
                if tokens[name] is None and isinstance(token_id, int):
                    tokens[name] = backend.id_to_token(token_id)
        max_length = settings.get("model_max_length")
        tokenizer = cls(
            backend,
            bos_token=tokens["bos"], eos_token=tokens["eos"], pad_token=tokens["pad"], unk_token=tokens["unk"],
            clean_up_tokenization_spaces=bool(settings.get("clean_up_tokenization_spaces", False)),
            model_max_length=max_length if isinstance(max_length, int) and max_length < 1 << 40 else None,
        )
        tokenizer.padding_side = settings.get("padding_side", "left")
        return tokenizer

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (transformers reads them)."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        self.backend.save(os.path.join(directory, TOKENIZER_FILE))
        special = {f"{name}_token": getattr(self, f"{name}_token") for name in _SPECIAL_NAMES
                   if getattr(self, f"{name}_token") is not None}
        config = dict(special, tokenizer_class="PreTrainedTokenizerFast", padding_side=self.padding_side,
                      clean_up_tokenization_spaces=self.clean_up_tokenization_spaces)
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        for name, content in ((TOKENIZER_CONFIG_FILE, config), (SPECIAL_TOKENS_MAP_FILE, special)):
            with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
                handle.write(json.dumps(content, indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ special tokens and vocabulary

    def _id(self, token: Optional[str]) -> Optional[int]:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_token_id(self) -> Optional[int]:
        return self._id(self.bos_token)

    @property
    def eos_token_id(self) -> Optional[int]:
        return self._id(self.eos_token)

    @property
    def pad_token_id(self) -> Optional[int]:
        return self._id(self.pad_token)

    @property
    def unk_token_id(self) -> Optional[int]:
        return self._id(self.unk_token)

    @property
    def all_special_tokens(self) -> List[str]:
        named = [getattr(self, f"{name}_token") for name in _SPECIAL_NAMES]
        added = [t.content for t in self.backend.get_added_tokens_decoder().values() if t.special]
        return list(dict.fromkeys(t for t in named + added if t is not None))

    @property
    def all_special_ids(self) -> List[int]:
        return [i for i in (self.backend.token_to_id(t) for t in self.all_special_tokens) if i is not None]

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without added tokens), as in transformers."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> Dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def convert_ids_to_tokens(self, ids: Union[int, Iterable[int]], skip_special_tokens: bool = False):
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        special = set(self.all_special_ids) if skip_special_tokens else ()
        return [self.backend.id_to_token(i) for i in _as_id_list(ids) if i not in special]

    def convert_tokens_to_ids(self, tokens: Union[str, Iterable[str]]):
        if isinstance(tokens, str):
            return self.backend.token_to_id(tokens)
        return [self.backend.token_to_id(t) for t in tokens]

    # ------------------------------------------------------------------ text <-> ids

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """Token ids of one text (with the BOS token when the tokenizer's template adds one)."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(self, text: Union[str, Sequence[str]], padding: Union[bool, str] = True,
                 return_tensors: Optional[str] = None, add_special_tokens: bool = True) -> BatchEncoding:
        """``input_ids`` and ``attention_mask`` for one text or a batch, padded on ``padding_side``.

        With ``return_tensors="pt"`` they are ``[batch, longest]`` tensors (a single text gives a batch of
        one); otherwise lists, as in transformers.
        """
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        ids = [encoding.ids for encoding in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]
        longest = max((len(row) for row in ids), default=0)
        if padding and padding != "do_not_pad":
            if self.pad_token_id is None and any(len(row) != longest for row in ids):
                raise ValueError(
                    "the texts have different lengths and this tokenizer has no pad token; set one, e.g. "
                    "tokenizer.pad_token = tokenizer.eos_token"
                )
            masks = [[0] * (longest - len(row)) + [1] * len(row) for row in ids]
            pad = [self.pad_token_id] if self.pad_token_id is not None else []
            if self.padding_side == "left":
                ids = [pad * (longest - len(row)) + row for row in ids]
            else:
                ids = [row + pad * (longest - len(row)) for row in ids]
                masks = [m[::-1] for m in masks]
        else:
            masks = [[1] * len(row) for row in ids]
        if return_tensors == "pt":
            if any(len(row) != longest for row in ids):
                raise ValueError("return_tensors='pt' needs rows of equal length: pass padding=True")
            return BatchEncoding(input_ids=torch.tensor(ids, dtype=torch.long).reshape(len(ids), longest),
                                 attention_mask=torch.tensor(masks, dtype=torch.long).reshape(len(ids), longest))
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt' or None")
        if single:
            return BatchEncoding(input_ids=ids[0], attention_mask=masks[0])
        return BatchEncoding(input_ids=ids, attention_mask=masks)

    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: Optional[bool] = None, **unused: Any) -> str:
        """The text of ``token_ids`` (an int, a list or a 0-/1-D tensor)."""
        text = self.backend.decode(_as_id_list(token_ids), skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return _clean_up_spaces(text) if clean else text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: Optional[bool] = None, **unused: Any) -> List[str]:
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in sequences]


def _as_id_list(ids) -> List[int]:
    if isinstance(ids, torch.Tensor):
        return ids.reshape(-1).tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


def _clean_up_spaces(text: str) -> str:
    """transformers' ``clean_up_tokenization``: drop the space before punctuation and English contractions."""
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, joined)
    return text


def _token_text(value: Any) -> Optional[str]:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not readable JSON ({error}); restore it from the original checkpoint.") from None
    return data if isinstance(data, dict) else {}
