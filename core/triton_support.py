"""Whether genplug's optional Triton kernels may run on a tensor, decided without importing Triton.

The kernel modules (``plugins/models/llama/decode_kernels.py``, ``core/vocab_kernels.py``,
``plugins/processors/truncation_kernels.py``) import Triton at import time, so callers import them
only once :func:`runs_on` says yes: genplug itself imports Triton (~0.15 s) only where a kernel runs.
One switch, ``ON_CPU``, lets the tests run every kernel on CPU tensors through Triton's interpreter.
"""

from __future__ import annotations

import importlib
import os
from typing import Optional, Tuple

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter was chosen ...
ON_CPU = False  # ... and the tests ask for the kernels on CPU tensors through it
_IMPORTABLE: Optional[bool] = None
_DEPENDENT_LAUNCH = {}  # device index -> whether kernels there may launch before their predecessor ends


def runs_on(tensor: torch.Tensor, dtypes: Optional[Tuple[torch.dtype, ...]] = None) -> bool:
    """True when a kernel may take ``tensor``: CUDA (or the tests' interpreter), a dtype among
    ``dtypes`` (None: any), ``GENPLUG_DECODE_KERNELS`` not ``0``, and Triton importable."""
    if dtypes is not None and tensor.dtype not in dtypes:
        return False
    if not (tensor.is_cuda or (INTERPRET and ON_CPU)):  # first: a CPU tensor is refused without reading the environment
        return False
    if os.environ.get("GENPLUG_DECODE_KERNELS", "1") == "0":
        return False
    return _triton_importable()


def _triton_importable() -> bool:
    global _IMPORTABLE
    if _IMPORTABLE is None:
        try:
            importlib.import_module("triton.language.extra.libdevice")  # Triton >= 3.0
            _IMPORTABLE = True
        except ImportError:
            _IMPORTABLE = False
    return _IMPORTABLE


def dependent_launch(device: torch.device) -> bool:
    """Whether kernels on ``device`` use programmatic dependent launch (PDL): Hopper or newer, compiled
    (not interpreted), Triton with grid-dependency control, and not turned off with ``GENPLUG_PDL=0``.

    With PDL a kernel starts while its predecessor is still finishing; it reads only weights until
    ``gdc_wait`` returns, so in a chain of weight-bound decode kernels the next one's weight reads
    overlap the previous one's tail instead of waiting for a full launch. On by default since
    bench/probes/step_variants.py measured it on an H100 (2026-12-05: batch-1 greedy 715 -> 735
    tokens/s alone, 780 -> 808 with the split attention; graph == eager). Decided
    once per device (this runs at every kernel launch): clear ``_DEPENDENT_LAUNCH`` after changing
    ``GENPLUG_PDL`` in a running process.
    """
    if device.type != "cuda" or INTERPRET:
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _DEPENDENT_LAUNCH:
        if os.environ.get("GENPLUG_PDL", "1") == "0":
            _DEPENDENT_LAUNCH[index] = False
            return False
        try:
            from triton.language.extra import cuda as triton_cuda

            has_gdc = hasattr(triton_cuda, "gdc_wait")
        except ImportError:
            has_gdc = False
        _DEPENDENT_LAUNCH[index] = has_gdc and torch.cuda.get_device_capability(index)[0] >= 9
    return _DEPENDENT_LAUNCH[index]
