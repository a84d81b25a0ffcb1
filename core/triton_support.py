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


def runs_on(tensor: torch.Tensor, dtypes: Optional[Tuple[torch.dtype, ...]] = None) -> bool:
    """True when a kernel may take ``tensor``: CUDA (or the tests' interpreter), a dtype among
    ``dtypes`` (None: any), ``GENPLUG_DECODE_KERNELS`` not ``0``, and Triton importable."""
    if dtypes is not None and tensor.dtype not in dtypes:
        return False
    if os.environ.get("GENPLUG_DECODE_KERNELS", "1") == "0":
        return False
    if not (tensor.is_cuda or (INTERPRET and ON_CPU)):
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
