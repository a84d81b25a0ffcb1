"""The native twin: genplug's native kernels over a transformers model's own weights.

Oracles: transformers' own generate (token for token, scores within 1e-5) and the transformers forward
(logits); the checks of when the twin must *not* stand in are properties of the model as built here.
"""

import copy
import functools

import pytest
import torch
import transformers

import genplug
import genplug.graph_loop as graph_loop
from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM
from genplug.plugins.transformers.native_twin import native_twin, why_no_twin

from parity_tools import VOCAB, assert_same, left_padded, prompt, run_both, tiny_model

SCORES = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)

GEMMA_SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=8, vocab_size=VOCAB)
SLIDING_FIRST = ["sliding_attention", "full_attention", "sliding_attention"]  # Gemma 2/3's alternation
GEMMA = {
    "gemma": lambda window: transformers.GemmaForCausalLM(transformers.GemmaConfig(**GEMMA_SHAPE)),  # SDPA
    # eager attention (soft-capped scores), final logit soft-cap, query_pre_attn_scalar, four norms per layer
    "gemma2": lambda window: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        **GEMMA_SHAPE, sliding_window=window, layer_types=SLIDING_FIRST, attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0, query_pre_attn_scalar=12, attn_implementation="eager")),
    # SDPA, q/k norms, a linear-scaled global RoPE and a local one of another base
    "gemma3": lambda window: transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(
        **GEMMA_SHAPE, sliding_window=window, layer_types=SLIDING_FIRST, final_logit_softcapping=3.0,
        query_pre_attn_scalar=12, rope_parameters={
            "full_attention": {"rope_type": "linear", "rope_theta": 1_000_000.0, "factor": 4.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})),
}


@functools.lru_cache(maxsize=None)
def gemma_model(name: str, window: int = 4):
    """A tiny Gemma with every weight random -- norms too (transformers starts them at 0, i.e. a scale
    of 1 + 0) -- and large enough for the soft-caps to bend scores and logits. Shared: do not modify."""
    torch.manual_seed(0)
    model = GEMMA[name](window).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            std = 0.5 if "norm" in parameter_name else 0.2
            parameter.copy_(std * torch.randn(parameter.shape, generator=generator))
    return model


PHI3_SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2)


def longrope(partial_rotary_factor: float, original: int, head_dim: int = 8) -> dict:
    """LongRoPE parameters with random short (1-2) and long (2-6) factors, one per rotated pair of a head."""
    pairs = int(head_dim * partial_rotary_factor) // 2
    generator = torch.Generator().manual_seed(3)
    return dict(rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                 "partial_rotary_factor": partial_rotary_factor,
                                 "short_factor": (1 + torch.rand(pairs, generator=generator)).tolist(),
                                 "long_factor": (2 + 4 * torch.rand(pairs, generator=generator)).tolist()},
                original_max_position_embeddings=original)


PHI3 = {
    # Phi-3-mini-4k's layout: whole heads rotated, every layer windowed (4 here; 2047 there); SDPA
    "phi3_window": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(**PHI3_SHAPE, sliding_window=4)),
    # half of each head rotated; eager attention
    "phi3_partial": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(
        **PHI3_SHAPE, partial_rotary_factor=0.5, attn_implementation="eager")),
    # Phi-4-mini's: 3/4 of each head, LongRoPE over an original context of 16 (cos/sin scaled: 64 / 16)
    "phi4_mini": lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(**PHI3_SHAPE, **longrope(0.75, 16))),
}


@functools.lru_cache(maxsize=None)
def phi3_model(name: str):
    """A tiny Phi-3 with every weight random (norms around 1). Shared: do not modify."""
    torch.manual_seed(0)
    model = PHI3[name]().eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(1 + 0.2 * noise if "norm" in parameter_name else 0.2 * noise)
    return model


