"""genplug.kept: conversions kept between calls while their source object is unchanged."""

import gc
from types import SimpleNamespace as _Namespace

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genplug.kept import KeptByIdentity

VALUES = st.one_of(st.none(), st.integers(-3, 3), st.booleans(), st.text(max_size=2),
                   st.lists(st.integers(0, 3), max_size=3))
CHANGES = st.lists(st.tuples(st.sampled_from(["set", "append", "same", "delete"]), st.sampled_from("abc"), VALUES),
                   max_size=12)


class SimpleNamespace(_Namespace):
    """A namespace that can be weakly referenced, as configs are (the builtin cannot)."""


class Counted:
    """A conversion that records its calls: the oracle is the attributes as they are at each call."""

    def __init__(self):
        self.calls = 0

    def __call__(self, source):
        self.calls += 1
        return {k: list(v) if isinstance(v, list) else v for k, v in vars(source).items()}


@settings(max_examples=80, deadline=None)
@given(CHANGES)
def test_the_kept_value_is_always_the_conversion_of_the_object_as_it_is_now(changes):
    convert = Counted()
    kept = KeptByIdentity(convert)
    source = SimpleNamespace(a=1, b=[0])
    assert kept.get(source) == {"a": 1, "b": [0]}
    expected_calls = 1
    for action, name, value in changes:
        before = Counted()(source)
        if action == "set":
            setattr(source, name, value)
        elif action == "append" and isinstance(getattr(source, name, None), list):
            getattr(source, name).append(value)  # in place: the same list object
        elif action == "delete" and hasattr(source, name):
            delattr(source, name)
        now = Counted()(source)
        assert kept.get(source) == now
        expected_calls += now != before  # converted again exactly when something changed
        assert convert.calls == expected_calls


def test_objects_are_told_apart_by_identity_and_forgotten_when_collected():
    convert = Counted()
    kept = KeptByIdentity(convert)
    first, second = SimpleNamespace(a=1), SimpleNamespace(a=1)  # equal, but two objects
    assert kept.get(first) == kept.get(second) == {"a": 1} and convert.calls == 2
    assert kept.get(first) == {"a": 1} and convert.calls == 2
    del first
    gc.collect()
    assert len(kept._entries) == 1


def test_what_cannot_be_snapshot_or_compared_is_converted_every_time():
    calls = []
    kept = KeptByIdentity(lambda source: calls.append(1) or len(calls))
    mapping = {"a": 1}  # no __dict__
    assert kept.get(mapping) == 1 and kept.get(mapping) == 2
    holder = SimpleNamespace(weights=torch.ones(3))  # a tensor attribute: snapshots do not compare
    assert kept.get(holder) == 3 and kept.get(holder) == 4
    unreferable = _Namespace(a=1)  # the builtin namespace has no weak references
    assert kept.get(unreferable) == 5 and kept.get(unreferable) == 6
