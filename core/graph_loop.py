"""The static-shape decode loop: one CUDA graph per step, no host synchronisation inside it.

Used by greedy search and sampling when the model offers a ``static_decode_step`` (genplug's native
models do), the cache is static, the processors only look at the *set* of tokens so far (or at no
history at all), and the stopping criteria are max length, EOS and criteria with a buffer form that
reads no host value (stop strings: ``at_column``). Each step -- forward, processors, token choice, EOS
bookkeeping, those criteria -- is captured once with ``torch.cuda.CUDAGraph`` and then
replayed; optionally the model's part of the step is first compiled with ``torch.compile``
(``compile_config``). The host learns that every row finished from a flag copied asynchronously to
pinned memory and never waits for it. On a CPU the same step runs eagerly, which is how its logic is
tested.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import os
import time
import warnings
import weakref
from typing import Optional

import torch

from . import triton_support
from .stopping import StoppingCriteriaList
from .vocab_ops import first_argmax, gumbel_sample

# How a processor uses input_ids, declared by the processor class as ``history_use``:
#   "none"     -- does not read input_ids (temperature, top-k, ...)
#   "set"      -- reads only which tokens occurred (repetition penalty): padding the unfilled part of
#                 the buffer with a token that already occurred changes nothing
#   "length"   -- reads only how many tokens there are (min length): called through its at_length
#                 method with the length as a device tensor
#   "prefix"   -- reads the tokens so far in order (n-grams, bad words): called through its
#                 at_prefix method with the whole fixed-size buffer and the length as a device tensor
#   "sequence" -- reads the order in a way it offers no buffer form for: not allowed here (the default)
GRAPH_HISTORY_USES = ("none", "set", "length", "prefix")
_BUFFER_FORMS = {"length": "at_length", "prefix": "at_prefix"}  # the method each of those uses needs

LAST_CAPTURE_SECONDS: Optional[float] = None  # set by every graph-loop call (build or reuse); benchmarks report it
LAST_GRAPH_REUSED: Optional[bool] = None  # whether that call replayed an earlier call's graph
RUN_ON_CPU = False  # tests switch this on to check the step logic without CUDA
TRY_CAPTURE_ON_CPU = False  # tests switch this on (with a fake _capture) to check the fallbacks
# A step's bookkeeping (token choice's second pass, accepting the token, EOS flags, slot, the next fed
# token, positions and valid slot) inside the token choice's launch where Triton runs (.loop_kernels),
# instead of ~15 PyTorch kernels.
FUSED_BOOKKEEPING = True
_KERNEL_SCORE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the token-choice kernels read


def graph_decode_possible(adapter, processors, criteria, config, cache, streamer, synced_gpus) -> Optional[str]:
    """None when the graph loop can run this call, else the reason it cannot (for explain/debugging)."""
    if adapter.device.type != "cuda" and not RUN_ON_CPU:
        return "graphs are captured on CUDA devices only"
    if cache is None or "static_shape" not in getattr(cache, "capabilities", ()):
        return "the cache is not static (cache_implementation='static')"
    reason = pipeline_refusal(processors, criteria, config, streamer, synced_gpus)
    return reason if reason is not None else adapter.why_no_static_decode(cache)


def pipeline_refusal(processors, criteria, config, streamer=None, synced_gpus=False) -> Optional[str]:
    """The part of :func:`graph_decode_possible` that depends on the call's settings only (no model,
    no cache): what ``genplug explain`` reports."""
    if getattr(config, "disable_compile", None):
        return "disable_compile=True"
    if synced_gpus:
        return "synced_gpus needs a collective every step"
    if config.return_dict_in_generate and (config.output_scores or config.output_logits or config.output_attentions
                                           or config.output_hidden_states):
        return "per-step outputs were requested"
    for p in processors:
        use = getattr(p, "history_use", "sequence")
        if use not in GRAPH_HISTORY_USES or not getattr(p, "compile_safe", False) or (
                use in _BUFFER_FORMS and not callable(getattr(p, _BUFFER_FORMS[use], None))):
            return f"processor {type(p).__name__} reads the token order or is not compile-safe"
    for c in criteria:
        if type(c).__name__ not in _LOOP_CRITERIA and not callable(getattr(c, "at_column", None)):
            return f"stopping criterion {type(c).__name__} is checked on the host"
    return None


# Criteria the step itself handles: max length (the host counts steps) and EOS (the accept). Others run in the
# captured step through their buffer form, ``at_column(tokens, column) -> (batch,) bool``: the answer the
# criterion gives for ``tokens[:, :column + 1]``, with no host read (stop strings have one).
_LOOP_CRITERIA = ("MaxLengthCriteria", "EosTokenCriteria")


@torch.no_grad()
def graph_decode(adapter, input_ids, prompt_mask, first_logits, processors, criteria, config, cache,
                 do_sample: bool, max_length: int, interval: int, streamer=None):
    """Generate after a prefill whose last-position logits are ``first_logits``; returns (sequences, steps).

    The cache already holds the prompt. ``interval`` steps run between non-blocking looks at the
    "every row finished" flag; steps after the stop are cut off, as in the eager loop. A call that
    repeats the previous call's settings on the same model and static cache (see
    :func:`reusable_cache`) refills that call's buffers and replays its graph: no new capture.
    With a ``streamer``, each step's tokens reach it as in the eager loop, one step behind the GPU
    (see :meth:`_Session.run_streaming`).
    """
    global LAST_CAPTURE_SECONDS, LAST_GRAPH_REUSED
    started = time.perf_counter()
    key = _session_key(adapter, processors, criteria, config, do_sample, input_ids, max_length)
    session = _SESSIONS.get(adapter.model) if key is not None else None
    reuse = session is not None and session.key == key and session.cache is cache
    if not reuse:
        session = _Session(key, adapter, processors, criteria, config, cache, do_sample, input_ids, max_length)
    session.fill(input_ids, prompt_mask)
    session.first_token(first_logits)
    steps_left = max_length - input_ids.shape[1] - 1
    if not reuse and steps_left > 0:  # (capturing runs a step, which needs a free cache slot)
        session.capture()
        if key is not None and (session.graph is not None or RUN_ON_CPU):
            keep_session(adapter.model, session)
    LAST_CAPTURE_SECONDS, LAST_GRAPH_REUSED = time.perf_counter() - started, reuse
    if streamer is not None:
        sequences, n_generated = session.run_streaming(steps_left, streamer)
    else:
        sequences, n_generated = session.run(steps_left, interval)
    for layer in cache.layers:  # the cache now holds every token that was fed
        layer.crop_to(input_ids.shape[1] + n_generated - 1)
    return sequences, n_generated


# The latest graph-loop state of each model, kept for a later call with the same settings.
_SESSIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_CACHE_REQUESTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # static cache -> what it was built for


def remember_cache_request(cache, request_key) -> None:
    """Note what a static cache was built for (by generate(), so that :func:`reusable_cache` can match it)."""
    try:
        _CACHE_REQUESTS[cache] = request_key
    except TypeError:  # not weak-referenceable: never reused
        pass


def reusable_cache(model, request_key):
    """The static cache of ``model``'s last graph-loop call, emptied, if it was built for ``request_key``
    (batch, length, dtype, device, options); else None. Reusing it lets that call's CUDA graph -- which
    reads and writes those very buffers -- serve again. transformers keeps its static cache the same way."""
    session = _SESSIONS.get(model)
    if session is None or _CACHE_REQUESTS.get(session.cache) != request_key:
        return None
    session.cache.reset()
    return session.cache


def release(model) -> None:
    """Drop the graph, buffers and static cache kept for ``model`` (they hold device memory)."""
    _SESSIONS.pop(model, None)


def keep_session(model, session) -> None:
    """Keep ``session`` (a graph loop's, or a graphed forward's) as ``model``'s latest. The one before is freed
    right here, outside any capture: once captured, sessions sit in no reference cycle (tested), so letting
    go of one needs no garbage collection before the next capture (:func:`graphs_dropped`)."""
    _SESSIONS[model] = session


def _session_key(adapter, processors, criteria, config, do_sample, input_ids, max_length):
    """What must be equal for a later call to replay this call's graph, or None (never reuse).

    The graph bakes in the processors' settings and reads their tensors, the EOS ids, the model's
    parameters (by address) and the buffer shapes; the values of all of these are compared.
    """
    try:
        return (
            _fingerprint(list(processors)), _fingerprint(list(criteria)), config.pad_token_id, bool(do_sample),
            tuple(input_ids.shape[:1]), max_length, input_ids.dtype, str(input_ids.device),
            repr(compile_options(config, adapter)), os.environ.get("GENPLUG_DECODE_KERNELS"),
            parameters_key(adapter.model),
        )
    except _NotComparable:
        return None


def parameters_key(model) -> tuple:
    """What a graph over ``model``'s weights depends on: each parameter's object, address, dtype and device.
    A graph reads the weights by address; and where a parameter object is replaced, even over the same
    storage, a transformers model's native twin -- whose buffers (RoPE's table) a graph also reads --
    is rebuilt, so the old graph must not be replayed.

    Walks the modules' own parameter dicts rather than ``model.parameters()`` (which names and de-duplicates
    every one): it runs twice a call, and for a 16-layer model that took ~235 us of host time a walk
    against 130-190 (``python bench/call_host_time.py``; a shared parameter appears once per module
    holding it, the same way every call)."""
    key, modules = [], [model]
    while modules:
        module = modules.pop()
        key.extend((id(p), p.data_ptr(), p.dtype, p.device) for p in module._parameters.values() if p is not None)
        modules.extend(m for m in module._modules.values() if m is not None)
    return tuple(key)


class _NotComparable(Exception):
    pass


def _fingerprint(value, depth: int = 0):
    """A comparable summary of a processor's (or criterion's) settings: numbers, strings, small tensors'
    contents, nested objects' attributes -- or what an object's ``graph_key()`` returns, for objects
    whose large tensors follow from a few settings. Anything else (functions, large tensors) makes the
    call non-reusable."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > 8:
        raise _NotComparable
    if isinstance(value, torch.Tensor):
        if value.numel() > 4096:
            raise _NotComparable
        return ("tensor", tuple(value.shape), value.dtype, str(value.device), tuple(value.flatten().tolist()))
    if isinstance(value, (list, tuple)):
        return tuple(_fingerprint(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _fingerprint(v, depth + 1)) for k, v in value.items()))
    if isinstance(value, (type, functools.partial)) or inspect.isroutine(value):
        raise _NotComparable  # code: two calls may pass different functions with equal names
    graph_key = getattr(value, "graph_key", None)
    if callable(graph_key):  # settings that determine every tensor the object holds (vocabulary masks...)
        return (f"{type(value).__module__}.{type(value).__qualname__}", _fingerprint(graph_key(), depth + 1))
    fields = dict(getattr(value, "__dict__", {}))
    for name in getattr(type(value), "__slots__", ()):
        if hasattr(value, name):
            fields[name] = getattr(value, name)
    if not fields and not hasattr(value, "__dict__"):
        raise _NotComparable
    return (f"{type(value).__module__}.{type(value).__qualname__}", _fingerprint(fields, depth + 1))


