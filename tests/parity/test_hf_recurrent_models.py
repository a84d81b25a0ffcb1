"""Models with recurrent or convolutional state: state-space models (Mamba, Mamba2), hybrids of attention
and recurrence (Jamba, Qwen3-Next, RecurrentGemma), convolution layers (LFM2) and RWKV, whose forward
makes and returns its own state.

genplug's cache backends store attention keys and values only, so these models get transformers' own
cache (or keep their own state); the cases check that every decoding mode then gives transformers'
tokens and scores, that what cannot work is refused as transformers refuses it (assisted decoding: as
transformers < 5.25 does, see test_hf_deliberate_differences.py). Chunked prefill (``prefill_chunk_size``) on
these families is checked in test_hf_chunked_prefill.py. transformers' RWKV mixes the rows of a batch and
RecurrentGemma carries state from one call into the next; genplug does neither, which
test_hf_deliberate_differences.py checks against independent oracles, so RWKV is compared here on one row.
"""

from __future__ import annotations

import functools

import pytest
import torch
import transformers

import genplug
from genplug.errors import GenerationConfigError, GenerationInputError

from helpers.transformers_version import transformers_at_least
from parity_tools import VOCAB, assert_same, left_padded, run_both

_SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=VOCAB)
_MODELS = {
    "mamba": lambda: transformers.MambaForCausalLM(transformers.MambaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4)),
    "mamba2": lambda: transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4, num_heads=4, head_dim=16, n_groups=1,
        expand=2)),
    # layer 0 Mamba, layer 1 attention with experts
    "jamba": lambda: transformers.JambaForCausalLM(transformers.JambaConfig(
        **_SMALL, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
        num_experts=2, mamba_d_state=4, attn_implementation="eager")),
    # gated delta-net linear attention, then full attention
    "qwen3_next": lambda: transformers.Qwen3NextForCausalLM(transformers.Qwen3NextConfig(
        **_SMALL, head_dim=8, layer_types=["linear_attention", "full_attention"], linear_num_value_heads=2,
        linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8, num_experts=2, num_experts_per_tok=1,
        moe_intermediate_size=16, shared_expert_intermediate_size=16, attn_implementation="eager")),
    # short convolutions (no recurrent state: transformers can roll them back), then attention
    "lfm2": lambda: transformers.Lfm2ForCausalLM(transformers.Lfm2Config(
        **_SMALL, layer_types=["conv", "full_attention"], attn_implementation="eager")),
    "recurrent_gemma": lambda: transformers.RecurrentGemmaForCausalLM(transformers.RecurrentGemmaConfig(
        **{**_SMALL, "num_hidden_layers": 3}, lru_width=32, attention_window_size=8,
        block_types=["recurrent", "attention"], attn_implementation="eager")),
    # the forward builds a list of state tensors and returns it as `state`
    "rwkv": lambda: transformers.RwkvForCausalLM(transformers.RwkvConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, attention_hidden_size=32, intermediate_size=64,
        context_length=64)),
}
STATEFUL = ("mamba", "mamba2", "jamba", "qwen3_next", "recurrent_gemma", "rwkv")  # transformers' _is_stateful


@functools.lru_cache(maxsize=None)
def model(name: str):
    torch.manual_seed(0)
    return _MODELS[name]().eval()


def _inputs():
    return left_padded(batch=2, length=7, pads=(0, 3))


