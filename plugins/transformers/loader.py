"""``genplug generate --model DIR`` for checkpoints the native model family does not claim.

Registered with ``priority=-10`` so it is asked last: the native loader keeps the Llama family, and
this one loads every other transformers checkpoint (GPT-2, T5, BART, ...) with transformers' Auto
classes -- from the local directory only, never from the hub, and never running remote code.

The tokenizer is transformers' own when the directory has a ``tokenizer_config.json``; a bare
``tokenizer.json`` (as the ``tokenizers`` library writes it) is wrapped in a
``PreTrainedTokenizerFast`` whose special tokens come from the model's token ids. Decoder-only
models get left padding, which batched generation needs.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Optional, Tuple

from genplug import hookimpl

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class TransformersLoader:
    """Loads any local transformers checkpoint with a language-model head."""

    @staticmethod
    def claims(path) -> bool:
        """True for a directory with a config.json naming a ``model_type``, when transformers is installed.

        Cheap and never raises: it reads one JSON file and does not import transformers.
        """
        try:
            with open(os.path.join(os.fspath(path), CONFIG_FILE), encoding="utf-8") as handle:
                model_type = json.load(handle).get("model_type")
        except (OSError, ValueError, TypeError, AttributeError):
            return False
        return bool(model_type) and importlib.util.find_spec("transformers") is not None

    @staticmethod
    def load(path, device="cpu", dtype=None) -> Tuple[Any, Any]:
        """``(model, tokenizer or None)``: the model in eval mode on ``device``."""
        return load_model(path, device=device, dtype=dtype)


def load_model(path, device="cpu", dtype=None) -> Tuple[Any, Any]:
    import transformers

    path = os.fspath(path)
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    auto_class = transformers.AutoModelForSeq2SeqLM if config.is_encoder_decoder else transformers.AutoModelForCausalLM
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # a local checkpoint loads in a blink; keep stderr clean
    try:
        model = auto_class.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                           dtype=dtype if dtype is not None else "auto")
    except ValueError as exc:
        kind = "sequence-to-sequence" if config.is_encoder_decoder else "causal"
        raise ValueError(
            f"transformers cannot load {path} (model_type={config.model_type!r}) as a {kind} language model: {exc}"
        ) from exc
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    model.to(device).eval()
    return model, load_tokenizer(path, model)


def load_tokenizer(path: str, model: Any) -> Optional[Any]:
    """The checkpoint's tokenizer as a transformers tokenizer, or None without any tokenizer file."""
    import transformers

    decoder_only = not model.config.is_encoder_decoder
    if os.path.isfile(os.path.join(path, TOKENIZER_CONFIG_FILE)):
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    elif os.path.isfile(os.path.join(path, TOKENIZER_FILE)):
        tokenizer_file = os.path.join(path, TOKENIZER_FILE)
        special = _special_tokens(transformers.PreTrainedTokenizerFast(tokenizer_file=tokenizer_file), model)
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, **special)
    else:
        return None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs one; generation masks it out
    if decoder_only:
        tokenizer.padding_side = "left"
    return tokenizer


def _special_tokens(bare_tokenizer: Any, model: Any) -> dict:
    """``{"bos_token": ..., "eos_token": ..., "pad_token": ...}`` named from the ids in the model's
    generation config (else its config), so that decoding can skip them."""
    sources = [getattr(model, "generation_config", None), model.config]
    special = {}
    for name in ("bos", "eos", "pad"):
        token_id = next((getattr(s, f"{name}_token_id", None) for s in sources
                         if getattr(s, f"{name}_token_id", None) is not None), None)
        if isinstance(token_id, (list, tuple)):
            token_id = token_id[0] if token_id else None
        token = bare_tokenizer.convert_ids_to_tokens(token_id) if isinstance(token_id, int) else None
        if token is not None:
            special[f"{name}_token"] = token
    return special


@hookimpl
def genplug_register_model_loaders(register):
    register("transformers", TransformersLoader, priority=-10,
             description="any local transformers checkpoint with a language-model head (asked after the native loader)")