class _Session:
    """The state of one graph-loop call -- token buffer, valid-slot mask, positions, cache slot, row
    flags -- the step over it and the CUDA graph of that step; refilled in place by a later call."""

    def __init__(self, key, adapter, processors, criteria, config, cache, do_sample, input_ids, max_length):
        # Nothing kept after a capture may refer to the model: sessions are values of a dict keyed
        # weakly by the model, which would otherwise never be freed (see capture()).
        self.key, self.cache, self.graph, self.do_sample = key, cache, None, do_sample
        device = self.device = input_ids.device
        batch = input_ids.shape[0]
        pad = config.pad_token_id if config.pad_token_id is not None else 0
        eos = StoppingCriteriaList(criteria).eos_token_ids
        eos = self.eos = eos.to(device) if eos is not None else None  # kept: the graph reads it
        max_cache_len = cache.layers[0].keys.shape[2]
        tokens = self.tokens = torch.empty(batch, max_length, dtype=input_ids.dtype, device=device)
        valid = self.valid = torch.zeros(batch, max_cache_len, dtype=torch.bool, device=device)
        positions = self.positions = torch.zeros(batch, 1, dtype=torch.long, device=device)
        slot = self.slot = torch.zeros((), dtype=torch.long, device=device)  # cache slot of the token fed next
        unfinished = self.unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        generated = self.generated = torch.zeros((), dtype=torch.long, device=device)

        seed = self.seed = torch.zeros((), dtype=torch.long, device=device)

        def choose(scores, column):
            # sampling draws with the Gumbel-max trick (no softmax pass, no host read); the column being
            # written picks a fresh random stream for each step
            return gumbel_sample(scores, seed, column) if do_sample else first_argmax(scores)

        def accept(next_tokens, column):
            if eos is not None:
                next_tokens = torch.where(unfinished, next_tokens, pad)
            tokens.index_copy_(1, column.view(1), next_tokens[:, None])
            generated.add_(unfinished.any().long())
            if eos is not None:
                unfinished.logical_and_(~(next_tokens[:, None] == eos[None, :]).any(-1))

        process = graph_processors(processors)
        plain_choice = not processors  # the logits go straight to the token choice

        # The model's part of the step: compiled first if asked (or by default); the uncompiled step is
        # the fallback when compiling or capturing fails (no inductor/triton, a forward that reads on the host).
        options = compile_options(config, adapter)
        self.candidates = ([adapter.compiled_static_decode_step(options)] if options is not None else [])
        self.candidates.append(adapter.static_decode_step)
        self.forward = self.candidates[0]

        # the bookkeeping around the forward in the token choice's launch where Triton runs, else PyTorch ops
        kernels = None
        self.fed = self.column = self.choice_arrivals = column_buffer = None
        if FUSED_BOOKKEEPING and triton_support.runs_on(tokens):
            from . import loop_kernels as kernels  # imports Triton

            # the token fed next and its column: each step's accept kernel advances them for the next
            # step (one launch fewer a step), the first token's acceptance for the first step
            fed = self.fed = torch.empty(batch, 1, dtype=tokens.dtype, device=device)
            self.column = column_buffer = torch.empty((), dtype=torch.long, device=device)
            # the token choice and the accept are one launch: its programs count themselves here
            arrivals = self.choice_arrivals = torch.zeros(1, dtype=torch.int32, device=device)

        in_step_criteria = [c for c in criteria if type(c).__name__ not in _LOOP_CRITERIA]

        def stop_rows():  # after a token's acceptance, which leaves `slot` at its column
            for criterion in in_step_criteria:
                unfinished.logical_and_(~criterion.at_column(tokens, slot))

        def first_token(logits):  # (refers to no `self`: a session in no reference cycle is freed once let go)
            accept(choose(process(tokens, logits.float(), slot), slot), slot)
            stop_rows()
            if kernels is not None:
                kernels.advance(tokens, slot, positions, valid, out=(fed, column_buffer))

        self.first_token = first_token

        def step():
            if kernels is not None:
                token, column = fed, self.column  # advanced by the previous step (or the first token)
            else:
                token = tokens.gather(1, slot.expand(batch, 1))
                positions.add_(1)
                valid.index_fill_(1, slot.view(1), True)
                column = slot + 1
            logits = self.forward(token, positions, slot, valid, cache)
            # the token-choice kernels read half-precision logits as they are (exact in float32, so the
            # same choice); processors and the PyTorch choice get float32
            if not (kernels is not None and plain_choice and logits.dtype in _KERNEL_SCORE_DTYPES):
                logits = logits.float()
            scores = process(tokens, logits, column)
            if kernels is not None and scores.dtype in _KERNEL_SCORE_DTYPES and scores.dim() == 2:
                kernels.choose_and_accept(scores, seed if do_sample else None, column, tokens, slot, unfinished,
                                          generated, eos, pad, advance_slot=True, feed_next=(fed, positions, valid),
                                          arrivals=arrivals)
                stop_rows()
                return
            accept(choose(scores, column), column)
            slot.add_(1)
            stop_rows()
            if kernels is not None:
                kernels.advance(tokens, slot, positions, valid, out=(fed, column_buffer))

        self.step = step

    def fill(self, input_ids, prompt_mask) -> None:
        """Load a prompt into the buffers (in place: a captured graph reads these very tensors).

        Unfilled token columns repeat each row's last prompt token ("set" processors see no change)."""
        prompt_len = self.prompt_len = input_ids.shape[1]
        self.tokens.copy_(input_ids[:, -1:].expand_as(self.tokens))
        self.tokens[:, :prompt_len] = input_ids
        self.valid.zero_()
        self.valid[:, :prompt_len] = True if prompt_mask is None else prompt_mask[:, :prompt_len].bool()
        # rotary position of the last prompt token
        self.positions.copy_(self.valid[:, :prompt_len].long().cumsum(-1)[:, -1:] - 1)
        self.slot.fill_(prompt_len)
        if self.do_sample:  # the kernel's random stream, drawn from torch's generator: seeded runs repeat
            self.seed.copy_(torch.randint(0, 2**31 - 1, (), device=self.device))
        self.unfinished.fill_(True)
        self.generated.zero_()

    def capture(self) -> None:
        """Capture the step (compiled first when asked; on failure the next candidate, then none)."""
        if not (self.device.type == "cuda" or TRY_CAPTURE_ON_CPU):
            return
        state = (self.tokens, self.positions, self.valid, self.slot, self.unfinished, self.generated, self.fed,
                 self.column, self.choice_arrivals, self.cache)
        for forward in self.candidates:
            self.forward = forward
            try:
                # the step writes each cache layer at the slot of the token it feeds, nowhere else
                self.graph = _capture(self.step, *state, written=self.slot.view(1))
                self.step = self.forward = self.candidates = None  # the graph replays without them
                return
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:
                what = "compiled" if forward is not self.candidates[-1] else "uncompiled"
                then = "trying the uncompiled step" if what == "compiled" else "running it step by step"
                warnings.warn(f"genplug: the {what} decode step could not be captured as a CUDA graph "
                              f"({type(exc).__name__}: {str(exc)[:200]}); {then}", RuntimeWarning, stacklevel=4)

    def run(self, steps_left: int, interval: int):
        """Replay (or run) up to ``steps_left`` steps; ``(sequences, tokens generated)``."""
        graph, unfinished = self.graph, self.unfinished
        flag = torch.zeros((), dtype=torch.bool, pin_memory=self.device.type == "cuda")
        pending = None  # event recorded after the flag's copy
        for i in range(1, steps_left + 1):
            graph.replay() if graph is not None else self.step()
            if i % interval == 0:
                if graph is None:
                    if not bool(unfinished.any()):
                        break
                    continue
                if pending is not None and pending.query() and not bool(flag):
                    break
                flag.copy_(unfinished.any(), non_blocking=True)
                pending = torch.cuda.Event()
                pending.record()
        n_generated = int(self.generated)
        # a copy: the buffer is refilled by the next call that reuses this session
        return self.tokens[:, : self.prompt_len + n_generated].clone(), n_generated

    def run_streaming(self, steps_left: int, streamer):
        """:meth:`run` for a call with a streamer: every step's token column goes to ``streamer.put`` as a
        ``[batch]`` CPU tensor, in order, exactly the columns the eager loop puts (those of the steps until
        every row finished). Each step's column and the count of tokens made are copied to pinned memory
        behind its replay; the host hands a step's column on after it has launched the next step, so the
        GPU never waits for the streamer. A column whose step came after every row finished ends the run
        (the one step launched past it is cut off like the steps between the eager loop's stop checks)."""
        graph, tokens, start = self.graph, self.tokens, self.prompt_len
        pinned = self.device.type == "cuda"
        columns = torch.empty(steps_left + 1, tokens.shape[0], dtype=tokens.dtype, pin_memory=pinned)
        made = torch.empty(steps_left + 1, dtype=torch.long, pin_memory=pinned)

        def copy_out(i):  # step i's column (0: the first token) and the count after it, without waiting
            columns[i].copy_(tokens[:, start + i], non_blocking=True)
            made[i].copy_(self.generated, non_blocking=True)
            if not pinned:
                return None
            event = torch.cuda.Event()
            event.record()
            return event

        def hand_on(i, event) -> bool:  # False once step i came after every row had finished
            if event is not None:
                event.synchronize()
            if int(made[i]) <= i:
                return False
            streamer.put(columns[i].clone())
            return True

        pending = (0, copy_out(0))
        for i in range(1, steps_left + 1):
            graph.replay() if graph is not None else self.step()
            launched = (i, copy_out(i))
            if not hand_on(*pending):
                pending = None
                break
            pending = launched
        if pending is not None:
            hand_on(*pending)
        n_generated = int(self.generated)
        return tokens[:, : start + n_generated].clone(), n_generated


