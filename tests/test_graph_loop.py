"""The static-shape (CUDA-graph) decode loop, run eagerly on the CPU, against the eager loop."""

import pytest
import torch

import genplug
import genplug.graph_loop as graph_loop


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return genplug.load_model()


def _batch(tokenizer):
    return tokenizer(["Once upon a time", "The big red dog ran to the"], padding=True, return_tensors="pt")


def test_greedy_graph_loop_equals_eager_loop(model_and_tokenizer, graph_on_cpu):
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=48, cache_implementation="static")
    graph = genplug.generate(model, enc["input_ids"], **kw)
    assert graph_loop.LAST_CAPTURE_SECONDS is not None  # the graph path ran
    eager = genplug.generate(model, enc["input_ids"], disable_compile=True, **kw)
    dynamic = genplug.generate(model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=48)
    assert torch.equal(graph, eager) and torch.equal(graph, dynamic)


def test_graph_loop_stops_like_the_eager_loop_for_every_interval(model_and_tokenizer, graph_on_cpu):
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    eos = tokenizer.convert_tokens_to_ids(".") if hasattr(tokenizer, "convert_tokens_to_ids") else None
    eos = eos if isinstance(eos, int) else int(enc["input_ids"][0, -1])
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=40, eos_token_id=eos, pad_token_id=0)
    eager = genplug.generate(model, enc["input_ids"], **kw)
    for interval in (1, 3, 8):
        graph = genplug.generate(model, enc["input_ids"], cache_implementation="static",
                                 stop_check_interval=interval, **kw)
        assert torch.equal(graph, eager)


def test_sampling_with_top_k_one_is_greedy(model_and_tokenizer, graph_on_cpu):
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=24, cache_implementation="static")
    sampled = genplug.generate(model, enc["input_ids"], do_sample=True, top_k=1, **kw)
    assert graph_loop.LAST_CAPTURE_SECONDS is not None
    assert torch.equal(sampled, genplug.generate(model, enc["input_ids"], **kw))


def test_refusal_reasons_fall_back_to_the_eager_loop(model_and_tokenizer, graph_on_cpu):
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    out = genplug.generate(model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=8,
                           cache_implementation="static", prefix_allowed_tokens_fn=lambda row, ids: list(range(300)))
    assert graph_loop.LAST_CAPTURE_SECONDS is None  # a Python callback per row and step: eager loop
    assert out.shape[0] == 2


def test_compiled_model_step_equals_eager_and_is_reused_across_calls(model_and_tokenizer, graph_on_cpu):
    """compile_config compiles the model's part only (per layer): a later call with other processors
    and a new cache reuses the compiled code instead of recompiling."""
    from torch._dynamo.utils import counters

    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=16, cache_implementation="static")
    compiled = genplug.CompileConfig(backend="aot_eager")
    eager = genplug.generate(model, enc["input_ids"], disable_compile=True, **kw)
    assert torch.equal(genplug.generate(model, enc["input_ids"], compile_config=compiled, **kw), eager)
    frames = counters["stats"]["unique_graphs"]
    sampled = genplug.generate(model, enc["input_ids"], compile_config=compiled, do_sample=True, top_k=1,
                               repetition_penalty=1.3, **kw)
    assert counters["stats"]["unique_graphs"] == frames  # nothing was traced again
    assert graph_loop.LAST_CAPTURE_SECONDS is not None
    reference = genplug.generate(model, enc["input_ids"], do_sample=True, top_k=1, repetition_penalty=1.3,
                                 disable_compile=True, **kw)
    assert torch.equal(sampled, reference)


