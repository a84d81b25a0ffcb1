"""``prefill_chunk_size`` on transformers models with recurrent or convolutional state.

With ``prefill_chunk_size`` the prompt goes through the cache in pieces: every piece after the first is a
forward over several tokens with a cache that already holds a state, which the forward must continue.
State-space models (Mamba2, Bamba, Zamba2), gated delta-nets (Qwen3-Next), short convolutions (LFM2) and RWKV
do; then the chunked run must give the scores of the unchunked one (oracle: transformers' own generate, one
forward over the whole prompt). transformers' Mamba-1 layers (Mamba, FalconMamba, Jamba, Zamba) start their
selective scan from an empty state in such a forward and RecurrentGemma's recurrent blocks restart their
convolution from zeros, so genplug refuses ``prefill_chunk_size`` for them; the case for each also checks that
the installed transformers still gets it wrong (if it stops doing so, take the family out of
``_STATE_RESTARTING_FORWARDS`` in plugins/transformers/adapter.py).

The tiny models' weights are made so that the state matters (``model``): with transformers' initialisation
the recurrent state of a 32-wide model moves the logits by less than the 1e-5 tolerance (under 2e-7 for Bamba,
Zamba2 and Qwen3-Next, nothing measurable for Zamba), so a state dropped between pieces would pass unnoticed;
here dropping it moves them by 0.06 or more (the first case checks more than 1e-4 for each family).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
import transformers

import genplug
from genplug.errors import GenerationInputError
from genplug.plugins.transformers.adapter import TransformersAdapter

from parity_tools import ATOL, VOCAB, assert_same, left_padded

_SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=VOCAB)
_MODELS = {
    "mamba": lambda: transformers.MambaForCausalLM(transformers.MambaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4)),
    "falcon_mamba": lambda: transformers.FalconMambaForCausalLM(transformers.FalconMambaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4)),
    # layer 0 Mamba, layer 1 attention with experts
    "jamba": lambda: transformers.JambaForCausalLM(transformers.JambaConfig(
        **_SMALL, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
        num_experts=2, mamba_d_state=4, attn_implementation="eager")),
    # Mamba layers, and hybrid ones that add a shared attention block
    "zamba": lambda: transformers.ZambaForCausalLM(transformers.ZambaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        attention_head_dim=16, num_key_value_heads=4, n_mamba_heads=2, mamba_d_state=4, attn_layer_period=2,
        attn_layer_offset=1, layers_block_type=["mamba", "hybrid", "mamba", "hybrid"], use_mamba_kernels=False,
        pad_token_id=0, attn_implementation="eager")),
    "recurrent_gemma": lambda: transformers.RecurrentGemmaForCausalLM(transformers.RecurrentGemmaConfig(
        **{**_SMALL, "num_hidden_layers": 3}, lru_width=32, attention_window_size=8,
        block_types=["recurrent", "attention"], attn_implementation="eager")),
    "mamba2": lambda: transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4, num_heads=4, head_dim=16, n_groups=1,
        expand=2)),
    # Mamba2 layer, then attention
    "bamba": lambda: transformers.BambaForCausalLM(transformers.BambaConfig(
        **_SMALL, attn_layer_indices=[1], mamba_n_heads=4, mamba_d_head=16, mamba_d_state=4, mamba_n_groups=1,
        mamba_expand=2, attn_implementation="eager")),
    "zamba2": lambda: transformers.Zamba2ForCausalLM(transformers.Zamba2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        mamba_d_state=4, mamba_headdim=8, n_mamba_heads=8, mamba_ngroups=1, intermediate_size=64,
        layers_block_type=["mamba", "hybrid"], hybrid_layer_ids=[1], attention_head_dim=8, num_mem_blocks=1,
        use_mem_rope=False, attn_implementation="eager")),
    # gated delta-net linear attention, then full attention
    "qwen3_next": lambda: transformers.Qwen3NextForCausalLM(transformers.Qwen3NextConfig(
        **_SMALL, head_dim=8, layer_types=["linear_attention", "full_attention"], linear_num_value_heads=2,
        linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8, num_experts=2, num_experts_per_tok=1,
        moe_intermediate_size=16, shared_expert_intermediate_size=16, attn_implementation="eager")),
    # short convolutions (no recurrent state), then attention
    "lfm2": lambda: transformers.Lfm2ForCausalLM(transformers.Lfm2Config(
        **_SMALL, layer_types=["conv", "full_attention"], attn_implementation="eager")),
    # the forward makes its state and returns it
    "rwkv": lambda: transformers.RwkvForCausalLM(transformers.RwkvConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, attention_hidden_size=32, intermediate_size=64,
        context_length=64)),
}
RESTARTING = ("mamba", "falcon_mamba", "jamba", "zamba", "recurrent_gemma")  # the forward restarts the state
CONTINUING = ("mamba2", "bamba", "zamba2", "qwen3_next", "lfm2", "rwkv")  # ... continues it
CHUNK = 4
PIECES = (CHUNK, CHUNK, 3)  # the 11-token prompt in pieces of 4


@functools.lru_cache(maxsize=None)
def model(name: str):
    """The tiny model ``name``, its state made to matter (module docstring): weights with std 0.2, slow decay
    (``A_log`` -4: A = -0.018) and wide steps (time-step bias 2: dt = 2.1) in the state-space layers."""
    torch.manual_seed(0)
    built = _MODELS[name]()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter_name, parameter in built.named_parameters():
            if parameter.dim() >= 2 and "embed" not in parameter_name and "lm_head" not in parameter_name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
            if parameter_name.endswith("A_log"):
                parameter.fill_(-4.0)
            if parameter_name.endswith(("dt_bias", "dt_proj.bias", "dt_proj_bias")):
                parameter.fill_(2.0)
    return built.eval()


def _inputs():
    """Row 1's padding (6 tokens) outlasts the first piece: its mask must still reach the second."""
    return left_padded(batch=2, length=sum(PIECES), pads=(0, 6))


