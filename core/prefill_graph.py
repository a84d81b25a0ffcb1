"""The prompt's forward (prefill) replayed as a CUDA graph.

At batch 1 a short prompt's forward is bound by the host, not the GPU: a 16-layer model launches
~440 kernels from Python (~10 ms on an H100) for ~2 ms of GPU work -- about 4% of a 256-token call,
which the CUDA-graph decode loop has otherwise made GPU-bound. So once a static cache has taken
prompts of some shape eagerly twice (which also sets up every kernel that forward uses), the forward
over that shape is captured, and a later call with a prompt of the same shape on the same cache copies its
tokens (and mask, positions) into the graph's input buffers and replays it.

On by default (``GENPLUG_PREFILL_GRAPH=0`` turns it off). On an H100 (2026-12-05) batch-1 greedy of
256 tokens went from ~806 to 828 tokens/s with it. Its first GPU run had ended in an illegal memory
access: the cuBLAS workspace its GEMMs used was the capture stream's shared one, freed under it by
inductor's graph trees and by PyTorch's graph destructor; captures now allocate their own
(:func:`.graph_loop.capture_graph`), and ``bench/probes/prefill_graph_check.py`` -- greedy, sampling,
greedy again, with transformers' static+compile calls between -- passes.

Only on the CUDA-graph decode path (the caller checks that), where the adapter says the forward is
capturable (``ModelAdapter.prefill_capturable``: genplug's native family, and transformers models run
by their native twin -- the forward reads nothing on the host except the cache's token counters, which
are those of an empty cache at every prefill), over caches of plain
static layers, for prompts of at most :data:`MAX_TOKENS` tokens in all. Each graph keeps the memory of
its forward's activations (tens of MB for a 1B model's 1,024-token prompt), at most :data:`MAX_SHAPES`
per cache; they go with the cache (``graph_loop.release(model)``, or :func:`forget`).
"""

from __future__ import annotations

import collections
import os
import warnings
import weakref
from typing import Any, Callable, Dict, Optional

import torch

from .graph_loop import capture_graph, graphs_dropped, parameters_key

ENABLED = os.environ.get("GENPLUG_PREFILL_GRAPH", "1") != "0"
MAX_TOKENS = 1024  # batch x prompt length: longer prompts keep the GPU busy anyway, and a graph keeps its activations
MAX_SHAPES = 4  # prompt shapes kept per cache; the least recently used is dropped
MAX_NOTED = 16  # prompt shapes seen once per cache, remembered so that a second sight captures
RUN_ON_CPU = False  # tests: "capture" keeps the forward, "replay" runs it over the same input buffers
# What the last call did: None (not for this model, device or size), "eager", "noted" (a shape's first
# sight: eager), "captured", "refused" (capture failed) or "replayed". For tests and probes.
LAST_PREFILL: Optional[str] = None

_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # cache -> OrderedDict(key -> _Prefill or None)
_NOTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # cache -> OrderedDict(key -> None)


def prefill(adapter, cache, ids: torch.Tensor, mask: Optional[torch.Tensor], positions: Optional[torch.Tensor],
            model_kwargs: Dict[str, Any], eager: Callable[[], Any], graph_loop: Callable[[], bool]):
    """The outputs of the prompt's forward ``eager()`` (``adapter.step`` over ``ids`` with ``mask`` and
    ``positions`` into the empty static ``cache``): replayed from an earlier call's graph when one fits;
    else run eagerly, and captured for later calls when this is the second call with a prompt of this
    shape and ``graph_loop()`` says the CUDA-graph decode loop takes over (a static cache allocates its
    buffers at its first prompt, so that is known for sure only afterwards). A capture costs about two
    more forwards, so a shape seen once is only noted: calls whose prompt lengths keep changing never
    pay for graphs they would not replay. The caller checks :data:`ENABLED`."""
    global LAST_PREFILL
    if not adapter.prefill_capturable(model_kwargs) or ids.numel() > MAX_TOKENS or (
            ids.device.type != "cuda" and not RUN_ON_CPU):
        LAST_PREFILL = None
        return eager()
    graphs = _GRAPHS.get(cache)
    key = _key(adapter, cache, ids, mask, positions, model_kwargs) if graphs else None
    entry = graphs.get(key) if key is not None else None
    if entry is not None and graph_loop() and all(layer.get_seq_length() == 0 for layer in cache.layers):
        graphs.move_to_end(key)
        LAST_PREFILL = "replayed"
        return entry.replay(ids, mask, positions, cache)
    outputs = eager()
    if key is None:  # a new cache's buffers come with its first prompt: only now is it known to be plain static
        key = _key(adapter, cache, ids, mask, positions, model_kwargs)
    # each shape is tried once: a refusal is kept as None
    if key is None or (graphs is not None and key in graphs) or not graph_loop():
        LAST_PREFILL = "eager"
        return outputs
    if not _seen_before(cache, key):
        LAST_PREFILL = "noted"
        return outputs
    graphs = _GRAPHS.setdefault(cache, collections.OrderedDict())
    graphs[key] = _Prefill.capture(adapter, cache, ids, mask, positions, model_kwargs)
    while len(graphs) > MAX_SHAPES:
        graphs.popitem(last=False)
        graphs_dropped()
    LAST_PREFILL = "captured" if graphs[key] is not None else "refused"
    return outputs


