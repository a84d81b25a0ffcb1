"""EosTokenCriteria: transformers parity, accepted id forms, the factory."""

import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genplug.plugins.stopping.eos import EosTokenCriteria, build_eos
from genplug.stopping import StoppingCriteriaList

transformers_stopping = pytest.importorskip("transformers.generation.stopping_criteria")


@settings(max_examples=100, deadline=None)
@given(
    rows=st.integers(1, 5),
    length=st.integers(1, 6),
    eos=st.lists(st.integers(0, 9), min_size=1, max_size=3),
    new_tokens=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_matches_transformers(rows, length, eos, new_tokens, seed):
    ids = torch.randint(0, 10, (rows, length), generator=torch.Generator().manual_seed(seed))
    theirs = transformers_stopping.EosTokenCriteria(eos)(ids, None, new_token_length=new_tokens)
    ours = EosTokenCriteria(eos)(ids, None, new_token_length=new_tokens)
    assert ours.tolist() == theirs.tolist()
    assert ours.shape == (rows,) and ours.dtype == torch.bool


@pytest.mark.parametrize("eos", [2, [2], [5, 2], torch.tensor([2, 7]), torch.tensor(2)])
def test_id_forms(eos):
    criterion = EosTokenCriteria(eos)
    assert criterion(torch.tensor([[1, 2], [2, 1]]), None).tolist() == [True, False]
    assert criterion.eos_token_id.dim() == 1


def test_marks_the_list_as_padding_finished_rows():
    assert StoppingCriteriaList([EosTokenCriteria(0)]).has_eos


def test_factory_uses_the_resolved_eos_tensor():
    config = types.SimpleNamespace(eos_token_id=3)
    assert build_eos(config, types.SimpleNamespace(eos_token_ids=None)) is None
    built = build_eos(config, types.SimpleNamespace(eos_token_ids=torch.tensor([3, 4])))
    assert built.eos_token_id.tolist() == [3, 4]
    assert built(torch.tensor([[4], [5]]), None).tolist() == [True, False]
