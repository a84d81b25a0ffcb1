"""InfNanRemoveLogitsProcessor and its factory."""

import torch

import genplug

from processor_testing import config, context, factory


def test_replaces_nan_and_infinities_by_finite_values():
    scores = torch.tensor([[float("nan"), float("inf"), float("-inf"), 1.5]])
    out = genplug.InfNanRemoveLogitsProcessor()(None, scores)
    big = torch.finfo(torch.float32).max
    assert out.tolist() == [[0.0, big, -big, 1.5]]
    assert torch.isnan(scores[0, 0])  # the input is unchanged


def test_factory_builds_only_when_true():
    assert factory("remove_invalid_values")(config(remove_invalid_values=True), context()) is not None
    assert factory("remove_invalid_values")(config(), context()) is None