@pytest.fixture
def twin_calls(monkeypatch):
    calls = []
    original = NativeLlamaForCausalLM.forward

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("input_ids"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(NativeLlamaForCausalLM, "forward", counting)
    return calls


@pytest.mark.parametrize("name", ["llama", "llama_sdpa", "qwen2", "qwen3", "mistral", "gemma2"])
def test_twin_logits_match_the_transformers_forward(name):
    model = tiny_model(name)
    assert why_no_twin(model) is None
    ids = prompt(batch=2, length=9)
    with torch.no_grad():
        theirs = model(input_ids=ids).logits
        ours = native_twin(model)(input_ids=ids, logits_to_keep=0).logits
    assert (ours - theirs).abs().max() <= 1e-5


def assert_generate_through_the_twin_matches(model, sampling, twin_calls, length=7, max_new_tokens=10):
    """genplug.generate (the twin running) and transformers' generate: same tokens, scores and logits."""
    input_ids, mask = left_padded(length=length)
    extra = dict(do_sample=True, top_k=20, temperature=0.9) if sampling else {}
    ours, theirs = run_both(model, seed=0 if sampling else None, input_ids=input_ids, attention_mask=mask,
                            max_new_tokens=max_new_tokens, pad_token_id=0, **extra, **SCORES)
    assert twin_calls, "the twin did not run"
    assert_same(ours, theirs)


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "mistral", "gemma2"])
@pytest.mark.parametrize("sampling", [False, True])
def test_generate_through_the_twin_matches_transformers(name, sampling, twin_calls):
    assert_generate_through_the_twin_matches(tiny_model(name), sampling, twin_calls)


@pytest.mark.parametrize("name", list(GEMMA))
def test_gemma_twin_logits_match_within_1e_5_with_left_padding_and_short_windows(name):
    """11 tokens, windows of 4 on the sliding layers; left-padded rows; the prompt as embeddings too
    (transformers scales token embeddings inside its embedding module, never given ones)."""
    model = gemma_model(name)
    assert why_no_twin(model) is None
    assert_padded_logits_match(model, native_twin(model), length=11)


def assert_padded_logits_match(model, twin, length):
    """Twin and transformers logits within 1e-5 on left-padded rows: ids alone, with mask and positions,
    and as embeddings."""
    input_ids, mask = left_padded(batch=3, length=length, pads=(0, 3, 6))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(input_ids)
        for kwargs in (dict(input_ids=input_ids), dict(input_ids=input_ids, attention_mask=mask, position_ids=positions),
                       dict(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)):
            theirs = model(**kwargs).logits
            ours = twin(**kwargs, logits_to_keep=0).logits
            assert (ours - theirs)[mask.bool()].abs().max() <= 1e-5


@pytest.mark.parametrize("name", list(GEMMA))
@pytest.mark.parametrize("sampling", [False, True])
def test_gemma_generate_through_the_twin_matches_transformers(name, sampling, twin_calls):
    assert_generate_through_the_twin_matches(gemma_model(name), sampling, twin_calls, max_new_tokens=12)


@pytest.mark.parametrize("name", list(GEMMA))
@pytest.mark.parametrize("window", [32, 4], ids=["window covers the cache", "window of 4"])
def test_gemma_static_cache_through_the_twin(name, window, monkeypatch, twin_calls):
    """Sliding layers whose window spans the whole static cache (17 tokens) need no eviction: the graph step
    serves them (Gemma 1 has none). A shorter window makes the static cache shift its sliding buffers: the
    eager loop runs. Either way: transformers' tokens, and the eager loop's."""
    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "LAST_CAPTURE_SECONDS", None)
    model = gemma_model(name, window)
    input_ids, mask = left_padded()
    kwargs = dict(attention_mask=mask, max_new_tokens=10, pad_token_id=0, cache_implementation="static")
    theirs = model.generate(input_ids, **kwargs)
    ours = genplug.generate(model, input_ids, **kwargs)
    assert twin_calls
    graph_ran = graph_loop.LAST_CAPTURE_SECONDS is not None
    assert graph_ran == (name == "gemma" or window == 32)
    assert torch.equal(ours, theirs)
    graph_loop.LAST_CAPTURE_SECONDS = None
    assert torch.equal(genplug.generate(model, input_ids, disable_compile=True, **kwargs), ours)
    assert graph_loop.LAST_CAPTURE_SECONDS is None  # (that was the eager loop)


