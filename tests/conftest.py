import os
import warnings

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not torch.cuda.is_available():
    # The fused decode kernels (Triton) then run through Triton's CPU interpreter; it must be chosen
    # before anything imports triton. Nothing else in the suite uses Triton on a CPU-only machine.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def triton_kernels_on():
    """"cuda", or "cpu" with genplug's Triton kernels run on CPU tensors through Triton's interpreter
    (``genplug.triton_support.ON_CPU``); skips where neither can run them."""
    pytest.importorskip("triton")
    from genplug import triton_support

    if torch.cuda.is_available():
        yield "cuda"
        return
    if not triton_support.INTERPRET:
        pytest.skip("no CUDA and Triton's interpreter was not selected before triton was imported")
    triton_support.ON_CPU = True
    yield "cpu"
    triton_support.ON_CPU = False


@pytest.fixture
def pm():
    """An isolated plugin manager with genplug's built-in plugins only."""
    from genplug.plugin_manager import new_plugin_manager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return new_plugin_manager(autoload=False)

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # makes tests/helpers importable as `helpers`


@pytest.fixture
def graph_on_cpu(monkeypatch):
    """The CUDA-graph decode loop's logic run eagerly on the CPU (``graph_loop.RUN_ON_CPU``), with its last
    capture time cleared so a test can tell that the loop ran."""
    import genplug.graph_loop as graph_loop

    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    monkeypatch.setattr(graph_loop, "LAST_CAPTURE_SECONDS", None)
    return graph_loop
