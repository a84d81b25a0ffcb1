"""Constraints for constrained beam search: what a generated sequence must contain.

The public API of transformers 4.56's ``generation/beam_constraints.py``: a :class:`Constraint` is a
small state machine fed one token at a time (``advance`` names the tokens that make progress,
``update`` consumes a token), :class:`PhrasalConstraint` asks for one token sequence,
:class:`DisjunctiveConstraint` for any one of several, and :class:`ConstraintListState` tracks a
whole list of constraints along one hypothesis (at most one in progress at a time).

Three 4.56 bugs are fixed here. ``DisjunctiveConstraint.copy(stateful=True)`` shared the list of
tokens seen with the original, so stepping a copy also stepped the original: constrained beam search
then ranked some alternatives of a disjunctive constraint that share a prefix as if they had made no
progress, which changes its output (genplug's output can differ from 4.56's there, see
docs/strategies.md). ``PhrasalConstraint.reset()`` left the first token counted as fulfilled, and
``ConstraintListState.reset()`` kept ``completed=True`` from before; the search never relied on
either.
"""

from __future__ import annotations

import abc
from typing import Dict, List, Optional, Tuple

from genplug.errors import GenerationConfigError


def _token_list(value, what: str) -> List[int]:
    if not isinstance(value, list) or not value:
        raise GenerationConfigError(f"{what}={value!r} must be a non-empty list of token ids (ints >= 0)")
    for token in value:
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise GenerationConfigError(f"{what}={value!r} holds {token!r}, which is not a token id (an int >= 0)")
    return value


class Constraint(abc.ABC):
    """A condition on the generated sequence, checked one token at a time.

    Subclasses implement ``advance() -> int | list[int] | None`` (the tokens that make progress now),
    ``does_advance(token) -> bool``, ``update(token) -> (stepped, completed, reset)``, ``reset()``,
    ``remaining() -> int`` (tokens still needed), ``copy(stateful=False)`` and set ``seqlen`` (the
    longest number of tokens it can take) and ``completed``. Calling ``Constraint.__init__`` runs
    :meth:`test`, which checks that following ``advance()`` completes the constraint.
    """

    seqlen: int
    completed: bool

    def __init__(self):
        self.test()

    def test(self) -> None:
        """Raise if feeding ``advance()`` back does not complete the constraint (10,000 steps at most)."""
        steps = 0
        completed = False
        while not completed:
            if steps == 1:
                self.reset()
            advance = self.advance()
            token = advance[0] if isinstance(advance, list) else advance
            if not self.does_advance(token):
                raise GenerationConfigError(
                    f"{type(self).__name__} is not a valid constraint: does_advance(advance()) is False")
            _, completed, _ = self.update(token)
            steps += 1
            if steps > 10000:
                raise GenerationConfigError(
                    f"{type(self).__name__} is not a valid constraint: following advance() never completes it")
        if self.remaining() != 0:
            raise GenerationConfigError(
                f"{type(self).__name__} is not a valid constraint: remaining() is {self.remaining()} once completed")

    @abc.abstractmethod
    def advance(self):
        """The token (int) or tokens (list) that would make progress, or None when completed."""

    @abc.abstractmethod
    def does_advance(self, token_id: int) -> bool:
        """Whether ``token_id`` makes progress."""

    @abc.abstractmethod
    def update(self, token_id: int) -> Tuple[bool, bool, bool]:
        """Consume ``token_id``: returns ``(stepped, completed, reset)``."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget all progress."""

    @abc.abstractmethod
    def remaining(self) -> int:
        """How many more tokens are needed."""

    @abc.abstractmethod
    def copy(self, stateful: bool = False) -> "Constraint":
        """A new constraint of the same kind, with this one's progress when ``stateful``."""


def _check_token(token_id) -> None:
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        raise TypeError(f"token_id must be an int, got {token_id!r} ({type(token_id).__name__})")


