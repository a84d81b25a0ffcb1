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
