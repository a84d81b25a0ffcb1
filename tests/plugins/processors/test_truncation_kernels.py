"""The one-kernel top-p threshold against the PyTorch arithmetic of truncation.nucleus_threshold.

On CUDA when there is one (the kernel then runs only while capturing, so the test captures), else
through Triton's interpreter (tests/conftest.py selects it)."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

pytest.importorskip("triton")

from genplug import triton_support  # noqa: E402
from genplug.plugins.processors import truncation  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.usefixtures("triton_kernels_on")


def _reference(values, threshold, extra, top_p, min_keep):
    on_cpu, triton_support.ON_CPU = triton_support.ON_CPU, False
    try:
        return truncation.nucleus_threshold(values.cpu(), None if threshold is None else threshold.cpu(),
                                            None if extra is None else extra.cpu(), top_p, min_keep)
    finally:
        triton_support.ON_CPU = on_cpu


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 3), k=st.integers(1, 300), top_p=st.floats(0.01, 1.0), min_keep=st.integers(1, 5),
       with_threshold=st.booleans(), with_extra=st.booleans(), levels=st.integers(2, 40),
       masked=st.floats(0, 0.9), seed=st.integers(0, 2**16))
def test_kernel_threshold_equals_the_pytorch_arithmetic(rows, k, top_p, min_keep, with_threshold, with_extra,
                                                        levels, masked, seed):
    g = torch.Generator().manual_seed(seed)
    values = (torch.randint(0, levels, (rows, k), generator=g).float() / 3).sort(-1, descending=True).values
    values[torch.rand(rows, k, generator=g) < masked] = float("-inf")
    values = values.sort(-1, descending=True).values  # -inf candidates last, as after a top-k
    threshold = values[:, -1:].clone() if with_threshold else None
    extra = torch.randint(0, 3, (rows, 1), generator=g) if with_extra else None
    expected = _reference(values, threshold, extra, top_p, min_keep)
    args = [t.to(DEVICE) if t is not None else None for t in (values, threshold, extra)]
    if DEVICE == "cuda":  # used only while capturing: capture it
        graph, out = torch.cuda.CUDAGraph(), None
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            out = truncation.nucleus_threshold(*args, top_p, min_keep)
        graph.replay()
        torch.cuda.synchronize()
    else:
        out = truncation.nucleus_threshold(*args, top_p, min_keep)
    assert torch.equal(out.cpu(), expected)
