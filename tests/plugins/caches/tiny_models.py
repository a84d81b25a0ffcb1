"""Tiny seeded transformers models and the manual decoding loops the cache tests drive them with."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from genplug.cache import CacheRequest, build_cache

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)


def seeded(model_class, config, seed=0):
    torch.manual_seed(seed)
    return model_class(config).eval()


def tiny_llama(seed=0):
    return seeded(transformers.LlamaForCausalLM, transformers.LlamaConfig(**SMALL), seed)


def tiny_mistral(window, seed=0):
    return seeded(transformers.MistralForCausalLM, transformers.MistralConfig(**SMALL, sliding_window=window), seed)


def tiny_qwen2(layer_types, window, seed=0):
    config = transformers.Qwen2Config(**SMALL, use_sliding_window=True, sliding_window=window, layer_types=layer_types)
    return seeded(transformers.Qwen2ForCausalLM, config, seed)


def agreement_model():
    """The model of the quantized-cache agreement test.

    genplug's embedded default model (a trained story model, loaded by transformers), or the local
    checkpoint directory ``GENPLUG_CACHE_TEST_MODEL`` points at.
    """
    import genplug

    path = os.environ.get("GENPLUG_CACHE_TEST_MODEL") or str(genplug.default_model_path())
    return transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()


def registry():
    from genplug.plugin_manager import new_plugin_manager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return new_plugin_manager(autoload=False).registries.cache_backends


def request(config, batch=2, max_cache_len=64, cache_config=None, **kwargs):
    return CacheRequest(config, batch, max_cache_len, torch.float32, torch.device("cpu"), dict(cache_config or {}), **kwargs)


def build(name, config, **kwargs):
    return build_cache(registry(), name, request(config, **kwargs))


@torch.no_grad()
def greedy_with_cache(model, prompt, cache, steps):
    """Prefill, then one token per step through ``past_key_values=cache``; returns (ids, step logits)."""
    out = model(input_ids=prompt, past_key_values=cache, use_cache=True)
    ids, all_logits = prompt, []
    for _ in range(steps):
        logits = out.logits[:, -1]
        all_logits.append(logits)
        token = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
    return ids, torch.stack(all_logits, dim=1)


@torch.no_grad()
def teacher_forced_logits(model, ids, prompt_length, cache):
    """Next-token logits at every position after the prompt, feeding ``ids`` one token at a time."""
    out = model(input_ids=ids[:, :prompt_length], past_key_values=cache, use_cache=True)
    all_logits = []
    for position in range(prompt_length, ids.shape[1]):
        all_logits.append(out.logits[:, -1])
        out = model(input_ids=ids[:, position : position + 1], past_key_values=cache, use_cache=True)
    return torch.stack(all_logits, dim=1)


@torch.no_grad()
def recompute_logits(model, ids, prompt_length):
    """The no-cache oracle: the whole sequence again at every step (the model's own mask, windowed or not)."""
    return torch.stack(
        [model(input_ids=ids[:, :end], use_cache=False).logits[:, -1] for end in range(prompt_length, ids.shape[1])],
        dim=1,
    )