class PhrasalConstraint(Constraint):
    """The tokens ``token_ids`` must appear in this order, one right after the other."""

    def __init__(self, token_ids: List[int]):
        self.token_ids = _token_list(token_ids, "token_ids")
        self.seqlen = len(token_ids)
        self.fulfilled_idx = -1  # index of the last token matched so far
        self.completed = False

    def advance(self) -> Optional[int]:
        return None if self.completed else self.token_ids[self.fulfilled_idx + 1]

    def does_advance(self, token_id: int) -> bool:
        _check_token(token_id)
        return not self.completed and token_id == self.token_ids[self.fulfilled_idx + 1]

    def update(self, token_id: int) -> Tuple[bool, bool, bool]:
        _check_token(token_id)
        if not self.does_advance(token_id):
            self.reset()
            return False, False, True
        self.fulfilled_idx += 1
        self.completed = self.fulfilled_idx == self.seqlen - 1
        return True, self.completed, False

    def reset(self) -> None:
        self.completed = False
        self.fulfilled_idx = -1

    def remaining(self) -> int:
        return self.seqlen - (self.fulfilled_idx + 1)

    def copy(self, stateful: bool = False) -> "PhrasalConstraint":
        twin = PhrasalConstraint(self.token_ids)
        if stateful:
            twin.fulfilled_idx = self.fulfilled_idx
            twin.completed = self.completed
        return twin


class DisjunctiveTrie:
    """The alternatives of a :class:`DisjunctiveConstraint` as a prefix tree of token ids."""

    def __init__(self, nested_token_ids: List[List[int]], no_subsets: bool = True):
        self.max_height = max(len(option) for option in nested_token_ids)
        root: Dict[int, dict] = {}
        for option in nested_token_ids:
            node = root
            for token in option:
                node = node.setdefault(token, {})
        if no_subsets and self._leaves(root) != len(nested_token_ids):
            raise GenerationConfigError(
                f"the alternatives {nested_token_ids!r} overlap: one is a prefix of (or equal to) another, so the "
                "constraint would be met before the longer one could be written; remove the shorter or the duplicate"
            )
        self.trie = root

    def next_tokens(self, current_seq: List[int]) -> List[int]:
        node = self.trie
        for token in current_seq:
            node = node[token]
        return list(node.keys())

    def reached_leaf(self, current_seq: List[int]) -> bool:
        return not self.next_tokens(current_seq)

    def _leaves(self, node: dict) -> int:
        return 1 if not node else sum(self._leaves(child) for child in node.values())


class DisjunctiveConstraint(Constraint):
    """Any one of the token sequences in ``nested_token_ids`` must appear (e.g. word forms)."""

    def __init__(self, nested_token_ids: List[List[int]]):
        if not isinstance(nested_token_ids, list) or not nested_token_ids:
            raise GenerationConfigError(
                f"nested_token_ids={nested_token_ids!r} must be a non-empty list of token-id lists")
        for option in nested_token_ids:
            _token_list(option, "an alternative of nested_token_ids")
        self.trie = DisjunctiveTrie(nested_token_ids)
        self.token_ids = nested_token_ids
        self.seqlen = self.trie.max_height
        self.current_seq: List[int] = []
        self.completed = False

    def advance(self) -> Optional[List[int]]:
        tokens = self.trie.next_tokens(self.current_seq)
        return tokens or None

    def does_advance(self, token_id: int) -> bool:
        _check_token(token_id)
        return token_id in self.trie.next_tokens(self.current_seq)

    def update(self, token_id: int) -> Tuple[bool, bool, bool]:
        _check_token(token_id)
        stepped = self.does_advance(token_id)
        if stepped:
            self.current_seq.append(token_id)
        else:
            self.reset()
        self.completed = self.trie.reached_leaf(self.current_seq)
        return stepped, self.completed, not stepped

    def reset(self) -> None:
        self.completed = False
        self.current_seq = []

    def remaining(self) -> int:
        return 0 if self.completed else self.seqlen - len(self.current_seq)

    def copy(self, stateful: bool = False) -> "DisjunctiveConstraint":
        twin = DisjunctiveConstraint(self.token_ids)
        if stateful:
            twin.current_seq = list(self.current_seq)
            twin.completed = self.completed
        return twin