@pytest.mark.parametrize("name", list(PHI3))
@pytest.mark.parametrize("length", [11, 24], ids=["within the original context", "beyond it"])
def test_phi3_twin_logits_match_within_1e_5_with_left_padding(name, length):
    """Partial rotary (1/2, 3/4, whole heads), LongRoPE's short factors (11 tokens) and long ones (24 > 16),
    windows of 4; left-padded rows; the prompt as embeddings too. The twin reads Phi-3's fused q/k/v and
    gate/up matrices in place."""
    model = phi3_model(name)
    assert why_no_twin(model) is None
    twin = native_twin(model)
    layer, theirs = twin.model.layers[1], model.model.layers[1]
    assert layer.self_attn.qkv_proj.weight_t.data_ptr() == theirs.self_attn.qkv_proj.weight.data_ptr()
    assert layer.mlp.gate_up_proj.weight_t.data_ptr() == theirs.mlp.gate_up_proj.weight.data_ptr()
    assert_padded_logits_match(model, twin, length)


@pytest.mark.parametrize("name, length", [("phi3_window", 7), ("phi3_partial", 7), ("phi4_mini", 7), ("phi4_mini", 20)],
                         ids=["phi3_window", "phi3_partial", "phi4_mini short factors", "phi4_mini long factors"])
@pytest.mark.parametrize("sampling", [False, True])
def test_phi3_generate_through_the_twin_matches_transformers(name, length, sampling, twin_calls):
    """Prompt and new tokens on one side of LongRoPE's switch: 7 + 10 tokens stay within the original context
    of 16, a prompt of 20 is beyond it from the start."""
    assert_generate_through_the_twin_matches(phi3_model(name), sampling, twin_calls, length=length)


@pytest.mark.parametrize("mode", [dict(), dict(do_sample=True, top_k=20), dict(num_beams=2),
                                  dict(prompt_lookup_num_tokens=3)], ids=["greedy", "sampling", "beams", "lookup"])
@pytest.mark.parametrize("native_kernels", [True, False], ids=["twin", "transformers forward"])
def test_phi3_generation_across_longropes_switch_matches_transformers(mode, native_kernels, twin_calls):
    """A generation that crosses the original context mid-way (9 + 12 tokens over 16): at 17 tokens
    transformers drops the cache and runs the whole sequence again, so every key is rotated with the long
    factors from then on (Phi-3's prepare_inputs_for_generation); genplug's loops do the same
    (``ModelAdapter.refill_at``), through the twin and through the transformers forward alike."""
    model = phi3_model("phi4_mini")
    input_ids, mask = left_padded(length=9)
    if "prompt_lookup_num_tokens" in mode:
        input_ids, mask = input_ids[:1], mask[:1]  # transformers' assisted decoding takes one row
    kwargs = dict(attention_mask=mask, max_new_tokens=12, pad_token_id=0, **mode, **SCORES)
    torch.manual_seed(0)
    ours = genplug.generate(model, input_ids, native_kernels=native_kernels, **kwargs)
    torch.manual_seed(0)
    theirs = model.generate(input_ids, **kwargs)
    assert bool(twin_calls) == native_kernels
    assert_same(ours, theirs, check=("sequences_scores",) if "num_beams" in mode else ("scores", "logits"))


@pytest.mark.parametrize("name", list(PHI3))
def test_phi3_static_cache_through_the_twin(name, monkeypatch, twin_calls):
    """Without a window the graph step serves (partial rotary); Phi-3's window covers every layer, so no
    full-attention layer sizes the static cache and the eager loop runs; and the LongRoPE model's 7 + 10 tokens
    cross its original context of 16, where the cache is dropped and refilled (eager loop). Either way:
    transformers' tokens, and the eager loop's."""
    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "LAST_CAPTURE_SECONDS", None)
    model = phi3_model(name)
    input_ids, mask = left_padded()
    kwargs = dict(attention_mask=mask, max_new_tokens=10, pad_token_id=0, cache_implementation="static")
    theirs = model.generate(input_ids, **kwargs)
    ours = genplug.generate(model, input_ids, **kwargs)
    assert twin_calls
    assert (graph_loop.LAST_CAPTURE_SECONDS is not None) == (name == "phi3_partial")
    assert torch.equal(ours, theirs)
    graph_loop.LAST_CAPTURE_SECONDS = None
    assert torch.equal(genplug.generate(model, input_ids, disable_compile=True, **kwargs), ours)
    assert graph_loop.LAST_CAPTURE_SECONDS is None  # (that was the eager loop)