def test_failed_capture_falls_back_to_uncompiled_then_step_by_step(model_and_tokenizer, graph_on_cpu, monkeypatch):
    """A compiled step that cannot be captured is retried uncompiled; if that fails too, the step runs
    uncaptured. Each fallback warns, and the output is the eager loop's."""
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=12, cache_implementation="static")
    eager = genplug.generate(model, enc["input_ids"], disable_compile=True, **kw)
    attempts = []

    def failing_capture(step, *state, **kw):
        attempts.append(step)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graph_loop, "TRY_CAPTURE_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "_capture", failing_capture)
    with pytest.warns(RuntimeWarning) as caught:
        out = genplug.generate(model, enc["input_ids"], compile_config=genplug.CompileConfig(backend="eager"), **kw)
    messages = [str(w.message) for w in caught]
    assert len(attempts) == 2
    assert any("compiled decode step" in m and "trying the uncompiled step" in m for m in messages)
    assert any("uncompiled decode step" in m and "step by step" in m for m in messages)
    assert torch.equal(out, eager)


def test_buffers_are_restored_when_a_capture_fails():
    class Layer:
        def __init__(self):
            self.keys, self.values, self.position = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor(5)

    class Cache:
        layers = [Layer(), Layer()]

    cache, slot, tokens = Cache(), torch.tensor(7), torch.arange(6)
    with pytest.raises(RuntimeError):
        with graph_loop.restored_afterwards((tokens, slot, cache)):
            slot.add_(1)
            tokens.mul_(2)
            for layer in cache.layers:
                layer.keys.fill_(1.0)
                layer.position.add_(1)
            raise RuntimeError("capture failed")
    assert int(slot) == 7 and torch.equal(tokens, torch.arange(6))
    assert all(float(layer.keys.abs().sum()) == 0 and int(layer.position) == 5 for layer in cache.layers)


@pytest.mark.parametrize("written", ["slice", "index"])
def test_only_the_written_cache_slots_are_copied_aside_and_put_back(written):
    """A capture's warm-up writes the prompt's slots (prefill) or the fed token's slot (decode step, whose
    slot tensor also moves): those are put back, from copies of them alone -- not of the whole cache."""
    class Layer:
        def __init__(self):
            self.keys, self.values = torch.arange(24.0).view(1, 2, 6, 2), -torch.arange(24.0).view(1, 2, 6, 2)
            self.position = torch.tensor(3)

    class Cache:
        layers = [Layer(), Layer()]

    cache, slot = Cache(), torch.tensor(4)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    region = slice(1, 3) if written == "slice" else slot.view(1)
    with pytest.raises(RuntimeError):
        with graph_loop.restored_afterwards((slot, cache), region):
            for layer in cache.layers:
                layer.keys[:, :, 1:3] = 7.0
                layer.values[:, :, 4] = 7.0
                layer.position.add_(1)
            slot.add_(1)
            raise RuntimeError("capture failed")
    assert int(slot) == 4 and all(int(layer.position) == 3 for layer in cache.layers)
    for layer, (keys, values) in zip(cache.layers, before):
        if written == "slice":  # slots 1-2 put back; slot 4 was not announced, so it keeps the write
            assert torch.equal(layer.keys, keys) and torch.equal(layer.values[:, :, :4], values[:, :, :4])
            assert bool((layer.values[:, :, 4] == 7.0).all())
        else:  # slot 4 (read on entry, before the slot moved) put back; 1-2 keep the writes
            assert torch.equal(layer.values, values) and bool((layer.keys[:, :, 1:3] == 7.0).all())


def test_a_capture_whose_warm_up_ran_for_real_leaves_the_call_as_the_eager_loop(model_and_tokenizer, graph_on_cpu, monkeypatch):
    """The whole capture path on the CPU, with CUDA's graph pieces stood in for: the warm-up step runs
    for real (it writes the cache at the fed token's slot, moves the slot and the counters), the
    restore puts back that slot and the state, and "replays" run the step -- the output equals the
    eager loop's, with left padding, call after call."""
    import contextlib

    class Graph:
        pending = None  # (step, its session, the model step it calls) of the capture under way

        def __init__(self):
            self.run, self.session, self.forward = Graph.pending

        def capture_begin(self):
            pass

        def capture_end(self):
            pass

        def replay(self):  # what the GPU would replay: the step as captured (the session drops its parts)
            self.session.forward = self.forward
            self.run()

    class Stream:
        def wait_stream(self, other):
            pass

    class Event:
        def record(self):
            pass

        def query(self):
            return True

    real_capture_graph = graph_loop.capture_graph

    def capture_graph(run, *args, **kwargs):
        session = next(c.cell_contents for c in run.__closure__ if isinstance(c.cell_contents, graph_loop._Session))
        Graph.pending = (run, session, session.forward)
        return real_capture_graph(run, *args, **kwargs)

    monkeypatch.setattr(graph_loop, "TRY_CAPTURE_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "capture_graph", capture_graph)
    monkeypatch.setattr(graph_loop, "capture_stream", lambda device: Stream())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=20, cache_implementation="static")
    eager = genplug.generate(model, enc["input_ids"], disable_compile=True, **kw)
    for _ in range(2):  # captured, then the kept graph reused
        assert torch.equal(genplug.generate(model, enc["input_ids"], **kw), eager)
    assert graph_loop.LAST_GRAPH_REUSED


