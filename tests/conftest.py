import os
import warnings

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
