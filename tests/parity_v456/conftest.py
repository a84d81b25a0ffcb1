"""The transformers 4.56.2 parity suite for diverse and constrained beam search.

The recorded fixture is compared under the installed transformers (5.x, used only to build the tiny
models); the slow test re-records a few cases live in a virtual environment with transformers 4.56.2.
"""

import warnings

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

transformers.logging.set_verbosity_error()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/parity_v456/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.parity)


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded():
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