def _mock_capture(monkeypatch, events, end_fails=False):
    """capture_graph's CUDA calls replaced by ones that note what happens (and, where asked, a capture_end
    that fails once: an invalidated capture)."""
    failures = [end_fails]

    class Graph:
        def capture_begin(self):
            events.append("begin")

        def capture_end(self):
            events.append("end")
            if failures[0]:
                failures[0] = False
                raise RuntimeError("operation not permitted when stream is capturing")

    class Stream:
        def wait_stream(self, other):
            pass

    class Layer:
        keys, values, position = torch.zeros(2), torch.zeros(2), torch.tensor(0)

    class Cache:
        layers = [Layer()]

    monkeypatch.setattr(graph_loop, "capture_stream", lambda device: Stream())
    monkeypatch.setattr(graph_loop, "_drop_cublas_workspaces", lambda: events.append("drop"))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: __import__("contextlib").nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    return Cache()


def test_a_graph_captures_its_own_cublas_workspace(monkeypatch):
    """cuBLAS's cached workspaces are dropped right before the capture (the graph's GEMMs then allocate
    theirs in the graph's private pool) and right after it (later eager work on the capture stream does
    not borrow it): a workspace shared through the stream's cache was freed under live graphs by
    inductor's graph trees and by PyTorch's graph destructor (illegal memory access on the GPU)."""
    events = []
    cache = _mock_capture(monkeypatch, events)
    graph, result = graph_loop.capture_graph(lambda: events.append("run") or len(events), torch.device("cpu"),
                                             (cache,), before_each=lambda: events.append("reset"))
    assert isinstance(graph, torch.cuda.CUDAGraph) and result == 6  # (the mock) and what the captured run returned
    assert events == ["reset", "run", "reset", "drop", "begin", "run", "end", "drop"]


def test_a_capture_that_fails_to_end_takes_the_generators_out_of_capture_mode(monkeypatch):
    """When capture_end fails (an invalidated capture), an empty capture begins and ends right after it --
    the only way out of the random generators' capture mode, in which every later draw would raise -- and
    the failure still reaches the caller (which then runs the step eagerly)."""
    events = []
    cache = _mock_capture(monkeypatch, events, end_fails=True)
    with pytest.raises(RuntimeError, match="not permitted"):
        graph_loop.capture_graph(lambda: events.append("run"), torch.device("cpu"), (cache,))
    assert events == ["run", "drop", "begin", "run", "end", "begin", "end", "drop"]


