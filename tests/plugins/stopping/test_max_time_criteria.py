"""MaxTimeCriteria: the clock, its start, the factory."""

import time
import types

import pytest
import torch

from genplug.plugins.stopping import max_time
from genplug.plugins.stopping.max_time import MaxTimeCriteria, build_max_time

transformers_stopping = pytest.importorskip("transformers.generation.stopping_criteria")

IDS = torch.zeros((3, 2), dtype=torch.long)


@pytest.mark.parametrize("elapsed", [0.0, 0.5, 1.0, 1.5])
def test_matches_transformers(elapsed):
    start = time.time() - elapsed
    theirs = transformers_stopping.MaxTimeCriteria(0.75, initial_timestamp=start)(IDS, None)
    assert MaxTimeCriteria(0.75, initial_timestamp=start)(IDS, None).tolist() == theirs.tolist()


def test_the_clock_starts_when_the_criterion_is_built(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(max_time.time, "time", lambda: now[0])
    criterion = build_max_time(types.SimpleNamespace(max_time=2.0), types.SimpleNamespace())
    now[0] += 2.0
    assert criterion(IDS, None).tolist() == [False] * 3  # not more than max_time yet
    now[0] += 0.01
    assert criterion(IDS, None).tolist() == [True] * 3


def test_factory_off_by_default():
    assert build_max_time(types.SimpleNamespace(max_time=None), types.SimpleNamespace()) is None


def test_not_compile_safe():
    assert MaxTimeCriteria(1.0).compile_safe is False