def graph_processors(processors):
    """``(tokens, scores, length) -> scores`` running ``processors`` over the fixed-size token buffer.

    ``length`` (a 0-d device tensor) is how many tokens the sequences have so far; "length" processors
    get it through ``at_length``, "prefix" ones the buffer and it through ``at_prefix``, in their
    place in the order. The others run in unbroken stretches through a LogitsProcessorList, which
    keeps its fusions (top-k with top-p, in-place chains).
    """
    from .processing import LogitsProcessorList

    stretches, current = [], []
    for processor in processors:
        if getattr(processor, "history_use", "sequence") in _BUFFER_FORMS:
            if current:
                stretches.append(LogitsProcessorList(current))
                current = []
            stretches.append(processor)
        else:
            current.append(processor)
    if current:
        stretches.append(LogitsProcessorList(current))

    def process(tokens, scores, length):
        for stretch in stretches:
            if isinstance(stretch, LogitsProcessorList):
                scores = stretch(tokens, scores)
            elif stretch.history_use == "prefix":
                scores = stretch.at_prefix(tokens, length, scores)
            else:
                scores = stretch.at_length(length, scores)
        return scores

    return process


def compile_options(config, adapter=None) -> Optional[dict]:
    """The ``torch.compile`` keywords for the model's part of the step, or None to run it uncompiled.

    Taken from ``compile_config``; when it is unset, the adapter decides (``default_compile_config``:
    genplug's native step is captured uncompiled, so greedy output equals the eager loop's; transformers
    models are compiled, as transformers does with a static cache).
    ``mode`` is dropped: the CUDA graph is genplug's, so inductor must not add its own
    (``reduce-overhead``). The processors are never compiled: they change from call to call, and a
    compiled region keyed on them would recompile every call.
    """
    compile_config = getattr(config, "compile_config", None)
    if compile_config is None and adapter is not None and (adapter.device.type == "cuda"):
        compile_config = adapter.default_compile_config()
    if compile_config is None:
        return None
    options = compile_config.to_dict() if hasattr(compile_config, "to_dict") else dict(compile_config)
    return {k: v for k, v in options.items() if k in ("fullgraph", "dynamic", "backend", "options") and v is not None}


