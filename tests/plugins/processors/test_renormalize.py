"""LogitNormalization and its factory (always the last processor)."""

import torch

import genplug

from processor_testing import build_all, config, context, factory


def test_scores_become_log_probabilities():
    out = genplug.LogitNormalization()(None, torch.randn(3, 7) * 5)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(3))


def test_factory_builds_only_when_true_and_runs_last():
    assert factory("renormalize_logits")(config(), context()) is None
    processors = build_all(config(renormalize_logits=True, do_sample=True, top_p=0.5, temperature=0.5), context())
    assert type(processors[-1]).__name__ == "LogitNormalization"