def test_no_garbage_is_collected_during_a_capture(monkeypatch):
    """Garbage is collected before the warm-up run and the collector stays off until the capture ended (a
    released session's graph, freed by the collector inside a capture, invalidated it on an H100), and it
    is back on afterwards -- also after a failed capture."""
    import gc

    events, seen = [], []
    cache = _mock_capture(monkeypatch, events)
    collected = []
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(gc.isenabled()) or 0)
    assert gc.isenabled()
    graph_loop.graphs_dropped()  # genplug let go of a graph: the next capture collects first
    graph_loop.capture_graph(lambda: seen.append(gc.isenabled()), torch.device("cpu"), (cache,))
    assert collected == [True] and seen == [False, False] and gc.isenabled()
    graph_loop.capture_graph(lambda: seen.append(gc.isenabled()), torch.device("cpu"), (cache,))
    assert collected == [True] and seen == [False] * 4  # nothing let go since: no collection (~150-300 ms)
    cache = _mock_capture(monkeypatch, events, end_fails=True)
    with pytest.raises(RuntimeError):
        graph_loop.capture_graph(lambda: seen.append(gc.isenabled()), torch.device("cpu"), (cache,))
    assert gc.isenabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_random_draws_work_after_a_failed_capture():
    """A step that reads the device inside the capture invalidates it; afterwards random draws, and a new
    capture of a step that draws random numbers, work (PyTorch leaves its generators in capture mode)."""
    class Cache:
        layers = []

    buffer = torch.zeros(4, device="cuda")

    def reads_the_device():
        buffer.add_(torch.rand(4, device="cuda"))
        return float(buffer.sum())  # not allowed while capturing

    with pytest.raises(Exception):
        graph_loop.capture_graph(reads_the_device, buffer.device, (buffer, Cache()))
    assert torch.rand(3, device="cuda").shape == (3,)
    graph, _ = graph_loop.capture_graph(lambda: buffer.add_(torch.rand(4, device="cuda")), buffer.device,
                                        (buffer, Cache()))
    before = buffer.clone()
    graph.replay()
    torch.cuda.synchronize()
    assert ((buffer - before) > 0).all() and ((buffer - before) < 1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_replays_survive_dropped_cublas_workspaces(monkeypatch):
    """A graph kept for the next call keeps working after every cached cuBLAS workspace was dropped and
    the allocator's free memory handed back and refilled (what inductor's graph trees and a destroyed
    graph do between two genplug calls)."""
    import genplug.prefill_graph as prefill_graph

    monkeypatch.setattr(prefill_graph, "ENABLED", True)
    model = genplug.load_model()[0].to("cuda", torch.bfloat16)
    prompt = torch.tensor([[5, 9, 17, 3, 44, 8, 1, 2]], device="cuda")
    kw = dict(max_new_tokens=12, cache_implementation="static")
    eager = genplug.generate(model, prompt, disable_compile=True, **kw)
    for _ in range(3):
        assert torch.equal(genplug.generate(model, prompt, **kw), eager)
        torch._C._cuda_clearCublasWorkspaces()
        torch.cuda.empty_cache()
        junk = [torch.full((1 << 18,), float("nan"), device="cuda") for _ in range(64)]
        torch.cuda.synchronize()
        del junk
    assert prefill_graph.LAST_PREFILL == "replayed"


def test_min_new_tokens_and_eos_run_in_the_graph_loop(model_and_tokenizer, graph_on_cpu):
    """min_length / min_new_tokens read only the length: the graph loop takes them (at_length) and
    stops exactly where the eager loop does."""
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    free = genplug.generate(model, enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=30)
    prompt_len = enc["input_ids"].shape[1]
    eos = int(free[0, prompt_len + 2])  # row 0 would end at its 3rd new token
    outputs = []
    for extra in (dict(min_new_tokens=9), dict(min_length=prompt_len + 12), {}):
        kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=30, eos_token_id=eos, pad_token_id=0, **extra)
        eager = genplug.generate(model, enc["input_ids"], **kw)
        outputs.append(eager)
        graph_loop.LAST_CAPTURE_SECONDS = None
        graph = genplug.generate(model, enc["input_ids"], cache_implementation="static", **kw)
        assert graph_loop.LAST_CAPTURE_SECONDS is not None, extra
        assert torch.equal(graph, eager), extra
    assert (outputs[0][0, prompt_len:prompt_len + 9] != eos).all()  # the length rule held EOS back...
    assert int(outputs[2][0, prompt_len + 2]) == eos  # ...where without it row 0 ends


class _Recording(genplug.BaseStreamer):
    """Keeps every put (as lists) and counts the ends."""

    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        self.puts.append(value.tolist())

    def end(self):
        self.ends += 1