def _greedy(**extra):
    ids, mask = _inputs()
    return dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=6, pad_token_id=0,
                return_dict_in_generate=True, output_scores=True, output_logits=True, **extra)


def _forward_in_pieces(m, pieces, forget_between=False) -> torch.Tensor:
    """The logits of an unpadded prompt fed as ``pieces`` through the cache transformers' generate would build
    (or the state the model makes), the cache's recurrent state (or, where it has none, its convolution state)
    dropped after the first piece if ``forget_between``."""
    adapter = TransformersAdapter(m)
    ids = torch.arange(4, 4 + sum(pieces))[None].repeat(2, 1)
    ids[1] = ids[1].flip(0)
    cache = None if adapter.makes_own_cache() else transformers.DynamicCache(config=adapter.decoder_config)
    logits, start = [], 0
    with torch.no_grad():
        for index, length in enumerate(pieces):
            if index == 1 and forget_between:
                cache = None if adapter.makes_own_cache() else _without_state(cache)
            kwargs = dict(input_ids=ids[:, start:start + length], past_key_values=cache, use_cache=True)
            if adapter.accepts("position_ids"):
                kwargs["position_ids"] = torch.arange(start, start + length)[None].repeat(2, 1)
            outputs = adapter.forward(**kwargs)
            cache = cache if cache is not None else genplug.models.returned_cache(outputs)
            logits.append(outputs.logits)
            start += length
    return torch.cat(logits, dim=1)


def _without_state(cache):
    """``cache`` with its layers' recurrent states zeroed -- their convolution states where no layer has one."""
    kind = "recurrent_states" if any(state is not None for layer in cache.layers
                                     for state in getattr(layer, "recurrent_states", {}).values()) else "conv_states"
    for layer in cache.layers:
        for state in getattr(layer, kind, {}).values():
            if state is not None:
                state.zero_()
    return cache


def _row_by_row(m, call):
    """transformers' generate on each row alone, its sequences, scores and logits stacked as one batch's."""
    rows = [m.generate(**{k: v[row:row + 1] if isinstance(v, torch.Tensor) else v for k, v in call.items()})
            for row in range(call["input_ids"].shape[0])]
    stacked = {name: tuple(map(torch.cat, zip(*(r[name] for r in rows)))) for name in ("scores", "logits")}
    return SimpleNamespace(sequences=torch.cat([r.sequences for r in rows]), **stacked)


def _gap(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("name", CONTINUING)
def test_the_state_carried_between_pieces_moves_the_logits_past_the_tolerance(name):
    """What makes the next case able to fail: a run that dropped the state between pieces would be far off."""
    whole = _forward_in_pieces(model(name), (sum(PIECES),))
    assert (_forward_in_pieces(model(name), PIECES, forget_between=True) - whole).abs().max() > 10 * ATOL
    assert (_forward_in_pieces(model(name), PIECES) - whole).abs().max() < ATOL


@pytest.mark.parametrize("name", CONTINUING)
@pytest.mark.parametrize("mode", [dict(), dict(num_beams=2)], ids=["greedy", "beams"])
def test_chunked_prefill_gives_the_unchunked_scores(name, mode):
    if name == "rwkv" and mode:
        pytest.skip("RWKV keeps its own state and has no beam search")
    reference = model(name).generate(**_greedy(**mode))  # transformers, one forward over the prompt
    if name == "rwkv":  # transformers' RWKV mixes the rows of a batch in one-token steps: its rows one at a time
        reference = _row_by_row(model(name), _greedy())
    chunked = genplug.generate(model(name), prefill_chunk_size=CHUNK, **_greedy(**mode))
    assert_same(chunked, reference, check=("scores", "sequences_scores") if mode else ("scores", "logits"))


@pytest.mark.parametrize("name", RESTARTING)
def test_chunked_prefill_is_refused_where_the_forward_restarts_the_state(name):
    """What transformers' own generate does with prefill_chunk_size here: 5.23 refuses it for Mamba and
    FalconMamba only by accident ('Cannot use prefill chunking without a cache': it looks for the cache under
    past_key_values, and they take it as cache_params); 5.25 runs it for them, on a padded batch into a shape
    error (the whole prefix's mask meets the piece's tokens), else off the model's logits. Jamba and Zamba it
    runs in both, off the model's logits. RecurrentGemma fails (its output carries no cache)."""
    m = model(name)
    whole = _forward_in_pieces(m, (sum(PIECES),))
    assert (_forward_in_pieces(m, PIECES) - whole).abs().max() > 10 * ATOL, (
        "the installed transformers now continues the state: chunked prefill can be allowed for " + name)

    short = dict(_greedy(), input_ids=_inputs()[0][:, -3:], attention_mask=_inputs()[1][:, -3:])
    for call in (_greedy(), _greedy(num_beams=2), short):
        # refused whatever the mode, and also when the prompt would fit in one piece
        with pytest.raises(GenerationInputError, match=f"prefill_chunk_size=4 .*{type(m).__name__} starts"):
            genplug.generate(m, prefill_chunk_size=CHUNK, **call)
    reference = m.generate(**_greedy())
    assert_same(genplug.generate(m, **_greedy()), reference)  # unchunked, genplug gives the model's scores
    try:
        theirs = m.generate(prefill_chunk_size=CHUNK, **_greedy())
    except (ValueError, AttributeError, RuntimeError):
        return
    assert _gap(theirs.logits, reference.logits) > 10 * ATOL  # transformers goes on, off the model's logits
