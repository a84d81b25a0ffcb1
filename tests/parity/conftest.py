"""The transformers parity suite runs only where transformers is installed (always in CI)."""

import warnings

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

transformers.logging.set_verbosity_error()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/parity/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.parity)


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded():
    """transformers warns about pad ids and masks on purpose-built inputs; the cases check behaviour."""
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