def test_the_twin_refuses_phi3_configs_it_would_compute_differently():
    """int(8 * 0.375) = 3 rotated dimensions: transformers then rotates 4 (its cos/sin cover 2 * ceil(3 / 2));
    the native family refuses odd counts rather than guess."""
    odd = transformers.Phi3ForCausalLM(transformers.Phi3Config(**PHI3_SHAPE, partial_rotary_factor=0.375)).eval()
    assert "rotates 3 dimensions" in why_no_twin(odd)


def test_the_twin_refuses_gemma_configs_it_would_compute_differently():
    bidirectional = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(
        **GEMMA_SHAPE, sliding_window=4, use_bidirectional_attention=True)).eval()
    assert "use_bidirectional_attention" in why_no_twin(bidirectional)
    capped_sdpa = copy.deepcopy(gemma_model("gemma2"))
    capped_sdpa.config._attn_implementation = "sdpa"  # transformers itself raises on this pair
    assert "attn_logit_softcapping" in why_no_twin(capped_sdpa)


def test_the_twin_uses_qwen3s_own_query_and_key_norm_weights():
    model = copy.deepcopy(tiny_model("qwen3"))  # the shared tiny models must stay as built
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # transformers initialises the norms to ones: make each one visible
        for layer in model.model.layers:
            for norm in (layer.self_attn.q_norm, layer.self_attn.k_norm):
                norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=generator))
    ids = prompt(batch=2, length=9)
    with torch.no_grad():
        theirs = model(input_ids=ids).logits
        ours = native_twin(model)(input_ids=ids, logits_to_keep=0).logits
    assert (ours - theirs).abs().max() <= 1e-5


def test_native_kernels_false_runs_the_transformers_forward(twin_calls):
    model = tiny_model("llama")
    ids = prompt()
    out = genplug.generate(model, ids, max_new_tokens=6, native_kernels=False)
    assert not twin_calls
    assert torch.equal(out, model.generate(ids, max_new_tokens=6))


def test_a_transformers_cache_from_the_caller_runs_the_transformers_forward(twin_calls):
    model = tiny_model("llama")
    ids = prompt()
    out = genplug.generate(model, ids, max_new_tokens=6, past_key_values=transformers.DynamicCache())
    assert not twin_calls
    assert torch.equal(out, model.generate(ids, max_new_tokens=6, past_key_values=transformers.DynamicCache()))


def test_the_twin_shares_the_weights_and_follows_in_place_updates():
    model = copy.deepcopy(tiny_model("llama"))  # the shared tiny models must stay as built
    twin = native_twin(model)
    assert twin.lm_head.weight_t.data_ptr() == model.lm_head.weight.data_ptr()
    assert twin.model.layers[0].self_attn.qkv_proj.weights_t[0].data_ptr() == \
        model.model.layers[0].self_attn.q_proj.weight.data_ptr()
    assert sum(p.numel() for p in twin.parameters() if p.is_meta) == 0
    ids = prompt(batch=1, length=5)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(3.0)
        assert (twin(input_ids=ids).logits - model(input_ids=ids).logits).abs().max() <= 1e-5
    assert native_twin(model) is twin  # same parameters: the twin is reused
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    assert native_twin(model) is not twin  # a replaced parameter: a new twin over the new tensors


