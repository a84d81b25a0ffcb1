"""Helpers for the native-model tests: tiny seeded models and checkpoints (imported by the test modules)."""

from __future__ import annotations

import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEFAULT_MODEL_DIR = os.path.join(REPO, "core", "assets", "default_model")

# Small but not degenerate: grouped-query attention (4 query heads share 2 key/value heads).
TINY_SHAPE = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def randomize(model, seed: int = 0):
    """Give every weight, bias and norm a visible random value (transformers zero-inits biases)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1.0 + 0.2 * noise if "norm" in name else 0.2 * noise)
    return model


def transformers_model(family: str, seed: int = 0, **overrides):
    """A random transformers model of ``family`` (llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, phi3) with
    TINY_SHAPE plus overrides."""
    transformers = pytest.importorskip("transformers")
    config_cls, model_cls = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
        "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
        "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
        "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM),
        "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM),
    }[family]
    if family in ("qwen3", "gemma", "gemma2", "gemma3"):  # their configs' head_dim defaults do not fit TINY_SHAPE
        overrides = {"head_dim": TINY_SHAPE["hidden_size"] // TINY_SHAPE["num_attention_heads"], **overrides}
    if family == "phi3":  # Phi3Config's special ids (32000) lie outside the tiny vocabulary
        overrides = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, **overrides}
    config = config_cls(**{**TINY_SHAPE, **overrides})
    torch.manual_seed(seed)
    return randomize(model_cls(config), seed).eval()


# The NativeLlamaConfig switches of each Gemma generation (what NativeLlamaConfig.from_dict sets for them),
# with soft-caps and an attention scale small enough to matter on random weights.
GEMMA_SWITCHES = {
    "gemma": dict(model_type="gemma", unit_offset_norms=True, scale_embeddings=True, hidden_act="gelu_pytorch_tanh",
                  tie_word_embeddings=True),
    "gemma2": dict(model_type="gemma2", unit_offset_norms=True, scale_embeddings=True, sandwich_norms=True,
                   hidden_act="gelu_pytorch_tanh", query_pre_attn_scalar=12, attn_logit_softcapping=2.0,
                   final_logit_softcapping=3.0, sliding_window=4,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
    "gemma3_text": dict(model_type="gemma3_text", unit_offset_norms=True, scale_embeddings=True, sandwich_norms=True,
                        qk_norm=True, hidden_act="gelu_pytorch_tanh", query_pre_attn_scalar=12,
                        final_logit_softcapping=3.0, sliding_window=4,
                        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                        rope_parameters={"rope_type": "linear", "rope_theta": 1_000_000.0, "factor": 4.0},
                        local_rope_parameters={"rope_type": "default", "rope_theta": 100.0}),
}


def longrope(partial_rotary_factor: float = 1.0, original_max_position_embeddings: int = 16, head_dim: int = 8,
             seed: int = 0) -> dict:
    """Phi-3's LongRoPE parameters with random short (1-2) and long (2-6) factors, one per rotated pair."""
    pairs = int(head_dim * partial_rotary_factor) // 2
    generator = torch.Generator().manual_seed(seed)
    return {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": partial_rotary_factor,
            "short_factor": (1 + torch.rand(pairs, generator=generator)).tolist(),
            "long_factor": (2 + 4 * torch.rand(pairs, generator=generator)).tolist(),
            "original_max_position_embeddings": original_max_position_embeddings}


# Phi-3 as NativeLlamaConfig.from_dict sets it: half of each head rotated; Phi-4-mini's 3/4 with LongRoPE whose
# original context (2 tokens) every forward of these tests outgrows, so the long factors and the cos/sin scale
# (max_position_embeddings 64 / 2: sqrt(1 + ln 32 / ln 2)) are what decoding runs on.
PHI3_SWITCHES = {
    "phi3": dict(model_type="phi3", rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                     "partial_rotary_factor": 0.5}),
    "phi4_mini": dict(model_type="phi3", rope_parameters=longrope(0.75, original_max_position_embeddings=2)),
}


def native_model(seed: int = 0, **overrides):
    """A random native model built from a NativeLlamaConfig (no transformers needed)."""
    from genplug.plugins.models.llama.config import NativeLlamaConfig
    from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM

    shape = {**TINY_SHAPE, "head_dim": TINY_SHAPE["hidden_size"] // TINY_SHAPE["num_attention_heads"], **overrides}
    torch.manual_seed(seed)
    return randomize(NativeLlamaForCausalLM(NativeLlamaConfig(**shape)), seed).eval()
