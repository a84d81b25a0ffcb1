"""The prompt's forward replayed from a captured graph (core/prefill_graph.py), run on the CPU:
the buffers are refilled and the forward is run over them, so a replayed prefill must give exactly
what the eager loop gives for every later prompt of the same shape."""

import pytest
import torch

import genplug
import genplug.graph_loop as graph_loop
import genplug.graphed_forward as graphed_forward
import genplug.prefill_graph as prefill_graph


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return genplug.load_model()


@pytest.fixture
def on_cpu(monkeypatch):
    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    monkeypatch.setattr(prefill_graph, "RUN_ON_CPU", True)
    monkeypatch.setattr(prefill_graph, "ENABLED", True)
    monkeypatch.setattr(prefill_graph, "LAST_PREFILL", None)


def _prompts(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _same_shape_prompts(tokenizer):
    first = _prompts(tokenizer, ["Once upon a time there", "The big red dog ran to the"])
    ids = torch.randint(5, 200, first[0].shape, generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(first[1])
    mask[1, :2] = 0  # other padding than the first call's
    return first, (ids, mask)


def test_later_prompts_of_the_same_shape_replay_and_match_the_eager_loop(model_and_tokenizer, on_cpu):
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    (ids_a, mask_a), (ids_b, mask_b) = _same_shape_prompts(tokenizer)
    kw = dict(max_new_tokens=12, cache_implementation="static")  # (a cache handed back is not reused)
    genplug.generate(model, ids_a, attention_mask=mask_a, **kw)
    assert prefill_graph.LAST_PREFILL == "noted"  # a shape's first sight: eager, noted
    genplug.generate(model, ids_a, attention_mask=mask_a, **kw)
    assert prefill_graph.LAST_PREFILL == "captured"
    replayed = genplug.generate(model, ids_b, attention_mask=mask_b, **kw)
    assert prefill_graph.LAST_PREFILL == "replayed"
    eager = genplug.generate(model, ids_b, attention_mask=mask_b, disable_compile=True, **kw)
    dynamic = genplug.generate(model, ids_b, attention_mask=mask_b, max_new_tokens=12)
    assert torch.equal(replayed, eager) and torch.equal(replayed, dynamic)


def test_calls_through_the_graphed_forward_replay_the_prompt_too(model_and_tokenizer, on_cpu):
    """A call the whole-step graph refuses (a stopping criterion of the user's own) keeps its static cache with
    the graphed forward (core/graphed_forward.py), so its prompt's forward is captured and replayed as well."""
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    (ids_a, mask_a), (ids_b, mask_b) = _same_shape_prompts(tokenizer)
    prompt_len = ids_a.shape[1]

    def never(input_ids, scores, **kwargs):
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    kw = dict(max_new_tokens=12, cache_implementation="static", stopping_criteria=genplug.StoppingCriteriaList([never]))
    for expected in ("noted", "captured"):
        genplug.generate(model, ids_a, attention_mask=mask_a, **kw)
        assert prefill_graph.LAST_PREFILL == expected
    replayed = genplug.generate(model, ids_b, attention_mask=mask_b, **kw)
    assert prefill_graph.LAST_PREFILL == "replayed" and graphed_forward.LAST_REUSED is True
    eager = genplug.generate(model, ids_b, attention_mask=mask_b, disable_compile=True, **kw)
    assert torch.equal(replayed, eager) and replayed.shape[1] == prompt_len + 12


def test_each_prompt_shape_has_its_own_graph_and_the_oldest_is_dropped(model_and_tokenizer, on_cpu, monkeypatch):
    model, _ = model_and_tokenizer
    graph_loop.release(model)
    monkeypatch.setattr(prefill_graph, "MAX_SHAPES", 2)
    kw = dict(max_new_tokens=None, max_length=20, cache_implementation="static")

    def call(length, seed):
        ids = torch.randint(5, 200, (1, length), generator=torch.Generator().manual_seed(seed))
        out = genplug.generate(model, ids, **kw)
        what = prefill_graph.LAST_PREFILL
        assert torch.equal(out, genplug.generate(model, ids, disable_compile=True, **kw))
        return what

    # each shape is captured at its second sight; 8 was used again after 9, so 10 pushes 9 out and 8 stays
    calls = [(8, 0), (8, 1), (9, 2), (9, 3), (8, 4), (10, 5), (10, 6), (8, 7), (9, 8), (9, 9), (9, 10)]
    assert [call(length, seed) for length, seed in calls] == [
        "noted", "captured", "noted", "captured", "replayed", "noted", "captured", "replayed", "noted", "captured",
        "replayed"]


def test_prompts_past_the_token_limit_and_eager_calls_are_not_captured(model_and_tokenizer, on_cpu, monkeypatch):
    model, _ = model_and_tokenizer
    graph_loop.release(model)
    ids = torch.randint(5, 200, (1, 16), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(prefill_graph, "MAX_TOKENS", 15)
    genplug.generate(model, ids, max_new_tokens=4, cache_implementation="static")
    assert prefill_graph.LAST_PREFILL is None
    monkeypatch.setattr(prefill_graph, "MAX_TOKENS", 1024)
    genplug.generate(model, ids, max_new_tokens=4, cache_implementation="static", disable_compile=True)
    assert prefill_graph.LAST_PREFILL == "eager"
    genplug.generate(model, ids, max_new_tokens=4)  # dynamic cache: no graph loop
    assert prefill_graph.LAST_PREFILL == "eager"


def test_a_cache_that_already_holds_tokens_runs_the_prompt_eagerly(model_and_tokenizer, on_cpu):
    model, _ = model_and_tokenizer
    graph_loop.release(model)
    ids = torch.randint(5, 200, (1, 6), generator=torch.Generator().manual_seed(1))
    cache = genplug.StaticCache(config=model.config, max_cache_len=64)
    genplug.generate(model, ids, max_new_tokens=3, past_key_values=cache)
    assert prefill_graph.LAST_PREFILL == "noted"
    cache.reset()
    genplug.generate(model, ids, max_new_tokens=3, past_key_values=cache)
    assert prefill_graph.LAST_PREFILL == "captured"
    cache.crop(-2)  # 7 tokens left in it: the next prompt continues them
    longer = torch.cat([ids, torch.randint(5, 200, (1, 1))], dim=1)
    more = torch.cat([longer, torch.randint(5, 200, (1, 1))], dim=1)[:, :6]
    out = genplug.generate(model, more, max_new_tokens=3, past_key_values=cache)
    assert prefill_graph.LAST_PREFILL == "eager"
    assert out.shape == (1, 9)


def test_prompts_of_changing_shapes_are_never_captured(model_and_tokenizer, on_cpu, monkeypatch):
    """A capture costs two more forwards: shapes seen once are only noted (the last MAX_NOTED of them)."""
    model, _ = model_and_tokenizer
    graph_loop.release(model)
    monkeypatch.setattr(prefill_graph, "MAX_NOTED", 3)
    kw = dict(max_new_tokens=None, max_length=24, cache_implementation="static")
    seen = []
    for length in (5, 6, 7, 8, 5, 8):  # 5 was forgotten (3 shapes noted since), 8 was not
        genplug.generate(model, torch.randint(5, 200, (1, length), generator=torch.Generator().manual_seed(length)), **kw)
        seen.append(prefill_graph.LAST_PREFILL)
    assert seen == ["noted", "noted", "noted", "noted", "noted", "captured"]


@pytest.mark.parametrize("setting, enabled", [(None, True), ("1", True), ("0", False)])
def test_on_by_default_and_off_with_the_environment_switch(setting, enabled):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GENPLUG_PREFILL_GRAPH"}
    if setting is not None:
        env["GENPLUG_PREFILL_GRAPH"] = setting
    done = subprocess.run([sys.executable, "-c", "import genplug.prefill_graph as p; print(p.ENABLED)"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip() == str(enabled), done.stderr[-500:]


def test_off_when_turned_off(model_and_tokenizer, on_cpu, monkeypatch):
    model, _ = model_and_tokenizer
    graph_loop.release(model)
    monkeypatch.setattr(prefill_graph, "ENABLED", False)
    ids = torch.randint(5, 200, (1, 6), generator=torch.Generator().manual_seed(2))
    for _ in range(2):
        genplug.generate(model, ids, max_new_tokens=3, cache_implementation="static")
        assert prefill_graph.LAST_PREFILL is None


def test_a_transformers_model_run_by_its_native_twin_replays_too(on_cpu):
    """The twin runs the prompt's forward, so it is captured and replayed as a native model's is; the
    replayed call equals the eager loop and transformers' own generate."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=16, vocab_size=120, pad_token_id=0)
    hf = transformers.LlamaForCausalLM(config).eval()
    kw = dict(max_new_tokens=8, cache_implementation="static")
    seen = []
    for seed in range(3):
        ids = torch.randint(5, 120, (1, 7), generator=torch.Generator().manual_seed(seed))
        out = genplug.generate(hf, ids, **kw)
        seen.append(prefill_graph.LAST_PREFILL)
    assert seen == ["noted", "captured", "replayed"]
    assert torch.equal(out, genplug.generate(hf, ids, disable_compile=True, **kw))
    assert torch.equal(out, hf.generate(ids, do_sample=False, **kw))
    genplug.generate(hf, ids, native_kernels=False, **kw)  # transformers' own forward: never captured
    assert prefill_graph.LAST_PREFILL is None
