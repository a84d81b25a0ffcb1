"""The eager loop's one-token forward replayed from a CUDA graph, where the whole step cannot be.

The CUDA-graph decode loop (:mod:`.graph_loop`) captures a whole step -- forward, processors, token
choice, stopping -- and so refuses calls whose step needs the host: a time limit or any stopping
criterion checked on the host, processors that are Python callbacks or read the token order,
per-step scores or logits. Those calls run the eager loop, where a batch-1 step of a 1B model on an H100
is bound by launching ~150-300 kernels from Python (~110 tokens/s against the graph loop's ~900,
bench/probes/eager_paths.py). Their forward needs no host at all, though: with a static cache on CUDA it
is the same ``static_decode_step`` the graph loop captures. :class:`GraphedForward` captures just that
(the fed token copied into a buffer of its own; position, slot and valid mask advanced inside the graph),
and the eager loop replays it each step, then runs processors, token choice and criteria as always: on an
H100, ~806-832 tokens/s with a stopping criterion of the user's own against ~83-150 with the eager forward
(bench/probes/graphed_forward_speed.py). The logits are the bits the graph loop's step computes, which for
genplug's native models and their twins equal the eager forward's (the fused kernels run in both).
"""

from __future__ import annotations

import os
import time
import warnings
import weakref
from typing import Optional

import torch

from . import graph_loop

ENABLED = True  # GENPLUG_GRAPHED_FORWARD=0 turns it off (read per call)
LAST_REUSED: Optional[bool] = None  # whether the last call replayed a kept graph (set by graphed_forward)
LAST_CAPTURE_SECONDS: Optional[float] = None  # that call's set-up: refill, or build and capture


class StepLogits:
    """What the eager loop reads from a forward's outputs: ``logits [batch, 1, vocab]`` (a view of the
    graph's output buffer, overwritten by the next replay)."""

    __slots__ = ("logits",)

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class GraphedForward:
    """The forward's state -- the fed token, positions, valid slots, cache slot -- and its CUDA graph.

    ``forward(column)`` feeds ``column [batch, 1]`` (the token chosen last) through the model into the cache
    at the current slot and returns its :class:`StepLogits`; the slot then moves on. Kept with the model
    (next to the graph loop's sessions, :data:`.graph_loop._SESSIONS`) and refilled in place by a later call
    with the same settings over the same static cache, as the graph loop's sessions are: no new capture.
    """

    def __init__(self, key, adapter, cache, batch: int, token_dtype: torch.dtype, config):
        device = adapter.device
        self.key, self.cache, self.prompt_len = key, cache, 0
        self.fed = torch.zeros(batch, 1, dtype=token_dtype, device=device)
        self.valid = torch.zeros(batch, cache.layers[0].keys.shape[2], dtype=torch.bool, device=device)
        self.positions = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.slot = torch.zeros((), dtype=torch.long, device=device)
        options = graph_loop.compile_options(config, adapter)
        self.candidates = ([adapter.compiled_static_decode_step(options)] if options is not None else [])
        self.candidates.append(adapter.static_decode_step)
        self.model_step = self.candidates[0]
        self.graph = None
        self.out: Optional[StepLogits] = None

    def fill(self, prompt_mask: Optional[torch.Tensor], prompt_len: int) -> None:
        """Point the state at a new call's prompt (already in the cache): in place, the graph reads these."""
        self.prompt_len = prompt_len
        self.valid.zero_()
        self.valid[:, :prompt_len] = True if prompt_mask is None else prompt_mask[:, :prompt_len].bool()
        # rotary position of the last prompt token, advanced before each forward
        self.positions.copy_(self.valid[:, :prompt_len].long().cumsum(-1)[:, -1:] - 1)
        self.slot.fill_(prompt_len)

    def _step(self) -> torch.Tensor:
        slot = self.slot
        self.positions.add_(1)
        self.valid.index_fill_(1, slot.view(1), True)
        logits = self.model_step(self.fed, self.positions, slot, self.valid, self.cache)
        slot.add_(1)
        return logits

    def capture(self) -> bool:
        """Capture the step (compiled first where the graph loop would compile it); False when no form
        of it could be captured -- the caller then runs the model's own forward, as before. On a CPU
        (``graph_loop.RUN_ON_CPU``, tests) nothing is captured and :meth:`forward` runs the step itself."""
        if self.slot.device.type != "cuda" and not graph_loop.TRY_CAPTURE_ON_CPU:
            self.model_step = self.candidates[-1]
            return True
        state = (self.fed, self.positions, self.valid, self.slot, self.cache)
        for step in self.candidates:
            self.model_step = step
            try:
                self.graph, out = graph_loop.capture_graph(self._step, self.slot.device, state,
                                                           written=self.slot.view(1))
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:
                then = "trying the uncompiled step" if step is not self.candidates[-1] else "running it eagerly"
                warnings.warn(f"genplug: the one-token forward could not be captured as a CUDA graph "
                              f"({type(exc).__name__}: {str(exc)[:200]}); {then}", RuntimeWarning, stacklevel=3)
                continue
            self.out = StepLogits(out.unsqueeze(1))
            self.candidates = self.model_step = None  # nothing kept may refer to the model (see _SESSIONS)
            return True
        return False

    def forward(self, column: torch.Tensor) -> StepLogits:
        self.fed.copy_(column)
        if self.graph is None:  # on a CPU (tests)
            return StepLogits(self._step().unsqueeze(1))
        self.graph.replay()
        return self.out

    def crop(self, n_generated: int) -> None:
        """Leave the cache holding the prompt and the first ``n_generated - 1`` new tokens (those fed)."""
        for layer in self.cache.layers:
            layer.crop_to(self.prompt_len + n_generated - 1)