@pytest.mark.parametrize("batch_rows", [1, 2])
@pytest.mark.parametrize("eos_at", [None, 0, 2, 9])
def test_a_streamer_gets_what_the_eager_loop_puts(model_and_tokenizer, graph_on_cpu, batch_rows, eos_at):
    """With a streamer the graph loop runs (it used to refuse) and the streamer sees the eager loop's puts:
    the prompt, then each step's column until every row finished (eos_at: the new token, of row 0's free
    run, taken as EOS; 0 stops at the first token), then one end."""
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    enc = _batch(tokenizer)
    ids, mask = enc["input_ids"][:batch_rows], enc["attention_mask"][:batch_rows]
    kw = dict(attention_mask=mask, max_new_tokens=14, pad_token_id=0)
    if eos_at is not None:
        free = genplug.generate(model, ids, **kw)
        kw["eos_token_id"] = int(free[0, ids.shape[1] + eos_at])
    runs = {}
    for name, extra in (("eager", {}), ("graph", dict(cache_implementation="static"))):
        graph_loop.LAST_CAPTURE_SECONDS = None
        streamer = _Recording()
        out = genplug.generate(model, ids, streamer=streamer, **kw, **extra)
        assert (graph_loop.LAST_CAPTURE_SECONDS is not None) == (name == "graph"), name
        runs[name] = (out, streamer)
    (eager, eager_stream), (graph, graph_stream) = runs["eager"], runs["graph"]
    assert torch.equal(graph, eager)
    assert graph_stream.puts == eager_stream.puts and graph_stream.ends == eager_stream.ends == 1
    new_columns = graph_stream.puts[1:]
    assert len(new_columns) == graph.shape[1] - ids.shape[1]  # one put per token made, none past the stop
    assert new_columns == graph[:, ids.shape[1]:].T.tolist()
    if eos_at is not None and batch_rows == 1:
        assert len(new_columns) == eos_at + 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_a_streamer_on_a_gpu_gets_the_replayed_steps_tokens(model_and_tokenizer):
    """On CUDA (pinned copies, events, the host one step behind the replays): the streamer's puts equal the
    eager loop's, for a run that stops at EOS and one that runs to max_new_tokens."""
    model = genplug.load_model()[0].to("cuda", torch.bfloat16)
    prompt = torch.tensor([[5, 9, 17, 3, 44, 8, 1, 2]], device="cuda")
    free = genplug.generate(model, prompt, max_new_tokens=20, disable_compile=True, cache_implementation="static")
    for eos in (None, int(free[0, prompt.shape[1] + 6])):
        streams = []
        for extra in (dict(disable_compile=True), {}):
            graph_loop.LAST_CAPTURE_SECONDS = None
            streamer = _Recording()
            out = genplug.generate(model, prompt, max_new_tokens=20, cache_implementation="static",
                                   eos_token_id=eos, pad_token_id=0, streamer=streamer, **extra)
            streams.append((out.cpu(), streamer.puts, graph_loop.LAST_CAPTURE_SECONDS is not None))
        (eager, eager_puts, eager_graph), (graph, graph_puts, graph_ran) = streams
        assert graph_ran and not eager_graph
        assert torch.equal(graph, eager) and graph_puts == eager_puts
        assert graph_puts[1:] == graph[:, prompt.shape[1]:].T.tolist()


def test_a_streamer_in_the_graph_loop_says_how_explain_sees_it():
    """``explain`` no longer names a streamer as a reason against the graph loop; synced_gpus still is one."""
    config = genplug.GenerationConfig(max_new_tokens=4)
    assert graph_loop.pipeline_refusal([], [], config, streamer=_Recording()) is None
    assert "synced_gpus" in graph_loop.pipeline_refusal([], [], config, synced_gpus=True)


