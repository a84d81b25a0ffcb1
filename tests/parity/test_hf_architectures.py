"""A sweep over transformers architectures beyond the core parity set: greedy search, beam search,
sampling and the static cache, each with scores, must give transformers' own results.

Each family stresses something of its own: mixture-of-experts routing (Mixtral, Qwen3-MoE, GPT-OSS),
attention sinks and alternating windows (GPT-OSS, Cohere2, OLMo 3), chunked attention and layers
without RoPE (Llama 4, SmolLM3), partial rotary (Phi-3 with ``partial_rotary_factor``), parallel
blocks and ALiBi (Falcon, BLOOM), learned positions (OPT, XGLM), Mamba layers beside shared
attention (Zamba2), and encoder-decoder families (mBART, Pegasus, Marian, mT5).
"""

from __future__ import annotations

import functools

import pytest
import torch
import transformers

from parity_tools import VOCAB, assert_same, run_both

_SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=VOCAB)
_SEQ2SEQ = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)
_SLIDING = dict(sliding_window=4, layer_types=["sliding_attention", "full_attention"])

_FAMILIES = {
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(_SMALL, num_local_experts=2)),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(_SMALL, head_dim=8, num_experts=4, num_experts_per_tok=2,
                                                                 moe_intermediate_size=16)),
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", dict(_SMALL, head_dim=8, num_local_experts=2, num_experts_per_tok=1,
                                                           **_SLIDING)),
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM", dict(_SMALL, **_SLIDING)),
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM", dict(_SMALL, **_SLIDING)),
    "llama4_text": ("Llama4TextConfig", "Llama4ForCausalLM", dict(_SMALL, head_dim=8, attention_chunk_size=4,
                                                                  num_local_experts=2, intermediate_size_mlp=64,
                                                                  no_rope_layers=[1, 0], moe_layers=[1])),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", dict(_SMALL, no_rope_layers=[1, 0], pad_token_id=0)),
    "phi3_partial_rotary": ("Phi3Config", "Phi3ForCausalLM", dict(_SMALL, partial_rotary_factor=0.5, pad_token_id=0)),
    "falcon": ("FalconConfig", "FalconForCausalLM", dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                                           num_attention_heads=4, alibi=True)),
    "bloom": ("BloomConfig", "BloomForCausalLM", dict(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4)),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32)),
    "zamba2": ("Zamba2Config", "Zamba2ForCausalLM", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, vocab_size=VOCAB,
        mamba_d_state=4, mamba_headdim=8, n_mamba_heads=8, layers_block_type=["mamba", "hybrid"],
        hybrid_layer_ids=[1], use_mem_rope=False, adapter_rank=4, intermediate_size=64)),
    "mbart": ("MBartConfig", "MBartForConditionalGeneration", _SEQ2SEQ),
    "pegasus": ("PegasusConfig", "PegasusForConditionalGeneration", _SEQ2SEQ),
    "marian": ("MarianConfig", "MarianMTModel", dict(_SEQ2SEQ, decoder_start_token_id=0, pad_token_id=0)),
    "mt5": ("MT5Config", "MT5ForConditionalGeneration", dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                            num_heads=4, decoder_start_token_id=0)),
}
_MODES = {
    "greedy": dict(),
    "beam search": dict(num_beams=3, num_return_sequences=2),
    "sampling": dict(do_sample=True, top_k=20),
    "static cache": dict(cache_implementation="static"),
}


@functools.lru_cache(maxsize=None)
def model(name: str):
    config_class, model_class, settings = _FAMILIES[name]
    torch.manual_seed(0)
    return getattr(transformers, model_class)(getattr(transformers, config_class)(**settings)).eval()


# transformers' own generate fails on these pairs (ALiBi Falcon cannot take a static cache)
_BROKEN_IN_TRANSFORMERS = {("falcon", "static cache")}


@pytest.mark.parametrize("mode", list(_MODES))
@pytest.mark.parametrize("name", list(_FAMILIES))
def test_family_matches_transformers(name, mode):
    if (name, mode) in _BROKEN_IN_TRANSFORMERS:
        pytest.skip("transformers' own generate fails here")
    lm = model(name)
    ids = torch.randint(4, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    if not lm.config.is_encoder_decoder:
        mask[1, :2] = 0  # a left-padded row
    check = ("sequences_scores",) if "num_beams" in _MODES[mode] else ("scores",)
    assert_same(*run_both(lm, seed=1, input_ids=ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10,
                          pad_token_id=0, return_dict_in_generate=True, output_scores=True, **_MODES[mode]),
                check=check)