_REFUSED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> settings whose capture failed


def graphed_forward(adapter, cache, tokens: torch.Tensor, prompt_mask: Optional[torch.Tensor], prompt_len: int,
                    config) -> Optional[GraphedForward]:
    """The model's kept :class:`GraphedForward` when the last call left one with these settings over this
    cache (refilled for this prompt), else a new one, captured and kept; None where no capture succeeded."""
    global LAST_REUSED, LAST_CAPTURE_SECONDS
    started = time.perf_counter()
    key = ("graphed forward", tokens.shape[0], tokens.dtype, str(tokens.device),
           repr(graph_loop.compile_options(config, adapter)), os.environ.get("GENPLUG_DECODE_KERNELS"),
           graph_loop.parameters_key(adapter.model))
    kept = graph_loop._SESSIONS.get(adapter.model)
    reuse = isinstance(kept, GraphedForward) and kept.key == key and kept.cache is cache
    if not reuse and _REFUSED.get(adapter.model) == key:
        return None  # every form failed to capture with these settings before: not tried (and warned) again
    forward = kept if reuse else GraphedForward(key, adapter, cache, tokens.shape[0], tokens.dtype, config)
    forward.fill(prompt_mask, prompt_len)
    if not reuse:
        if not forward.capture():
            _REFUSED[adapter.model] = key
            return None
        if forward.graph is not None or graph_loop.RUN_ON_CPU:
            graph_loop.keep_session(adapter.model, forward)
    LAST_REUSED, LAST_CAPTURE_SECONDS = reuse, time.perf_counter() - started
    return forward


def graphed_forward_possible(adapter, cache, config, step_inputs, wanted_outputs, synced_gpus) -> bool:
    """Whether the eager loop may replay its forward from a CUDA graph: a static cache on CUDA that the
    adapter's ``static_decode_step`` can run over, a forward fed tokens only, no per-step attentions or
    hidden states, no ``synced_gpus`` and no ``disable_compile``."""
    on_device = adapter.device.type == "cuda" or graph_loop.RUN_ON_CPU
    if not on_device or synced_gpus or getattr(config, "disable_compile", None):  # first: a CPU call stops here
        return False
    if not ENABLED or os.environ.get("GENPLUG_GRAPHED_FORWARD") == "0":
        return False
    if wanted_outputs or cache is None or "static_shape" not in getattr(cache, "capabilities", ()):
        return False
    if not step_inputs.takes_tokens_only:
        return False
    return adapter.why_no_static_decode(cache) is None
