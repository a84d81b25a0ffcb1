"""Stop strings in the CUDA-graph decode loop: checked inside the captured step through their buffer form
(``StopStringCriteria.at_column``), against the eager loop; run eagerly on the CPU (as tests/test_graph_loop.py)."""

import warnings

import pytest
import torch

import genplug
import genplug.graph_loop as graph_loop

from test_graph_loop import _batch, model_and_tokenizer  # noqa: F401  (the graph loop's fixture)


@pytest.mark.parametrize("extra", [dict(), dict(eos="row 1's 4th"), dict(do_sample=True, top_k=4)])
def test_stop_strings_run_in_the_graph_loop_and_stop_where_the_eager_loop_does(model_and_tokenizer, graph_on_cpu, extra):
    """Stop strings are checked inside the captured step (their buffer form): the graph loop takes the call,
    and its tokens equal the eager loop's (disable_compile=True) -- rows stop at a stop string spanning
    tokens, with EOS padding after it where an EOS id is set, and the call ends once every row stopped."""
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    prompt_len = enc["input_ids"].shape[1]
    free = genplug.generate(model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=40)
    words = tokenizer.decode(free[0, prompt_len:], skip_special_tokens=True).split()
    longer = [w.strip(".,!?") for w in words[2:] if len(w.strip(".,!?")) >= 3]
    stops = [longer[0][1:], longer[2]]  # one starts inside a word, one is a whole word further on
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=40, cache_implementation="static",
              stop_strings=stops, tokenizer=tokenizer)
    if "eos" in extra:
        kw.update(eos_token_id=int(free[1, prompt_len + 3]), pad_token_id=0)
    kw.update({k: v for k, v in extra.items() if k != "eos"})
    runs = []
    for disable in (False, True):
        graph_loop.LAST_CAPTURE_SECONDS = None
        torch.manual_seed(0)
        runs.append(genplug.generate(model, enc["input_ids"], disable_compile=disable, **kw))
        assert (graph_loop.LAST_CAPTURE_SECONDS is not None) == (not disable)
    graph, eager = runs
    if not extra.get("do_sample"):  # (the graph loop samples with the Gumbel-max trick: another random stream)
        assert torch.equal(graph, eager)
        assert graph.shape[1] < prompt_len + 40  # every row stopped early
        assert stops[0] in tokenizer.decode(graph[0, prompt_len:], skip_special_tokens=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_on_a_gpu_stop_strings_are_captured_in_the_step_and_stop_as_the_eager_loop_does(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    model = model.to("cuda", torch.bfloat16)
    try:
        enc = _batch(tokenizer).to("cuda")
        free = genplug.generate(model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=40)
        words = tokenizer.decode(free[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).split()
        kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=40, cache_implementation="static",
                  stop_strings=[w for w in words[3:] if len(w) > 2][:2], tokenizer=tokenizer)
        graph_loop.LAST_CAPTURE_SECONDS = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph = genplug.generate(model, enc["input_ids"], **kw)
        assert graph_loop.LAST_CAPTURE_SECONDS is not None  # the graph loop took the call...
        assert not [w for w in caught if "could not be captured" in str(w.message)]  # ...and captured its step
        assert torch.equal(graph, genplug.generate(model, enc["input_ids"], disable_compile=True, **kw))
        assert graph.shape[1] < enc["input_ids"].shape[1] + 40
    finally:
        graph_loop.release(model)
        model.to("cpu", torch.float32)


def test_a_graph_with_stop_strings_is_replayed_only_for_the_same_strings(model_and_tokenizer, graph_on_cpu):
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=12, cache_implementation="static", tokenizer=tokenizer)
    genplug.generate(model, enc["input_ids"], stop_strings=["the"], **kw)
    genplug.generate(model, enc["input_ids"], stop_strings=["the"], **kw)
    assert graph_loop.LAST_GRAPH_REUSED is True
    other = genplug.generate(model, enc["input_ids"], stop_strings=["dog"], **kw)
    assert graph_loop.LAST_GRAPH_REUSED is False
    assert torch.equal(other, genplug.generate(model, enc["input_ids"], stop_strings=["dog"], disable_compile=True, **kw))