_CAPTURE_STREAMS = {}


def capture_stream(device: torch.device):
    """The side stream every capture on ``device`` uses (one for the process: cuBLAS keeps a workspace
    per stream, so the warm-up before a capture sets up what the capture then finds)."""
    stream = _CAPTURE_STREAMS.get(device)
    if stream is None:
        stream = _CAPTURE_STREAMS[device] = torch.cuda.Stream(device)
    return stream


def _capture(step, *state, written=None):
    """Capture one step over the live state tensors (see :func:`capture_graph`)."""
    return capture_graph(step, state[0].device, state, written=written)[0]


def capture_graph(run, device: torch.device, state, before_each=None, written=None):
    """``(graph, what the captured run returned)``: ``run()`` once for real (lazy set-up -- cuBLAS
    workspaces, kernel compiles -- happens outside the capture), then captured; ``state`` (see
    :func:`restored_afterwards`, with the cache slots the run ``written``) is put back afterwards, and
    ``before_each()`` runs before each of the two. (The capture itself executes nothing.)

    Warm-up and capture use one side stream per device for the whole process, and ``capture_begin`` is
    called directly: ``torch.cuda.graph`` would also empty the allocator's cache on every call, making
    the next call's allocations go to the driver. cuBLAS's cached workspaces are dropped before and
    after the capture (as inductor's CUDA-graph trees do), so the one this graph bakes in is allocated
    in its own private pool and lives exactly as long as the graph. Otherwise it would be the shared
    workspace of the capture stream, which anyone may free while the graph lives: inductor's graph
    trees (transformers' static cache + compile) drop every workspace, and PyTorch >= 2.11 drops the
    stream's when any graph captured on it is destroyed -- the later replay of this one then wrote freed
    memory (an illegal memory access, 2026-12-05).
    """
    stream = capture_stream(device)
    with restored_afterwards(state, written), _no_garbage_collection():
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            if before_each is not None:
                before_each()
            run()
            if before_each is not None:
                before_each()
            _drop_cublas_workspaces()
            graph = torch.cuda.CUDAGraph()
            graph.capture_begin()
            try:
                result = run()
            finally:
                try:
                    graph.capture_end()
                except BaseException:
                    _leave_generator_capture()
                    raise
                finally:
                    _drop_cublas_workspaces()
        torch.cuda.current_stream(device).wait_stream(stream)
    return graph, result


