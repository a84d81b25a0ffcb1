"""The constraint state machines, on hand-worked token sequences (transformers 4.56 semantics)."""

import pytest

from genplug import ConstraintListState, DisjunctiveConstraint, PhrasalConstraint
from genplug.errors import GenerationConfigError


def test_phrasal_constraint_steps_and_resets():
    c = PhrasalConstraint([5, 6, 7])
    assert (c.advance(), c.remaining()) == (5, 3)
    assert c.update(5) == (True, False, False) and c.advance() == 6
    assert c.update(9) == (False, False, True)
    assert (c.advance(), c.remaining()) == (5, 3)  # a reset forgets the first token too (4.56 kept it)
    for token in (5, 6):
        c.update(token)
    assert c.update(7) == (True, True, False) and c.completed and c.advance() is None and c.remaining() == 0


def test_disjunctive_constraint_follows_the_alternatives():
    c = DisjunctiveConstraint([[1, 2, 3], [1, 4]])
    assert c.advance() == [1] and c.seqlen == 3
    c.update(1)
    assert sorted(c.advance()) == [2, 4]
    assert c.update(4) == (True, True, False) and c.remaining() == 0


def test_stateful_copies_are_independent():
    c = DisjunctiveConstraint([[1, 2], [1, 3]])
    c.update(1)
    twin = c.copy(stateful=True)
    twin.update(2)
    assert c.current_seq == [1] and not c.completed and twin.completed  # 4.56 shared current_seq here
    p = PhrasalConstraint([4, 5])
    p.update(4)
    q = p.copy(stateful=True)
    assert q.remaining() == 1 and p.copy().remaining() == 2


def test_list_state_progress_and_banks():
    state = ConstraintListState([PhrasalConstraint([5, 6]), PhrasalConstraint([7])])
    assert sorted(state.advance()) == [5, 7] and state.get_bank() == 0
    state.add(5)
    assert state.get_bank() == 1 and state.advance() == [6]  # one constraint at a time
    state.add(6)
    assert state.get_bank() == 2 and state.advance() == [7]
    state.add(7)
    assert state.completed and state.get_bank() == 4 and state.advance() is None


def test_list_state_reset_reads_a_whole_sequence():
    constraints = [PhrasalConstraint([5, 6])]
    state = ConstraintListState(constraints)
    state.reset([1, 5, 6, 2])
    assert state.completed
    state.reset([5, 5, 6])  # the second 5 breaks the phrase in progress and is not re-read (as 4.56)
    assert not state.completed
    copy = state.copy()
    copy.add(5)
    copy.add(6)
    assert copy.completed and not state.completed


def test_bad_token_ids():
    with pytest.raises(GenerationConfigError):
        PhrasalConstraint([1, -2])
    with pytest.raises(GenerationConfigError):
        DisjunctiveConstraint([[1], []])
    with pytest.raises(TypeError):
        PhrasalConstraint([1]).update("1")