def test_a_repeated_call_reuses_the_buffers_graph_and_cache(model_and_tokenizer, graph_on_cpu):
    """Same settings on the same model: the second call refills the first call's buffers (and takes
    its static cache back); outputs equal a fresh call's, and the first result is not overwritten."""
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=12, cache_implementation="static",
              do_sample=True, top_k=5, temperature=0.8)
    torch.manual_seed(0)
    first = genplug.generate(model, enc["input_ids"], **kw)
    assert graph_loop.LAST_GRAPH_REUSED is False
    kept = first.clone()
    other = tokenizer(["A little cat sat on the", "Why is the sky so very"], padding=True, return_tensors="pt")
    assert other["input_ids"].shape == enc["input_ids"].shape
    torch.manual_seed(1)
    second = genplug.generate(model, other["input_ids"], **{**kw, "attention_mask": other["attention_mask"]})
    assert graph_loop.LAST_GRAPH_REUSED is True
    assert torch.equal(first, kept)  # the returned sequences are copies
    graph_loop.release(model)
    torch.manual_seed(1)
    fresh = genplug.generate(model, other["input_ids"], **{**kw, "attention_mask": other["attention_mask"]})
    assert graph_loop.LAST_GRAPH_REUSED is False
    assert torch.equal(second, fresh)


@pytest.mark.parametrize("change", [dict(top_k=6), dict(temperature=0.7), dict(max_new_tokens=13),
                                    dict(eos_token_id=3), dict(do_sample=False)])
def test_any_changed_setting_builds_a_new_graph(model_and_tokenizer, graph_on_cpu, change):
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=12, cache_implementation="static",
              do_sample=True, top_k=5, temperature=0.8)
    genplug.generate(model, enc["input_ids"], **kw)
    torch.manual_seed(2)
    changed = genplug.generate(model, enc["input_ids"], **{**kw, **change})
    assert graph_loop.LAST_GRAPH_REUSED is False
    graph_loop.release(model)
    torch.manual_seed(2)
    assert torch.equal(changed, genplug.generate(model, enc["input_ids"], **{**kw, **change}))


def test_the_cache_is_not_taken_back_when_it_was_returned(model_and_tokenizer, graph_on_cpu):
    """A cache handed to the caller (return_dict_in_generate) is never emptied by a later call."""
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=6, cache_implementation="static")
    genplug.generate(model, enc["input_ids"], **kw)
    out = genplug.generate(model, enc["input_ids"], return_dict_in_generate=True, **kw)
    assert graph_loop.LAST_GRAPH_REUSED is False  # a new cache, so a new graph
    returned_keys = out.past_key_values.layers[0].keys.clone()
    again = genplug.generate(model, enc["input_ids"], **kw)
    assert graph_loop.LAST_GRAPH_REUSED is False
    assert torch.equal(out.past_key_values.layers[0].keys, returned_keys)
    assert torch.equal(again, out.sequences)


def test_one_new_token_captures_nothing(model_and_tokenizer, graph_on_cpu, monkeypatch):
    """With max_new_tokens=1 the prefill's token is the whole answer: no step is run or captured (a
    capture would run one, and the cache has no slot left for it)."""
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=1, cache_implementation="static")
    attempts = []
    monkeypatch.setattr(graph_loop, "TRY_CAPTURE_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "_capture", lambda step, *state, **kw: attempts.append(step))
    out = genplug.generate(model, enc["input_ids"], **kw)
    assert attempts == [] and graph_loop.LAST_CAPTURE_SECONDS is not None
    assert torch.equal(out, genplug.generate(model, enc["input_ids"], disable_compile=True, **kw))


def _tiny_model_with_pretend_captures(monkeypatch):
    """A one-layer native model on the CPU, with the graph loop's captures pretended (a graph replaying
    nothing): sessions are kept as after a real capture."""
    from genplug.plugins.models.llama.config import NativeLlamaConfig
    from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM

    class ReplayNothing:
        def replay(self):
            pass

    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "TRY_CAPTURE_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "_capture", lambda step, *state, **kw: ReplayNothing())
    return NativeLlamaForCausalLM(NativeLlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                                    num_hidden_layers=1, num_attention_heads=2,
                                                    num_key_value_heads=1, head_dim=8, max_position_embeddings=32)).eval()