@pytest.mark.parametrize("name", list(_MODELS))
def test_greedy_and_sampling_with_scores(name):
    ids, mask = _inputs()
    if name == "rwkv":  # transformers mixes the rows of an RWKV batch; genplug's: test_hf_deliberate_differences.py
        ids, mask = ids[1:], mask[1:]
    common = dict(input_ids=ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, pad_token_id=0,
                  return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert_same(*run_both(model(name), **common))
    assert_same(*run_both(model(name), seed=3, do_sample=True, top_k=20, temperature=0.8, **common))


@pytest.mark.parametrize("name", list(_MODELS))
@pytest.mark.parametrize("mode", [dict(), dict(num_beams=2, early_stopping=True)], ids=["greedy", "beams"])
def test_an_early_stop_leaves_nothing_to_undo(name, mode):
    """The loop checks for a stop every few steps (8 by default) and crops the steps it ran past one off the
    cache; a recurrent or convolution state can be cropped only while it records its past, which transformers
    5.25 (and 5.23 for LFM2) does not tell in ``is_croppable``: such caches are checked every step instead."""
    if name == "rwkv" and mode:
        pytest.skip("RWKV keeps its own state and has no beam search")
    ids = torch.arange(4, 11)[None]
    short = model(name).generate(ids, max_new_tokens=3, num_return_sequences=mode.get("num_beams", 1), **mode)
    eos = sorted(set(short[:, -1].tolist()))  # what ends each hypothesis of a 3-token run
    ours, theirs = run_both(model(name), input_ids=ids, max_new_tokens=12, eos_token_id=eos, pad_token_id=0,
                            return_dict_in_generate=True, output_scores=True, **mode)
    assert ours.sequences.shape[1] < ids.shape[1] + 12  # it did stop early
    assert_same(ours, theirs, check=("scores", "sequences_scores") if mode else ("scores",))


# RecurrentGemma keeps part of its state on its modules, which transformers' beam search does not reorder and
# genplug's does: test_hf_deliberate_differences.py checks it against a beam search without a cache
@pytest.mark.parametrize("name", [n for n in _MODELS if n not in ("rwkv", "recurrent_gemma")])
def test_beam_search_reorders_the_recurrent_state(name):
    ids, mask = _inputs()
    assert_same(*run_both(model(name), input_ids=ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0,
                          num_beams=3, num_return_sequences=2, return_dict_in_generate=True, output_scores=True),
                check=("sequences_scores",))


@pytest.mark.parametrize("name", ["mamba", "jamba", "lfm2"])
def test_static_cache_is_transformers_own(name):
    ids, mask = _inputs()
    ours, theirs = run_both(model(name), input_ids=ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0,
                            cache_implementation="static", return_dict_in_generate=True)
    assert_same(ours, theirs, check=())
    assert isinstance(ours.past_key_values, transformers.StaticCache)


@pytest.mark.parametrize("name", STATEFUL)
def test_assisted_decoding_is_refused_for_stateful_models(name):
    ids = torch.arange(4, 10)[None].repeat(1, 3)
    with pytest.raises(GenerationInputError, match="stateful"):
        genplug.generate(model(name), ids, max_new_tokens=4, prompt_lookup_num_tokens=2)
    if not transformers_at_least("5.25"):  # 5.25 runs it: see test_hf_deliberate_differences.py
        with pytest.raises(ValueError):
            model(name).generate(ids, max_new_tokens=4, prompt_lookup_num_tokens=2)


def test_prompt_lookup_rolls_back_convolution_states():
    """LFM2's convolution layers keep no recurrent state, so rejected candidates can be taken back out."""
    ids = torch.arange(4, 10)[None].repeat(1, 3)
    assert_same(*run_both(model("lfm2"), input_ids=ids, max_new_tokens=10, prompt_lookup_num_tokens=3,
                          return_dict_in_generate=True, output_scores=True))


def test_a_stateful_draft_model_is_refused():
    target = model("lfm2")
    with pytest.raises(GenerationInputError, match="recurrent state"):
        genplug.generate(target, torch.arange(4, 10)[None], max_new_tokens=4, assistant_model=model("mamba"))


def test_key_value_only_backends_are_refused_with_the_ones_that_work():
    with pytest.raises(GenerationConfigError, match="'linear_attention'.*'dynamic'"):
        genplug.generate(model("jamba"), torch.arange(4, 10)[None], max_new_tokens=2, cache_implementation="quantized")


def test_rwkv_keeps_its_own_state_and_refuses_beams():
    ids = torch.arange(4, 10)[None]
    out = genplug.generate(model("rwkv"), ids, max_new_tokens=3, return_dict_in_generate=True)
    assert isinstance(out.past_key_values, list)  # the model's own state, as transformers returns it
    with pytest.raises(GenerationConfigError, match="own recurrent state"):
        genplug.generate(model("rwkv"), ids, max_new_tokens=3, num_beams=2)
    with pytest.warns(UserWarning, match="ignored"):
        ignored = genplug.generate(model("rwkv"), ids, max_new_tokens=3, cache_implementation="static")
    assert torch.equal(ignored, out.sequences)
