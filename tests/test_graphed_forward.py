"""The eager loop's one-token forward replayed from a CUDA graph (core/graphed_forward.py), where the whole
step cannot be, and the beam loops' likewise: on a CPU the step runs uncaptured (graph_loop.RUN_ON_CPU), which
checks its logic -- the fed token, positions, valid slots, the cache's length afterwards -- against the plain
loops; keeping, refilling and letting go of a captured forward are checked with a pretended capture."""

import pytest
import torch

import genplug
import genplug.graph_loop as graph_loop
import genplug.graphed_forward as graphed_forward


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return genplug.load_model()


@pytest.fixture
def counted(monkeypatch):
    """RUN_ON_CPU on, and the number of graphed forwards the calls ran."""
    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    calls = []
    original = graphed_forward.GraphedForward.forward

    def forward(self, column):
        calls.append(1)
        return original(self, column)

    monkeypatch.setattr(graphed_forward.GraphedForward, "forward", forward)
    return calls


class StopAfter:
    """A host-side stopping criterion (what the whole-step graph refuses): row i stops after its n-th new token."""

    def __init__(self, prompt_len, counts):
        self.prompt_len, self.counts = prompt_len, counts

    def __call__(self, input_ids, scores, **kwargs):
        made = input_ids.shape[1] - self.prompt_len
        return torch.tensor([made >= n for n in self.counts])


def _batch(tokenizer):
    return tokenizer(["Once upon a time", "The big red dog ran to the"], padding=True, return_tensors="pt")


def _settings(tokenizer, enc):
    prompt_len = enc["input_ids"].shape[1]
    return {
        "max time": dict(max_time=600.0),
        "host criterion": dict(stopping_criteria=genplug.StoppingCriteriaList([StopAfter(prompt_len, [5, 11])])),
        "prefix callback": dict(prefix_allowed_tokens_fn=lambda row, ids: list(range(40, 400))),
        "sampling, scores": dict(do_sample=True, top_k=20, temperature=0.9, output_scores=True, output_logits=True,
                                 return_dict_in_generate=True),
        "eos, scores": dict(eos_token_id=int(enc["input_ids"][0, -1]), pad_token_id=0, output_scores=True,
                            return_dict_in_generate=True),
    }


@pytest.mark.parametrize("name", ["max time", "host criterion", "prefix callback", "sampling, scores",
                                  "eos, scores"])
def test_the_graphed_forward_gives_the_eager_loops_tokens_scores_and_cache(model_and_tokenizer, counted, name):
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    extra = _settings(tokenizer, enc)[name]
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=16, cache_implementation="static", **extra)
    runs = []
    for disable in (False, True):  # disable_compile=True: the plain eager loop, no graphed forward
        counted.clear()
        torch.manual_seed(0)
        out = genplug.generate(model, enc["input_ids"], disable_compile=disable, **{**kw, "return_dict_in_generate": True})
        runs.append((out, len(counted)))
    (graphed, graphed_calls), (eager, eager_calls) = runs
    made = graphed.sequences.shape[1] - enc["input_ids"].shape[1]
    assert eager_calls == 0 and graphed_calls >= max(made - 1, 1)  # (steps past a stop run until its check)
    assert torch.equal(graphed.sequences, eager.sequences)
    for name_of in ("scores", "logits"):
        mine, theirs = getattr(graphed, name_of), getattr(eager, name_of)
        assert (mine is None) == (theirs is None)
        if mine is not None:
            assert len(mine) == len(theirs) and all(torch.equal(a, b) for a, b in zip(mine, theirs))
    graphed_cache, eager_cache = graphed.past_key_values, eager.past_key_values
    assert graphed_cache.get_seq_length() == eager_cache.get_seq_length()
    held = int(eager_cache.get_seq_length())
    for a, b in zip(graphed_cache.layers, eager_cache.layers):
        assert torch.equal(a.keys[:, :, :held], b.keys[:, :, :held])
        assert torch.equal(a.values[:, :, :held], b.values[:, :, :held])


