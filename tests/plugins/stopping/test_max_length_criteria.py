"""MaxLengthCriteria: transformers parity, the one-time context-size warning, the factory."""

import types
import warnings

import pytest
import torch

from genplug.plugins.stopping.max_length import MaxLengthCriteria, build_max_length

transformers_stopping = pytest.importorskip("transformers.generation.stopping_criteria")


@pytest.mark.parametrize("length", [1, 4, 5, 6, 9])
def test_matches_transformers(length):
    ids = torch.zeros((3, length), dtype=torch.long)
    theirs = transformers_stopping.MaxLengthCriteria(5)(ids, None)
    assert MaxLengthCriteria(5)(ids, None).tolist() == theirs.tolist()


def test_warns_once_past_the_context_size():
    criterion = MaxLengthCriteria(10, max_position_embeddings=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for length in range(1, 10):
            criterion(torch.zeros((1, length), dtype=torch.long), None)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "max_position_embeddings=4" in messages[0]


def test_no_warning_when_the_step_ends_generation():
    criterion = MaxLengthCriteria(5, max_position_embeddings=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert criterion(torch.zeros((2, 5), dtype=torch.long), None).tolist() == [True, True]


class _Adapter:
    max_position_embeddings = 64


@pytest.mark.parametrize("model, expected", [
    (_Adapter(), 64),  # a genplug ModelAdapter
    (types.SimpleNamespace(config=types.SimpleNamespace(max_position_embeddings=32)), 32),  # a bare model
    (types.SimpleNamespace(config=None), None),
    (None, None),
])
def test_factory(model, expected):
    context = types.SimpleNamespace(model=model)
    assert build_max_length(types.SimpleNamespace(max_length=None), context) is None
    built = build_max_length(types.SimpleNamespace(max_length=20), context)
    assert built.max_length == 20 and built.max_position_embeddings == expected
