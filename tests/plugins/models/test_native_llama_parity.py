"""The native Llama family computes what transformers computes, on checkpoints transformers wrote."""

from __future__ import annotations

import os

import pytest
import torch

from genplug.plugins.models.llama.loader import load_model
from native_llama_fixtures import longrope

pytestmark = pytest.mark.parity
transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
GEMMA3_LAYERS = ["sliding_attention", "full_attention", "sliding_attention"]
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}

CASES = {
    "llama": ("llama", {}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama3-rope": ("llama", {"rope_parameters": LLAMA3_ROPE}),
    "llama3-rope-tied": ("llama", {"rope_parameters": LLAMA3_ROPE, "tie_word_embeddings": True}),
    "llama-linear-rope": ("llama", {"rope_parameters": {"rope_type": "linear", "rope_theta": 500.0, "factor": 4.0}}),
    "llama-biases": ("llama", {"attention_bias": True, "mlp_bias": True}),
    "llama-mha": ("llama", {"num_key_value_heads": 4}),
    "llama-head-dim": ("llama", {"head_dim": 16}),  # head_dim * heads != hidden_size
    "mistral-window": ("mistral", {"sliding_window": 5}),
    "mistral-no-window": ("mistral", {"sliding_window": None}),
    "qwen2": ("qwen2", {}),
    "qwen2-sliding-layers": ("qwen2", {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 1}),
    "qwen3": ("qwen3", {}),
    "qwen3-biases-tied": ("qwen3", {"attention_bias": True, "tie_word_embeddings": True}),
    "qwen3-head-dim": ("qwen3", {"head_dim": 16}),
    "qwen3-sliding-layers": ("qwen3", {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 1}),
    # Gemma: embeddings times sqrt(hidden_size), (1 + weight) norms, tanh-GELU; tied embeddings by default
    "gemma": ("gemma", {}),
    "gemma-biases-untied": ("gemma", {"attention_bias": True, "tie_word_embeddings": False}),
    # Gemma 2: four norms per layer, alternating windows (5 < the 24 tokens), soft-capped scores and logits
    "gemma2": ("gemma2", {"sliding_window": 5}),
    "gemma2-small-caps": ("gemma2", {"sliding_window": 5, "attn_logit_softcapping": 2.0,
                                     "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 12}),
    # Gemma 3: q/k norms, a local RoPE (theta 10k) on sliding layers and a global one (1M) on full ones
    "gemma3": ("gemma3", {"sliding_window": 5, "layer_types": GEMMA3_LAYERS}),
    "gemma3-linear-rope-capped": ("gemma3", {
        "sliding_window": 5, "layer_types": GEMMA3_LAYERS, "final_logit_softcapping": 3.0, "query_pre_attn_scalar": 12,
        "rope_parameters": {"full_attention": {"rope_type": "linear", "rope_theta": 1_000_000.0, "factor": 8.0},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}}),
    # Phi-3: q/k/v and gate/up stored fused; half the head rotated, all layers windowed (Phi-3-mini-4k: 2047)
    "phi3-partial-window": ("phi3", {"partial_rotary_factor": 0.5, "sliding_window": 5}),
    "phi3-full-rotary": ("phi3", {}),
    # Phi-4-mini's 3/4 of each head with LongRoPE: 24 tokens are past an original context of 16 (long factors)
    # or within one of 32 (short factors); with 12, the step-by-step decoding below crosses over mid-way
    "phi4-mini-longrope-long": ("phi3", {"rope_parameters": longrope(0.75, 16), "original_max_position_embeddings": 16}),
    "phi4-mini-longrope-short": ("phi3", {"rope_parameters": longrope(0.75, 32), "original_max_position_embeddings": 32}),
    "phi3-longrope-crossing": ("phi3", {"rope_parameters": longrope(1.0, 12, seed=1),
                                        "original_max_position_embeddings": 12}),
}
GEMMA_CASES = sorted(case for case in CASES if case.startswith("gemma"))
PHI3_CASES = sorted(case for case in CASES if case.startswith("phi"))


def logits_of(model, input_ids, **kwargs):
    with torch.no_grad():
        return model(input_ids=input_ids, **kwargs).logits.float()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(make_checkpoint, case):
    family, overrides = CASES[case]
    reference, directory = make_checkpoint(family, **overrides)
    native, tokenizer = load_model(directory)
    assert tokenizer is None  # save_pretrained of a model writes no tokenizer
    input_ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    expected = logits_of(reference, input_ids)
    assert logits_of(native, input_ids).sub(expected).abs().max() <= TOLERANCE


def test_sharded_checkpoint_matches(make_checkpoint):
    reference, directory = make_checkpoint("llama", max_shard_size="20KB")
    assert os.path.exists(os.path.join(directory, "model.safetensors.index.json"))
    assert len([f for f in os.listdir(directory) if f.endswith(".safetensors")]) > 1
    native, _ = load_model(directory)
    input_ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(2))
    assert logits_of(native, input_ids).sub(logits_of(reference, input_ids)).abs().max() <= TOLERANCE


def test_dynamic_rope_matches_beyond_trained_length(make_checkpoint):
    # Positions up to 40 with max_position_embeddings=16: the NTK base grows, as in transformers.
    rope = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    reference, directory = make_checkpoint("llama", rope_parameters=rope, max_position_embeddings=16)
    native, _ = load_model(directory)
    input_ids = torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(3))
    assert logits_of(native, input_ids).sub(logits_of(reference, input_ids)).abs().max() <= TOLERANCE


@pytest.mark.parametrize("family, overrides", [
    ("mistral", {"sliding_window": 4}),
    ("gemma2", {"sliding_window": 4, "attn_logit_softcapping": 2.0, "query_pre_attn_scalar": 12}),  # capped scores
])
def test_hidden_states_and_attentions_match(make_checkpoint, family, overrides):
    reference, directory = make_checkpoint(family, attn_implementation="eager", **overrides)
    native, _ = load_model(directory)
    input_ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = native(input_ids=input_ids, output_hidden_states=True, output_attentions=True)
        theirs = reference(input_ids=input_ids, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 4
    for mine, expected in zip(ours.hidden_states, theirs.hidden_states):
        assert mine.sub(expected).abs().max() <= TOLERANCE
    assert len(ours.attentions) == len(theirs.attentions) == 3
    for mine, expected in zip(ours.attentions, theirs.attentions):
        assert mine.sub(expected).abs().max() <= TOLERANCE
    # output_attentions switches to eager attention; the logits must not change with it
    assert ours.logits.sub(logits_of(native, input_ids)).abs().max() <= TOLERANCE


@pytest.mark.parametrize("case", GEMMA_CASES + PHI3_CASES)
def test_left_padded_prefill_then_decoding_match_transformers_within_5e_5(make_checkpoint, case):
    """Gemma's and Phi-3's own arithmetic, float32, within 5e-5 of transformers: a left-padded prompt, then
    one token at a time on each library's own cache, past the sliding window (5) of the sliding layers, and
    (phi3-longrope-crossing) from LongRoPE's short factors to its long ones, over keys cached with the short.

    Not 1e-5: on an AVX-512 CPU (2026-12-06) both libraries' Gemma logits (scaled embeddings, magnitude ~5)
    sat up to 1.5-1.8e-5 from a float64 run of transformers, and 2.2e-5 from each other. A wrong mask,
    position or norm is off by 1e-2 or more."""
    family, overrides = CASES[case]
    reference, directory = make_checkpoint(family, **overrides)
    native, _ = load_model(directory)
    generator = torch.Generator().manual_seed(8)
    input_ids = torch.randint(1, 97, (2, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :4] = 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    caches = {"native": None, "reference": None}
    valid = attention_mask.bool()
    for step in range(7):
        kwargs = dict(attention_mask=attention_mask, position_ids=position_ids)
        with torch.no_grad():
            ours = native(input_ids=input_ids, past_key_values=caches["native"], **kwargs)
            theirs = reference(input_ids=input_ids, past_key_values=caches["reference"], use_cache=True, **kwargs)
        caches = {"native": ours.past_key_values, "reference": theirs.past_key_values}
        assert ours.logits[valid].sub(theirs.logits[valid]).abs().max() <= 5e-5, step
        input_ids = torch.randint(1, 97, (2, 1), generator=generator)
        attention_mask = torch.cat([attention_mask, torch.ones_like(input_ids)], dim=-1)
        position_ids, valid = position_ids[:, -1:] + 1, torch.ones_like(input_ids, dtype=torch.bool)


def test_left_padded_batch_matches_transformers(make_checkpoint):
    reference, directory = make_checkpoint("qwen2")
    native, _ = load_model(directory)
    input_ids = torch.randint(1, 97, (2, 9), generator=torch.Generator().manual_seed(5))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :4] = 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = dict(attention_mask=attention_mask, position_ids=position_ids)
    ours, theirs = logits_of(native, input_ids, **kwargs), logits_of(reference, input_ids, **kwargs)
    valid = attention_mask.bool()
    assert ours[valid].sub(theirs[valid]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("family, overrides", [("llama", {}), ("mistral", {"sliding_window": 5})])
def test_decoding_with_transformers_cache_matches_transformers(make_checkpoint, family, overrides):
    """The native model runs on transformers' own DynamicCache (sliding layers keep only the window)."""
    reference, directory = make_checkpoint(family, **overrides)
    native, _ = load_model(directory)
    tokens = torch.randint(0, 97, (1, 14), generator=torch.Generator().manual_seed(6))
    caches = {"native": transformers.DynamicCache(config=reference.config),
              "reference": transformers.DynamicCache(config=reference.config)}
    steps = [tokens[:, :6]] + [tokens[:, i : i + 1] for i in range(6, 14)]
    for chunk in steps:
        ours = logits_of(native, chunk, past_key_values=caches["native"])
        theirs = logits_of(reference, chunk, past_key_values=caches["reference"])
        assert ours.sub(theirs).abs().max() <= TOLERANCE
    assert caches["native"].get_seq_length() == 14


def test_reduced_precision_runs_close_to_float32(make_checkpoint):
    _, directory = make_checkpoint("llama")
    input_ids = torch.randint(0, 97, (1, 8), generator=torch.Generator().manual_seed(7))
    full, _ = load_model(directory)
    expected = logits_of(full, input_ids)
    for dtype in (torch.bfloat16, torch.float16):
        model, _ = load_model(directory, dtype=dtype)
        assert model.dtype == dtype and model.model.rotary_emb.inv_freq.dtype == torch.float32
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits
        assert logits.dtype == dtype
        assert logits.float().sub(expected).abs().max() < 0.15 * expected.abs().max()