def test_a_kept_graph_does_not_keep_its_model_alive(monkeypatch):
    """Sessions are held weakly by model: once captured, nothing in one refers to the model."""
    import gc
    import weakref

    model = _tiny_model_with_pretend_captures(monkeypatch)
    genplug.generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=4, cache_implementation="static")
    assert model in graph_loop._SESSIONS
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_a_replaced_session_is_freed_at_once_without_the_collector(monkeypatch):
    """Once captured, a session sits in no reference cycle: replaced by the next call's (other settings), it is
    freed right away -- so captures need not run the garbage collector first (~150-300 ms with transformers
    loaded), and the replacement asks for no collection."""
    import gc
    import weakref

    model = _tiny_model_with_pretend_captures(monkeypatch)
    genplug.generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=4, cache_implementation="static")
    first = weakref.ref(graph_loop._SESSIONS[model])
    monkeypatch.setattr(graph_loop, "_GRAPHS_DROPPED", False)
    gc.disable()
    try:
        genplug.generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=5, cache_implementation="static")
        assert first() is None and not graph_loop._GRAPHS_DROPPED
    finally:
        gc.enable()


# processors that read the tokens in order ("prefix") or the length: the graph loop runs them over its
# fixed-size buffer (at_prefix / at_length) and must give the eager loop's tokens
BUFFER_FORM_CASES = {
    "no_repeat_ngram_size": dict(no_repeat_ngram_size=2),
    "no_repeat_ngram_size=1": dict(no_repeat_ngram_size=1),
    "encoder_no_repeat_ngram_size": dict(encoder_no_repeat_ngram_size=1),
    "bad_words_ids": dict(bad_words_ids="ROW0"),
    "sequence_bias": dict(sequence_bias="ROW0"),
    "forced_bos_and_eos": dict(forced_bos_token_id=5, forced_eos_token_id=7),
    "begin_suppress_tokens": dict(begin_suppress_tokens="FIRST"),
    "exponential_decay_length_penalty": dict(exponential_decay_length_penalty=(4, 1.6), eos_token_id="EOS"),
    "sampling with n-grams and bad words": dict(do_sample=True, top_k=8, no_repeat_ngram_size=3, bad_words_ids="ROW0"),
}


@pytest.mark.parametrize("case", sorted(BUFFER_FORM_CASES))
def test_processors_reading_the_tokens_run_in_the_graph_loop(model_and_tokenizer, graph_on_cpu, case):
    model, tokenizer = model_and_tokenizer
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=40, pad_token_id=0)
    free = genplug.generate(model, enc["input_ids"], **kw)  # what the rows generate unconstrained
    prompt_len = enc["input_ids"].shape[1]
    first, second, third = (int(free[0, prompt_len + i]) for i in range(3))
    settings = dict(BUFFER_FORM_CASES[case])
    for name, value in list(settings.items()):
        if value == "ROW0":  # the words row 0 would produce: a single token and a two-token sequence
            settings[name] = [[second], [first, third]] if name == "bad_words_ids" else {(second,): -2.0,
                                                                                          (first, third): 3.5}
        elif value == "FIRST":
            settings[name] = [first]
        elif value == "EOS":
            settings[name] = int(free[1, prompt_len + 9])
    if settings.get("do_sample"):
        torch.manual_seed(0)
    eager = genplug.generate(model, enc["input_ids"], **kw, **settings)
    graph_loop.LAST_CAPTURE_SECONDS = None
    if settings.get("do_sample"):
        torch.manual_seed(0)
    graph = genplug.generate(model, enc["input_ids"], cache_implementation="static", **kw, **settings)
    assert graph_loop.LAST_CAPTURE_SECONDS is not None, "the graph loop refused the call"
    if settings.get("do_sample"):  # the graph loop draws with Gumbel noise: the rules must hold all the same
        new = graph[:, prompt_len:]
        assert not (new == second).any()  # the banned single token
        assert not ((graph[:, prompt_len - 1:-1] == first) & (new == third)).any()  # the banned pair
        for row, valid in zip(graph.tolist(), enc["attention_mask"].tolist()):
            tokens = row[len(valid) - sum(valid):]  # (the left padding is part of the sequence, but all pads)
            trigrams = [tuple(tokens[i:i + 3]) for i in range(len(tokens) - 2)]
            assert len(trigrams) == len(set(trigrams)) or 0 in sum(trigrams, ())
    else:
        assert torch.equal(graph, eager), case
    assert not torch.equal(eager, free)  # the processor acted


