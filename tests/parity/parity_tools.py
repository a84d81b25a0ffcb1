"""Shared pieces of the transformers parity suite: tiny seeded models, prompts, and the comparison.

Every model is built from a config written here with random weights under a fixed seed -- nothing is
downloaded. A case runs genplug's ``genplug.generate(model, ...)`` and transformers' own
``model.generate(...)`` on the same inputs (re-seeding torch before each when sampling) and requires
the same sequences token for token and, when requested, the same scores / logits within 1e-5.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Optional

import torch
import transformers

import genplug

VOCAB = 128
ATOL = 1e-5
# Plus four float32 ulps of the value: summed beam scores reach hundreds, where one ulp is 6e-5 and the last bit
# depends on the CPU's vector width (AVX2 and AVX-512 kernels sum in different orders).
RTOL = 4 * 2.0 ** -23

# Small enough that a 20-token generation is a few milliseconds per step on one core.
_DECODER_ONLY = {
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, attn_implementation="eager")),
    "llama_sdpa": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, attn_implementation="sdpa")),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, attn_implementation="eager")),
    # per-head RMSNorm of queries and keys before RoPE
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, vocab_size=VOCAB, attn_implementation="eager")),
    # every layer slides, with a window shorter than the generations
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, sliding_window=4, attn_implementation="eager")),
    # hybrid: layer 0 slides, layer 1 attends to everything (Gemma 2/3 style)
    "gemma2": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, vocab_size=VOCAB, sliding_window=4, attn_implementation="eager")),
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2,
        attn_implementation="eager")),
    "gpt_neox": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, bos_token_id=1, eos_token_id=2, attn_implementation="eager")),
}

_ENCODER_DECODER = {
    "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, attn_implementation="eager")),
    "bart": lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        attn_implementation="eager")),
}

DECODER_ONLY = tuple(_DECODER_ONLY)
ENCODER_DECODER = tuple(_ENCODER_DECODER)


@functools.lru_cache(maxsize=None)
def tiny_model(name: str, seed: int = 0):
    """The tiny model ``name`` with seeded random weights, in eval mode (built once per process)."""
    factory = _DECODER_ONLY.get(name) or _ENCODER_DECODER[name]
    torch.manual_seed(seed)
    return factory().eval()


def prompt(batch: int = 2, length: int = 6, seed: int = 0, low: int = 4) -> torch.Tensor:
    """Random token ids in ``[low, VOCAB)`` (ids below ``low`` are kept for special tokens)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, VOCAB, (batch, length), generator=generator)


def left_padded(batch: int = 3, length: int = 7, pads=(0, 2, 4), pad_id: int = 0, seed: int = 0):
    """``(input_ids, attention_mask)`` with ``pads[i]`` pad tokens on the left of row ``i``."""
    ids = prompt(batch, length, seed)
    mask = torch.ones_like(ids)
    for row, count in enumerate(pads[:batch]):
        ids[row, :count] = pad_id
        mask[row, :count] = 0
    return ids, mask


def run_both(model, seed: Optional[int] = None, fresh: Optional[Callable[[], Dict[str, Any]]] = None, **kwargs):
    """``(genplug's output, transformers' output)`` for the same call.

    ``seed`` re-seeds torch before each call so sampling draws the same random numbers. ``fresh()``
    returns keyword arguments that must not be shared between the two calls (caches, which generate
    mutates), built anew for each.
    """
    if seed is not None:
        torch.manual_seed(seed)
    ours = genplug.generate(model, **kwargs, **(fresh() if fresh else {}))
    if seed is not None:
        torch.manual_seed(seed)
    theirs = model.generate(**kwargs, **(fresh() if fresh else {}))
    return ours, theirs


def assert_same(ours, theirs, *, check: tuple = ("scores", "logits")) -> None:
    """Same sequences token for token; the per-step tensors named in ``check`` within 1e-5 (+ 4 ulps)."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), f"genplug returned {type(ours).__name__}, transformers a tensor"
        _assert_tokens(ours, theirs)
        return
    _assert_tokens(ours.sequences, theirs.sequences)
    for name in check:
        mine, reference = getattr(ours, name, None), getattr(theirs, name, None)
        assert (mine is None) == (reference is None), f"{name}: genplug {_kind(mine)}, transformers {_kind(reference)}"
        if reference is not None:
            assert_nested_close(mine, reference, name)


def assert_nested_close(mine, reference, what: str) -> None:
    """Tuples (of tuples) of tensors: same structure, same shapes, values within ``ATOL`` + ``RTOL`` of the value."""
    if isinstance(reference, torch.Tensor):
        assert isinstance(mine, torch.Tensor), f"{what}: genplug has {type(mine).__name__}, transformers a tensor"
        assert mine.shape == reference.shape, f"{what}: shape {tuple(mine.shape)} != transformers' {tuple(reference.shape)}"
        torch.testing.assert_close(mine, reference, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")
        return
    assert len(mine) == len(reference), f"{what}: {len(mine)} entries, transformers has {len(reference)}"
    for index, (a, b) in enumerate(zip(mine, reference)):
        assert_nested_close(a, b, f"{what}[{index}]")


def _assert_tokens(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape and torch.equal(ours, theirs), (
        f"sequences differ:\ngenplug      {ours.tolist()}\ntransformers {theirs.tolist()}"
    )


def _kind(value) -> str:
    return "None" if value is None else type(value).__name__


def token_generated_at(model, input_ids, step: int, row: int = 0, **kwargs) -> int:
    """The token transformers' greedy search emits at ``step`` for ``row`` (used to pick an EOS id that
    really occurs, so that per-row stopping is exercised)."""
    out = model.generate(input_ids, max_new_tokens=step + 1, do_sample=False, eos_token_id=None, **kwargs)
    start = 1 if model.config.is_encoder_decoder else input_ids.shape[1]
    return int(out[row, start + step])


# ------------------------------------------------------------------------------ an independent oracle


def reference_decode(model, input_ids: torch.Tensor, steps: int, warp: Callable, do_sample: bool,
                     seed: Optional[int] = None) -> torch.Tensor:
    """A hand-written decoding loop: recompute the whole sequence each step (no cache, no padding),
    apply ``warp(ids, float32 logits)``, then argmax or one ``torch.multinomial`` per step -- the RNG
    use of both libraries, so a seed draws the same tokens. The oracle where genplug deliberately
    differs from transformers."""
    if seed is not None:
        torch.manual_seed(seed)
    ids = input_ids
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=ids, use_cache=False).logits[:, -1, :].float()
            scores = warp(ids, logits)
            if do_sample:
                chosen = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                chosen = scores.argmax(-1)
            ids = torch.cat([ids, chosen[:, None]], dim=-1)
    return ids


def top_k_by_hand(scores: torch.Tensor, k: int) -> torch.Tensor:
    threshold = scores.topk(k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < threshold, float("-inf"))