def forget(cache) -> None:
    """Drop the prefill graphs kept for ``cache`` (they hold device memory for their activations)."""
    if _GRAPHS.pop(cache, None):
        graphs_dropped()
    _NOTED.pop(cache, None)


def _seen_before(cache, key) -> bool:
    """Whether a prompt of shape ``key`` came to ``cache`` before; notes it (the last :data:`MAX_NOTED`)."""
    noted = _NOTED.setdefault(cache, collections.OrderedDict())
    if key in noted:
        del noted[key]
        return True
    noted[key] = None
    while len(noted) > MAX_NOTED:
        noted.popitem(last=False)
    return False


def _key(adapter, cache, ids, mask, positions, model_kwargs):
    """What must be equal for a replay to compute what ``eager()`` would, or None (not eligible)."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(_plain_static(layer) for layer in layers):
        return None
    if any(isinstance(v, torch.Tensor) for v in model_kwargs.values()):
        return None  # a tensor argument would be baked in by address
    try:
        extra = repr(sorted((k, v) for k, v in model_kwargs.items() if v is not None))
        weights = parameters_key(adapter.model)
    except TypeError:
        return None
    return (_shape(ids), _shape(mask), _shape(positions), extra, weights)


def _shape(tensor: Optional[torch.Tensor]):
    return None if tensor is None else (tuple(tensor.shape), tensor.dtype, str(tensor.device))


def _plain_static(layer) -> bool:
    """A preallocated full-attention layer (``StaticLayer``): its only host state is the ``seen`` counter."""
    return (hasattr(layer, "seen") and getattr(layer, "position", None) is not None and hasattr(layer, "max_cache_len")
            and not getattr(layer, "is_sliding", False) and not getattr(layer, "_seen_is_stale", False))


class _Prefill:
    """One captured prompt forward: its input buffers, its outputs (read after each replay), the graph."""

    def __init__(self, inputs, logits, graph, run):
        # only the logits are kept: the forward's outputs hold the cache, this graph's (weak) key
        self.inputs, self.logits, self.graph, self.run = inputs, logits, graph, run

    @classmethod
    def capture(cls, adapter, cache, ids, mask, positions, model_kwargs) -> Optional["_Prefill"]:
        """Capture the forward over copies of the inputs as an empty cache takes it. As for the decode
        step, one warm-up run on the capture stream comes first; both run with the cache's counters at
        zero, and the cache (buffers and counters) is put back as it was afterwards. None, with a
        warning, when the forward cannot be captured."""
        inputs = tuple(None if t is None else t.clone() for t in (ids, mask, positions))

        def run():
            return adapter.step(inputs[0], inputs[1], inputs[2], cache, model_kwargs, use_cache=True)

        if ids.device.type != "cuda":  # RUN_ON_CPU: the buffers and counters logic without a graph
            return cls(inputs, None, None, run)

        def as_if_empty():
            for layer in cache.layers:
                layer.seen = 0
                layer.position.zero_()

        seen = [layer.seen for layer in cache.layers]
        try:
            graph, outputs = capture_graph(run, ids.device, (cache,), before_each=as_if_empty,
                                           written=slice(0, ids.shape[1]))  # the prompt's slots
            return cls(inputs, outputs.logits, graph, None)
        except Exception as exc:  # out of memory included: the prompt then runs eagerly, as before
            warnings.warn(f"genplug: the prompt's forward could not be captured as a CUDA graph ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); prompts of this shape run eagerly", RuntimeWarning, stacklevel=4)
            return None
        finally:
            for layer, count in zip(cache.layers, seen):
                layer.seen = count

    def replay(self, ids, mask, positions, cache):
        for buffer, given in zip(self.inputs, (ids, mask, positions)):
            if buffer is not None:
                buffer.copy_(given)
        if self.graph is None:
            return self.run()
        self.graph.replay()
        for layer in cache.layers:  # the replay moved the device counters; the host ones follow
            layer.seen = ids.shape[1]
        return Replayed(self.logits, cache)


class Replayed:
    """What the loop reads of a replayed prompt forward: its logits (in the graph's memory, rewritten
    by the next replay) and the cache."""

    def __init__(self, logits, past_key_values):
        self.logits, self.past_key_values = logits, past_key_values