class ConstraintListState:
    """The progress of one hypothesis through a list of constraints.

    Constraints are met one at a time: a token either continues the one in progress (or, failing that,
    puts it back among the pending ones, fresh) or starts the first pending constraint it advances.
    ``get_bank()`` scores the progress (completed constraints count ``max_seqlen`` each, plus the
    tokens of the one in progress); constrained beam search keeps beams of every progress level.
    """

    def __init__(self, constraints: List[Constraint]):
        self.constraints = constraints
        self.max_seqlen = max(c.seqlen for c in constraints)
        self.n_constraints = len(constraints)
        self.init_state()

    def init_state(self) -> None:
        self.completed = False  # 4.56 kept a stale True here when a state was reset after completing
        self.complete_constraints: List[Constraint] = []
        self.inprogress_constraint: Optional[Constraint] = None
        self.pending_constraints: List[Constraint] = [c.copy(stateful=False) for c in self.constraints]

    def get_bank(self) -> int:
        progress = 0
        if self.inprogress_constraint:
            progress = self.max_seqlen - self.inprogress_constraint.remaining()
        return len(self.complete_constraints) * self.max_seqlen + progress

    def advance(self) -> Optional[List[int]]:
        """The tokens that would make progress now (None when every constraint is met)."""
        sources = [self.inprogress_constraint] if self.inprogress_constraint is not None else self.pending_constraints
        tokens: List[int] = []
        for constraint in sources:
            step = constraint.advance()
            if isinstance(step, int):
                tokens.append(step)
            elif isinstance(step, list):
                tokens.extend(step)
        return tokens or None

    def reset(self, token_ids: Optional[List[int]]) -> None:
        """Start over and feed ``token_ids`` (stops early once every constraint is met)."""
        self.init_state()
        for token in token_ids or ():
            self.add(token)
            if self.completed:
                break

    def add(self, token_id: int) -> Tuple[bool, bool]:
        """Feed one token; returns ``(complete, stepped)`` for the constraint it touched."""
        _check_token(token_id)
        if self.completed:
            return True, False
        complete = stepped = False
        if self.inprogress_constraint is not None:
            stepped, complete, reset = self.inprogress_constraint.update(token_id)
            if reset:
                self.pending_constraints.append(self.inprogress_constraint.copy(stateful=False))
                self.inprogress_constraint = None
            if complete:
                self.complete_constraints.append(self.inprogress_constraint)
                self.inprogress_constraint = None
                if not self.pending_constraints:
                    self.completed = True
            return complete, stepped
        for index, pending in enumerate(self.pending_constraints):
            if not pending.does_advance(token_id):
                continue
            stepped, complete, _ = pending.update(token_id)
            if not stepped:
                raise RuntimeError(
                    f"{type(pending).__name__}.update({token_id}) made no progress although does_advance({token_id}) "
                    "was True: the constraint is inconsistent")
            if complete:
                self.complete_constraints.append(pending)
            else:
                self.inprogress_constraint = pending
            del self.pending_constraints[index]
            if not self.pending_constraints and self.inprogress_constraint is None:
                self.completed = True
            break  # one token advances one constraint at most
        return complete, stepped

    def copy(self, stateful: bool = True) -> "ConstraintListState":
        twin = ConstraintListState(self.constraints)
        if stateful:
            twin.complete_constraints = [c.copy(stateful=True) for c in self.complete_constraints]
            if self.inprogress_constraint is not None:
                twin.inprogress_constraint = self.inprogress_constraint.copy(stateful=True)
            twin.pending_constraints = [c.copy() for c in self.pending_constraints]
            twin.completed = self.completed
        return twin