_GRAPHS_DROPPED = True  # the first capture of the process collects garbage first (see _no_garbage_collection)


def graphs_dropped() -> None:
    """Note that genplug let go of objects holding CUDA graphs that reference cycles may keep (evicted prefill
    graphs): the next capture collects garbage before it starts."""
    global _GRAPHS_DROPPED
    _GRAPHS_DROPPED = True


@contextlib.contextmanager
def _no_garbage_collection():
    """No garbage collection until the capture is over, and a collection first where genplug let go of
    graphs that cycles may keep since the last one (:func:`graphs_dropped`; the first capture collects
    too). Objects dropped in reference cycles are freed whenever the collector runs, which may be inside
    a capture: destroying a graph or freeing its memory there invalidates the capture (H100, twelfth
    session: batch-4 sampling's capture, right after other settings' sessions were released). Collecting
    before every capture cost ~150-300 ms in a process with transformers loaded (fourteenth session: 304
    ms of a graphed forward's capture; ~365,000 objects)."""
    global _GRAPHS_DROPPED
    if _GRAPHS_DROPPED:
        _GRAPHS_DROPPED = False
        gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _leave_generator_capture() -> None:
    """Put the CUDA random generators back out of capture mode after a capture that failed to end.

    ``CUDAGraph.capture_begin`` puts them in it and ``capture_end`` takes them out only once the capture
    ended well; after a failed one, every later random draw raises "Offset increment outside graph
    capture encountered unexpectedly". An empty capture on the same stream begins and ends that mode
    properly."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (PyTorch's note that the graph is empty)
            empty = torch.cuda.CUDAGraph()
            empty.capture_begin()
            empty.capture_end()
    except Exception as exc:  # nothing more to do: the failed capture's own error goes on
        warnings.warn(f"genplug: could not reset the CUDA random generator after a failed capture: {exc}",
                      RuntimeWarning, stacklevel=3)


def _drop_cublas_workspaces() -> None:
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # absent from CPU builds
    if clear is not None:
        clear()


@contextlib.contextmanager
def restored_afterwards(state, written=None):
    """Put every buffer back as it was on leaving -- the loop state tensors and the cache's keys, values
    and write counters (``state[-1]`` is the cache) -- also when the body fails: warm-up and capture
    run the step for real. ``written`` says which cache slots the body may write, so that only those
    are copied aside (a copy of a whole large static cache could exhaust the memory the call had): a
    ``slice`` of slots, or a 1-D index tensor of them (read on entry); None copies whole buffers."""
    live = [t for t in state if isinstance(t, torch.Tensor)]
    buffers = []
    for layer in state[-1].layers:
        live += [layer.position] if getattr(layer, "position", None) is not None else []
        buffers += [layer.keys, layer.values]
    saved = [t.clone() for t in live]
    if isinstance(written, torch.Tensor):
        written = written.clone()  # the body may move the tensor it came from (the slot)
        kept = [b.index_select(2, written) for b in buffers]
    else:
        kept = [b.clone() if written is None else b[:, :, written].clone() for b in buffers]
    try:
        yield
    finally:
        if buffers and buffers[0].is_cuda or live and live[0].is_cuda:
            torch.cuda.synchronize()
        for tensor, copy in zip(live, saved):
            tensor.copy_(copy)
        for buffer, copy in zip(buffers, kept):
            if isinstance(written, torch.Tensor):
                buffer.index_copy_(2, written, copy)
            elif written is None:
                buffer.copy_(copy)
            else:
                buffer[:, :, written].copy_(copy)