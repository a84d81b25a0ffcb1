"""transformers models through the CUDA-graph decode loop (``static_decode_step``), run eagerly on the CPU.

The step hands transformers a prepared 4-D mask, ``position_ids`` and ``cache_position`` over a genplug
static cache; the oracle is transformers' own generate with its static cache, token for token.
"""

import pytest
import torch

import genplug
import genplug.graph_loop as graph_loop

from parity_tools import left_padded, prompt, tiny_model


@pytest.mark.parametrize("name", ["llama", "llama_sdpa", "qwen2"])
def test_left_padded_greedy_matches_transformers_static_cache(name, graph_on_cpu):
    model = tiny_model(name)
    input_ids, mask = left_padded()
    kwargs = dict(attention_mask=mask, max_new_tokens=12, pad_token_id=0, cache_implementation="static")
    theirs = model.generate(input_ids, **kwargs)
    ours = genplug.generate(model, input_ids, **kwargs)
    assert graph_loop.LAST_CAPTURE_SECONDS is not None  # the static step ran
    assert torch.equal(ours, theirs)


def test_eos_stops_rows_as_transformers_does(graph_on_cpu):
    model = tiny_model("llama_sdpa")
    ids = prompt(batch=3, length=5)
    free = model.generate(ids, max_new_tokens=10, eos_token_id=None)
    eos = int(free[1, 5 + 3])  # row 1 meets it at its 4th new token
    kwargs = dict(max_new_tokens=10, eos_token_id=eos, pad_token_id=0, cache_implementation="static")
    theirs = model.generate(ids, **kwargs)
    ours = genplug.generate(model, ids, stop_check_interval=4, **kwargs)
    assert graph_loop.LAST_CAPTURE_SECONDS is not None
    assert torch.equal(ours, theirs)


def test_encoder_decoder_models_use_the_eager_loop(graph_on_cpu):
    from genplug.plugins.transformers.adapter import TransformersAdapter

    model = tiny_model("t5")
    assert "encoder-decoder" in TransformersAdapter(model).why_no_static_decode(object())
    ids = prompt()
    out = genplug.generate(model, ids, max_new_tokens=6, cache_implementation="static")
    assert graph_loop.LAST_CAPTURE_SECONDS is None
    assert torch.equal(out, model.generate(ids, max_new_tokens=6, cache_implementation="static"))


def test_compiled_transformers_step_matches_and_is_reused(graph_on_cpu):
    from torch._dynamo.utils import counters

    model = tiny_model("llama_sdpa")
    input_ids, mask = left_padded()
    kwargs = dict(attention_mask=mask, max_new_tokens=10, pad_token_id=0, cache_implementation="static")
    theirs = model.generate(input_ids, **kwargs)
    compiled = genplug.CompileConfig(backend="aot_eager")
    assert torch.equal(genplug.generate(model, input_ids, compile_config=compiled, **kwargs), theirs)
    frames = counters["stats"]["unique_graphs"]
    assert torch.equal(genplug.generate(model, input_ids, compile_config=compiled, **kwargs), theirs)
    assert counters["stats"]["unique_graphs"] == frames  # a new call (new cache) reused the compiled step


@pytest.mark.parametrize("name", ["llama_sdpa", "qwen2"])
def test_the_graphed_forward_matches_transformers_with_a_host_criterion(name, graph_on_cpu):
    """A stopping criterion of the user's own keeps the eager loop, whose forward then goes through
    ``static_decode_step`` (core/graphed_forward.py, uncaptured on a CPU): tokens and scores equal
    transformers' generate with its static cache and the same criterion, left padding included."""
    import transformers

    import genplug.graphed_forward as graphed_forward

    class StopAt:  # row 0 stops at its 7th token
        def __call__(self, input_ids, scores, **kwargs):
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
            done[0] = input_ids.shape[1] - prompt_len >= 7
            return done

    model = tiny_model(name)
    input_ids, mask = left_padded()
    prompt_len = input_ids.shape[1]
    kwargs = dict(attention_mask=mask, max_new_tokens=12, pad_token_id=0, cache_implementation="static",
                  output_scores=True, return_dict_in_generate=True)
    theirs = model.generate(input_ids, stopping_criteria=transformers.StoppingCriteriaList([StopAt()]), **kwargs)
    graphed_forward.LAST_CAPTURE_SECONDS = None
    ours = genplug.generate(model, input_ids, stopping_criteria=genplug.StoppingCriteriaList([StopAt()]), **kwargs)
    assert graphed_forward.LAST_CAPTURE_SECONDS is not None and graph_loop.LAST_CAPTURE_SECONDS is None
    assert torch.equal(ours.sequences, theirs.sequences)
    assert len(ours.scores) == len(theirs.scores)
    for mine, reference in zip(ours.scores, theirs.scores):
        torch.testing.assert_close(mine, reference)


def test_beam_search_through_the_graphed_forward_matches_transformers(graph_on_cpu):
    """Beam search over a static cache with the forward through ``static_decode_step`` (core/graphed_forward.py,
    uncaptured on a CPU): transformers' beam search with its static cache gives the same sequences and scores."""
    import genplug.graphed_forward as graphed_forward

    model = tiny_model("llama_sdpa")
    input_ids, mask = left_padded()
    kwargs = dict(attention_mask=mask, max_new_tokens=8, pad_token_id=0, num_beams=3, num_return_sequences=2,
                  cache_implementation="static", output_scores=True, return_dict_in_generate=True)
    theirs = model.generate(input_ids, **kwargs)
    graphed_forward.LAST_CAPTURE_SECONDS = None
    ours = genplug.generate(model, input_ids, **kwargs)
    assert graphed_forward.LAST_CAPTURE_SECONDS is not None
    assert torch.equal(ours.sequences, theirs.sequences)
    torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores)