class _LoggingLinear(torch.nn.Linear):
    """A user's replacement module: the twin cannot know what it does."""


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.model.layers[0].register_forward_hook(lambda *a: None), "forward hook"),
    (lambda m: m.train(), "training mode"),
    (lambda m: setattr(m.model.layers[0].mlp, "up_proj", _LoggingLinear(32, 64, bias=False)), "replaces a stock module"),
    (lambda m: m.to(torch.float64), "parameter is Parameter of torch.float64"),
    (lambda m: setattr(m.model.norm, "forward", lambda x: x), "replaced on the instance"),
    (lambda m: setattr(m.model.layers[0].mlp, "_hf_hook", object()), "replaced on the instance"),  # accelerate
])
def test_the_twin_stands_aside_when_it_could_differ(change, expected, twin_calls):
    model = copy.deepcopy(tiny_model("llama"))
    change(model)
    assert expected in why_no_twin(model)
    ids = prompt()
    if expected in ("forward hook", "replaces a stock module", "replaced on the instance"):
        out = genplug.generate(model, ids, max_new_tokens=4)
        assert not twin_calls
        assert torch.equal(out, model.generate(ids, max_new_tokens=4))


def test_the_checks_walk_every_module_and_parameter_once_in_torch_order():
    """The per-call checks walk the module tree themselves (faster than torch's generators): the same
    modules and parameters, in the same order, each once -- a shared module and tied weights included."""
    from genplug.plugins.transformers.native_twin import modules_and_parameters

    model = copy.deepcopy(tiny_model("llama"))
    model.lm_head.weight = model.model.embed_tokens.weight  # tied
    model.model.layers[1].mlp = model.model.layers[0].mlp  # one module in two places
    modules, parameters = modules_and_parameters(model)
    assert [id(m) for m in modules] == [id(m) for m in model.modules()]
    assert [id(p) for p in parameters] == [id(p) for p in model.parameters()]
    assert len(parameters) < len(list(model.named_parameters(remove_duplicate=False)))


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_other_architectures_keep_the_transformers_forward(name):
    assert "is not a Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3 or Phi-3" in why_no_twin(tiny_model(name))


def test_static_cache_graph_step_through_the_twin(monkeypatch, twin_calls):
    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "LAST_CAPTURE_SECONDS", None)
    model = tiny_model("llama_sdpa")
    input_ids, mask = left_padded()
    kwargs = dict(attention_mask=mask, max_new_tokens=10, pad_token_id=0, cache_implementation="static")
    theirs = model.generate(input_ids, **kwargs)
    ours = genplug.generate(model, input_ids, **kwargs)
    assert graph_loop.LAST_CAPTURE_SECONDS is not None and twin_calls  # prefill by the twin, then its graph step
    assert torch.equal(ours, theirs)


def test_transformers_output_capturing_hooks_do_not_block_the_twin(twin_calls):
    """transformers installs idle recording hooks the first time hidden states are asked for; the twin
    still stands in, and returns the same hidden states."""
    model = copy.deepcopy(tiny_model("llama_sdpa"))
    ids = prompt()
    kwargs = dict(max_new_tokens=4, return_dict_in_generate=True, output_hidden_states=True)
    theirs = model.generate(ids, **kwargs)
    assert any(m._forward_hooks for m in model.modules())  # transformers' own hooks are in place now
    assert why_no_twin(model) is None
    ours = genplug.generate(model, ids, **kwargs)
    assert twin_calls
    assert torch.equal(ours.sequences, theirs.sequences)
    for step_ours, step_theirs in zip(ours.hidden_states, theirs.hidden_states):
        for a, b in zip(step_ours, step_theirs):
            assert (a - b).abs().max() <= 1e-5


def test_a_native_phi3_refills_at_the_longrope_switch_too(tmp_path):
    """genplug's own Phi-3 (loaded from the checkpoint, no transformers model involved) crosses the original
    context as transformers' generate does."""
    model = phi3_model("phi4_mini")
    model.save_pretrained(tmp_path)
    native, _ = genplug.load_model(str(tmp_path))
    input_ids, mask = left_padded(length=9)
    kwargs = dict(attention_mask=mask, max_new_tokens=12, pad_token_id=0, **SCORES)
    assert_same(genplug.generate(native, input_ids, **kwargs), model.generate(input_ids, **kwargs))