def test_a_repeated_call_refills_the_kept_forward_and_matches_a_fresh_one(model_and_tokenizer, counted):
    """Same settings over the static cache taken back: the kept forward is refilled for the new prompt (no new
    capture); the result equals a fresh call's. A whole-step graph call in between replaces it, and the next
    call builds a new one."""
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    first, second = _batch(tokenizer), tokenizer(["A little cat sat on the", "Why is the sky so very"],
                                                 padding=True, return_tensors="pt")
    assert first["input_ids"].shape == second["input_ids"].shape
    prompt_len = first["input_ids"].shape[1]
    kw = dict(max_new_tokens=12, cache_implementation="static",
              stopping_criteria=genplug.StoppingCriteriaList([StopAfter(prompt_len, [4, 9])]))

    def call(enc, **extra):
        return genplug.generate(model, enc["input_ids"], attention_mask=enc["attention_mask"], **kw, **extra)

    call(first)
    assert graphed_forward.LAST_REUSED is False
    again = call(second)
    assert graphed_forward.LAST_REUSED is True
    graph_loop.release(model)
    assert torch.equal(again, call(second)) and graphed_forward.LAST_REUSED is False
    assert torch.equal(again, call(second, disable_compile=True))
    genplug.generate(model, first["input_ids"], attention_mask=first["attention_mask"], max_new_tokens=12,
                     cache_implementation="static")  # the whole-step graph loop's session replaces the forward
    assert torch.equal(call(second), again) and graphed_forward.LAST_REUSED is False


def test_not_used_where_the_whole_step_graph_runs_or_when_it_cannot(model_and_tokenizer, counted, monkeypatch):
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=6)
    genplug.generate(model, enc["input_ids"], cache_implementation="static", **kw)  # the graph loop's call
    # stop strings run inside the whole-step graph (their buffer form), not through the graphed forward
    genplug.generate(model, enc["input_ids"], cache_implementation="static", stop_strings=["the"], tokenizer=tokenizer,
                     **kw)
    genplug.generate(model, enc["input_ids"], max_time=600.0, **kw)  # dynamic cache
    genplug.generate(model, enc["input_ids"], cache_implementation="static", max_time=600.0,
                     output_hidden_states=True, return_dict_in_generate=True, **kw)
    monkeypatch.setenv("GENPLUG_GRAPHED_FORWARD", "0")
    genplug.generate(model, enc["input_ids"], cache_implementation="static", max_time=600.0, **kw)
    assert counted == []
    monkeypatch.delenv("GENPLUG_GRAPHED_FORWARD")
    genplug.generate(model, enc["input_ids"], cache_implementation="static", max_time=600.0, **kw)
    assert counted


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("extra", [dict(max_time=600.0), dict(output_scores=True, return_dict_in_generate=True),
                                   dict(num_beams=3, output_scores=True, return_dict_in_generate=True)])
def test_on_a_gpu_the_replayed_forward_equals_the_eager_forward(extra):
    model, tokenizer = genplug.load_model()
    model = model.to("cuda", torch.bfloat16)
    prompt = torch.tensor([[5, 9, 17, 3, 44, 8, 1, 2]], device="cuda")
    kw = dict(max_new_tokens=24, cache_implementation="static", tokenizer=tokenizer, **extra)
    graphed = genplug.generate(model, prompt, **kw)
    eager = genplug.generate(model, prompt, disable_compile=True, **kw)
    if isinstance(graphed, torch.Tensor):
        assert torch.equal(graphed, eager)
    else:
        assert torch.equal(graphed.sequences, eager.sequences)
        assert all(torch.equal(a, b) for a, b in zip(graphed.scores, eager.scores))


