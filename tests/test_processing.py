"""Processor ordering by stage and before/after, independent of registration order."""

import pytest
from hypothesis import given, strategies as st

from genplug.processing import order_entries
from genplug.registry import Registry
from genplug.stages import STAGES


def _registry(specs):
    registry = Registry("logits processor")
    for name, stage, after in specs:
        registry.add(name, None, "p", "p", stage=stage, after=after)
    return registry


@given(st.permutations([("a", "penalty", ()), ("b", "penalty", ("a",)), ("c", "penalty", ("b",)),
                        ("t", "temperature", ()), ("g", "guidance", ()), ("z", "bias", ())]))
def test_order_is_stage_then_constraints_whatever_the_registration_order(specs):
    names = [e.name for e in order_entries(_registry(specs).values())]
    assert names == ["g", "z", "a", "b", "c", "t"]


def test_cycle_is_an_error():
    with pytest.raises(ValueError, match="circular"):
        order_entries(_registry([("a", "penalty", ("b",)), ("b", "penalty", ("a",))]).values())


def test_stages_are_unique_and_user_sits_before_warpers():
    assert len(set(STAGES)) == len(STAGES)
    assert STAGES.index("user") < STAGES.index("temperature") < STAGES.index("normalize") == len(STAGES) - 1