@pytest.mark.parametrize("settings", [dict(min_new_tokens=5, eos_token_id=2), dict(suppress_tokens=[4]),
                                      dict(bad_words_ids=[[5], [6, 7]]), dict(sequence_bias={(5,): -1.0}),
                                      dict(forced_eos_token_id=2), dict(begin_suppress_tokens=[5])],
                         ids=lambda s: next(iter(s)))
def test_vocabulary_sized_masks_do_not_prevent_reuse(graph_on_cpu, settings):
    """Processors holding (vocab,) masks built from their settings declare ``graph_key``: with a
    vocabulary too large to compare tensor by tensor, a repeated call still replays the kept graph --
    and a changed setting still builds a new one."""
    from genplug.plugins.models.llama.config import NativeLlamaConfig
    from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM

    torch.manual_seed(0)
    model = NativeLlamaForCausalLM(NativeLlamaConfig(vocab_size=6000, hidden_size=16, intermediate_size=32,
                                                     num_hidden_layers=1, num_attention_heads=2,
                                                     num_key_value_heads=1, head_dim=8)).eval()
    ids = torch.randint(10, 6000, (1, 6), generator=torch.Generator().manual_seed(0))
    kw = dict(cache_implementation="static", max_new_tokens=8, pad_token_id=0)
    first = genplug.generate(model, ids, **kw, **settings)
    again = genplug.generate(model, ids, **kw, **settings)
    assert graph_loop.LAST_GRAPH_REUSED and torch.equal(first, again)
    changed = {name: (value + 1 if isinstance(value, int) else {(9,): -1.0} if isinstance(value, dict) else [[9]]
                      if name == "bad_words_ids" else [9]) for name, value in settings.items()}
    genplug.generate(model, ids, **kw, **changed)
    assert graph_loop.LAST_GRAPH_REUSED is False


def test_a_replaced_parameter_object_is_not_replayed_over(model_and_tokenizer, graph_on_cpu):
    """A graph is kept only for the same parameter objects at the same addresses: a parameter replaced
    by a new object, even over the same storage, makes the next call capture anew (a transformers
    model's twin is rebuilt then, and the old graph read its buffers)."""
    model, tokenizer = model_and_tokenizer
    graph_loop.release(model)
    enc = _batch(tokenizer)
    kw = dict(attention_mask=enc["attention_mask"], max_new_tokens=6, cache_implementation="static")
    first = genplug.generate(model, enc["input_ids"], **kw)
    genplug.generate(model, enc["input_ids"], **kw)
    assert graph_loop.LAST_GRAPH_REUSED
    norm = model.model.norm
    norm.weight = torch.nn.Parameter(norm.weight.detach(), requires_grad=False)  # same storage, new object
    again = genplug.generate(model, enc["input_ids"], **kw)
    assert not graph_loop.LAST_GRAPH_REUSED and torch.equal(again, first)


def test_parameters_key_covers_every_parameter_and_changes_when_one_is_replaced():
    """The key walks the modules' own parameter dicts: it must name exactly model.parameters()'s objects,
    repeat itself call after call, and change for a new object over the same storage or a moved one."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.LayerNorm(4), None),
                                torch.nn.Linear(4, 3, bias=False))
    model[2].weight = torch.nn.Parameter(model[0].weight.detach().t().contiguous())
    model[1][0].bias = None  # a None entry in a parameter dict
    key = graph_loop.parameters_key(model)
    assert {entry[0] for entry in key} == {id(p) for p in model.parameters()}
    assert graph_loop.parameters_key(model) == key
    norm = model[1][0]
    norm.weight = torch.nn.Parameter(norm.weight.detach())  # same storage, new object
    assert graph_loop.parameters_key(model) != key
    key = graph_loop.parameters_key(model)
    model[0].weight.data = model[0].weight.data.clone()  # same object, new address
    assert graph_loop.parameters_key(model) != key