@pytest.mark.parametrize("extra", [
    dict(num_beams=3),
    dict(num_beams=4, num_return_sequences=2, length_penalty=0.7, early_stopping=True, output_scores=True),
    dict(num_beams=3, do_sample=True, top_k=10),
    dict(num_beams=2, eos_token_id="LAST", pad_token_id=0, output_logits=True),
    dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.8, output_scores=True),
    dict(num_beams=3, force_words_ids=[[40, 41]], output_scores=True),
])
def test_beam_search_through_the_graphed_forward_equals_the_plain_beam_loop(model_and_tokenizer, counted, extra):
    """Beam search (plain, sampling, diverse, constrained) reorders a static cache in place every step; its forward
    replayed from the graph (uncaptured on a CPU) gives the plain loop's sequences, scores, beam indices and cache."""
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    enc = _batch(tokenizer)
    if extra.get("eos_token_id") == "LAST":
        extra = {**extra, "eos_token_id": int(enc["input_ids"][0, -1])}
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=10, cache_implementation="static",
              return_dict_in_generate=True, **extra)
    runs = []
    for disable in (False, True):
        counted.clear()
        torch.manual_seed(3)
        runs.append((genplug.generate(model, enc["input_ids"], disable_compile=disable, **kw), len(counted)))
    (graphed, graphed_calls), (eager, eager_calls) = runs
    assert graphed_calls > 0 and eager_calls == 0
    assert torch.equal(graphed.sequences, eager.sequences)
    for name in ("sequences_scores", "beam_indices"):
        mine, theirs = getattr(graphed, name, None), getattr(eager, name, None)
        assert (mine is None) == (theirs is None) and (mine is None or torch.equal(mine, theirs)), name
    for name in ("scores", "logits"):
        mine, theirs = getattr(graphed, name, None), getattr(eager, name, None)
        assert (mine is None) == (theirs is None)
        assert mine is None or all(torch.equal(a, b) for a, b in zip(mine, theirs)), name
    held = int(eager.past_key_values.get_seq_length())
    assert int(graphed.past_key_values.get_seq_length()) == held
    for a, b in zip(graphed.past_key_values.layers, eager.past_key_values.layers):
        assert torch.equal(a.keys[:, :, :held], b.keys[:, :, :held])


def test_a_forward_that_cannot_be_captured_is_run_eagerly_and_not_tried_again(model_and_tokenizer, monkeypatch):
    """Every form failing to capture: one warning, the call runs the model's own forward (the eager loop's
    tokens), and a later call with the same settings does not try (or warn) again."""
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "TRY_CAPTURE_ON_CPU", True)
    attempts = []

    def refuse(run, device, state, **kw):
        attempts.append(1)
        raise RuntimeError("reads a tensor on the host")

    monkeypatch.setattr(graph_loop, "capture_graph", refuse)
    enc = _batch(tokenizer)
    prompt_len = enc["input_ids"].shape[1]
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=9, cache_implementation="static",
              stopping_criteria=genplug.StoppingCriteriaList([StopAfter(prompt_len, [3, 6])]))
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        first = genplug.generate(model, enc["input_ids"], **kw)
    tried = len(attempts)
    assert tried >= 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = genplug.generate(model, enc["input_ids"], **kw)
    assert len(attempts) == tried
    eager = genplug.generate(model, enc["input_ids"], disable_compile=True, **kw)
    assert torch.equal(first, eager) and torch.equal(second, eager)


def test_a_kept_forward_keeps_no_model_alive_and_is_freed_once_replaced(monkeypatch):
    """After a capture nothing in a kept forward refers to the model (kept in a dict weakly keyed by it), and no
    reference cycle holds it: replaced by another call's, it is freed at once, without the garbage collector."""
    import gc
    import weakref

    from genplug.plugins.models.llama.config import NativeLlamaConfig
    from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM

    class ReplayNothing:
        def replay(self):
            pass

    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "TRY_CAPTURE_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "capture_graph", lambda run, device, state, **kw: (ReplayNothing(), run()))
    model = NativeLlamaForCausalLM(NativeLlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                                     num_hidden_layers=1, num_attention_heads=2,
                                                     num_key_value_heads=1, head_dim=8, max_position_embeddings=32)).eval()
    criteria = genplug.StoppingCriteriaList([StopAfter(3, [6])])
    genplug.generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=8, cache_implementation="static",
                     stopping_criteria=criteria)
    kept = graph_loop._SESSIONS[model]
    assert isinstance(kept, graphed_forward.GraphedForward)
    first = weakref.ref(kept)
    del kept
    gc.disable()
    try:
        genplug.generate(model, torch.tensor([[1, 2, 3, 4]]), max_new_tokens=8, cache_implementation="static",
                         stopping_criteria=genplug.StoppingCriteriaList([StopAfter(4, [6])]),
                         pad_token_id=0, eos_token_id=7)  # other settings: a new forward (or session) replaces it
        assert first() is None
    finally:
        gc.enable()
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
