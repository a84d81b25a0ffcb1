"""Constrained beam search: transformers 4.56's ``_constrained_beam_search`` (Hokamp & Liu's grid beam
search as "disjunctive positive constraint decoding"), as a strategy plugin.

The output must contain every constraint (``constraints`` objects, or ``force_words_ids``: token-id
lists, or lists of alternatives for a :class:`DisjunctiveConstraint`). Each step:

1. log-probs -> logits processors -> plus the running beam scores; the top ``K = max(2, 1 + n_eos)
   * num_beams`` continuations over ``num_beams * vocab``;
2. among the best ``num_beams``, those ending with EOS whose hypothesis meets every constraint join
   the finished list; the best ``num_beams`` not ending with EOS are this step's picks;
3. every running beam also proposes the tokens that advance its constraints; picks and proposals are
   ranked by "bank" (constraint progress) then score, and taken round-robin across banks, so beams at
   every progress level survive.

Where the cost is: the constraint state of a hypothesis is a small Python object
(:class:`ConstraintListState`), so step 3 is Python per prompt and per beam -- O(batch * num_beams *
(K + advancing tokens)) small operations and a couple of host reads per step. 4.56 re-ran every state
from the first token at every step (O(length) more); here each row's state is carried along and stepped
by its new token, which gives the same states. Everything else (model, processors, top-k, finished
list) is batched tensor code.

Differences from 4.56, on purpose: ``scores`` are the per-step processed log-probs as in every other
beam mode (4.56 returned them with the running beam score added, which ``compute_transition_scores``
cannot use); ``beam_indices`` are always kept (4.56 lost them for a returned hypothesis that did not
meet the constraints, and then failed with ``output_scores=True``); a finished hypothesis keeps the EOS
token it generated; a done prompt's rows stay in place; the constraint classes' copy bug is fixed (see
:mod:`.constraints`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch

from genplug import hookimpl
from genplug.errors import GenerationConfigError, GenerationInputError
from genplug.inputs import as_id_list
from genplug.models import ModelAdapter

from .beam_hypotheses import FinishedHypotheses, best_hypotheses
from .beam_outputs import fill_token, refuse_streamer
from .beam_run import BeamModelRun, stopped_everywhere
from .constraints import Constraint, ConstraintListState, DisjunctiveConstraint, PhrasalConstraint


def constrained_beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config,
                            synced_gpus=False, streamer=None, **model_kwargs):
    """Beam search whose output must contain every constraint (transformers 4.56's ``CONSTRAINED_BEAM_SEARCH``)."""
    refuse_streamer(streamer, "constrained beam search")
    return run_constrained_beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config,
                                       synced_gpus=synced_gpus, **model_kwargs)


@hookimpl
def genplug_register_strategies(register):
    register("constrained_beam_search", constrained_beam_search, requires=frozenset({"reorder"}),
             description="beam search forced to include constraints / force_words_ids (transformers 4.56)")


# ------------------------------------------------------------------------------------ the constraints


def constraints_from_config(config, vocab_size) -> List[Constraint]:
    """``constraints`` then one constraint per ``force_words_ids`` entry, checked against the vocabulary."""
    found: List[Constraint] = []
    if config.constraints is not None:
        if not isinstance(config.constraints, (list, tuple)) or not config.constraints:
            raise GenerationConfigError(
                f"constraints={config.constraints!r} must be a non-empty list of Constraint objects "
                "(PhrasalConstraint, DisjunctiveConstraint); unset it to search without constraints"
            )
        for constraint in config.constraints:
            if not isinstance(constraint, Constraint) and not _looks_like_constraint(constraint):
                raise GenerationConfigError(
                    f"constraints holds {constraint!r}, which is not a Constraint: use "
                    "genplug.PhrasalConstraint([ids...]) or genplug.DisjunctiveConstraint([[ids...], ...])"
                )
            found.append(constraint)
    words = config.force_words_ids
    if words is not None:
        if not isinstance(words, (list, tuple)) or not words:
            raise GenerationConfigError(
                f"force_words_ids={words!r} must be a non-empty list of token-id lists (or of lists of alternatives)"
            )
        for word in words:
            try:
                if isinstance(word, (list, tuple)) and word and isinstance(word[0], (list, tuple)):
                    found.append(DisjunctiveConstraint([list(option) for option in word]))
                else:
                    found.append(PhrasalConstraint(list(word) if isinstance(word, (list, tuple)) else word))
            except GenerationConfigError as error:
                raise GenerationConfigError(f"force_words_ids entry {word!r}: {error}") from None
    if vocab_size is not None:
        for constraint in found:
            for token in _constraint_tokens(constraint):
                if not 0 <= token < vocab_size:
                    field = "force_words_ids" if constraint not in (config.constraints or ()) else "constraints"
                    raise GenerationConfigError(
                        f"{field} asks for token id {token}, outside the model's vocabulary [0, {vocab_size}): the "
                        "model can never generate it; check that the ids come from this model's tokenizer"
                    )
    return found


def _looks_like_constraint(value) -> bool:
    return all(callable(getattr(value, name, None)) for name in ("advance", "does_advance", "update", "copy"))


def _constraint_tokens(constraint) -> List[int]:
    ids = getattr(constraint, "token_ids", None)
    if ids is None:
        return []
    flat: List[int] = []
    for item in ids:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return [t for t in flat if isinstance(t, int)]


# ------------------------------------------------------------------------------------------- the loop


@torch.no_grad()
def run_constrained_beam_search(model, input_ids: torch.LongTensor, logits_processor, stopping_criteria,
                                generation_config, synced_gpus: bool = False, **model_kwargs: Any):
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    config = generation_config
    constraints = constraints_from_config(config, adapter.vocab_size)
    num_beams = int(config.num_beams or 1)
    if num_beams < 2:
        raise GenerationConfigError(
            f"num_beams={num_beams}: constrained beam search (constraints / force_words_ids) needs num_beams >= 2 "
            "to keep beams at several constraint-progress levels; set e.g. num_beams=4"
        )
    if config.do_sample is True:
        raise GenerationConfigError(
            "do_sample=True cannot be combined with constraints / force_words_ids: constrained beam search is "
            "deterministic; set do_sample=False or remove the constraints")
    if config.num_beam_groups is not None and config.num_beam_groups != 1:
        raise GenerationConfigError(
            f"num_beam_groups={config.num_beam_groups} cannot be combined with constraints / force_words_ids; "
            "set num_beam_groups=1 or remove the constraints")
    rows, prompt_len = input_ids.shape
    if rows % num_beams:
        raise GenerationInputError(
            f"input_ids has {rows} rows, which is not a multiple of num_beams={num_beams}: beam search expects "
            "every prompt repeated num_beams times (generate() does this)"
        )
    device = input_ids.device
    max_length = stopping_criteria.max_length or config.max_length
    eos_ids = as_id_list(config.eos_token_id, "eos_token_id") or []
    pad = fill_token(config)
    search = _ConstrainedSearch(input_ids, num_beams, max(2, 1 + len(eos_ids)) * num_beams, max_length, pad,
                                eos_ids, constraints, config)

    run = BeamModelRun(adapter, config, logits_processor, model_kwargs, rows, prompt_len, max_length, device)
    recorder = run.recorder

    def forward(start: int, end: int):
        return run.forward(search.tokens, start, end)

    outputs = forward(0, prompt_len)
    graphed = run.graphed_forward(search.tokens, prompt_len, max_length, config, synced_gpus)  # (a static cache on CUDA)
    cur = prompt_len
    steps = 0
    stopped_here = False  # with synced_gpus a finished rank keeps running forwards for the others
    while True:
        if not stopped_here:
            logits = outputs.logits[:, -1, :].to(dtype=torch.float32, device=device, copy=True)
            processed = logits_processor(search.tokens[:, :cur], torch.log_softmax(logits, dim=-1))
            recorder.record(processed, logits, outputs)
            source_rows = search.step(processed, cur)
            run.reorder(source_rows)
            cur += 1
            steps += 1
            stopped_here = cur >= max_length or all(search.done) or bool(
                stopping_criteria(search.tokens[:, :cur], recorder.scores_so_far()).all())
        del outputs
        if (stopped_everywhere(stopped_here, device) if synced_gpus else stopped_here):
            break
        outputs = graphed.forward(search.tokens[:, cur - 1:cur]) if graphed is not None else forward(cur - 1, cur)
    if graphed is not None:
        graphed.crop(steps)  # the graph writes the cache without moving its counters

    search.finish(cur, int(config.num_return_sequences or 1))
    sequences, scores, beam_indices = best_hypotheses([search.finished], int(config.num_return_sequences or 1))
    if not recorder.return_dict:
        return sequences
    return recorder.output(sequences, scores, beam_indices, steps, run.returned_cache, model_kwargs)


class _ConstrainedSearch:
    """Running beams (tensors on the device) plus one constraint state per row (Python objects).

    ``content[r]`` names row ``r``'s token sequence: two rows have the same id exactly when they hold
    the same tokens, which is how proposals that duplicate a pick are recognised without comparing
    whole sequences.
    """

    def __init__(self, input_ids, num_beams, beams_to_keep, max_length, pad, eos_ids, constraints, config):
        rows, prompt_len = input_ids.shape
        device = input_ids.device
        self.batch, self.num_beams, self.beams_to_keep = rows // num_beams, num_beams, beams_to_keep
        self.prompt_len, self.max_length, self.pad = prompt_len, max_length, pad
        self.eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
        self.tokens = input_ids.new_full((rows, max_length), pad)
        self.tokens[:, :prompt_len] = input_ids
        self.history = torch.full((rows, max_length - prompt_len), -1, dtype=torch.long, device=device)
        self.beam_scores = torch.zeros((self.batch, num_beams), dtype=torch.float32, device=device)
        self.beam_scores[:, 1:] = -1e9
        self.beam_scores = self.beam_scores.view(-1)
        self.finished = FinishedHypotheses(self.batch, num_beams, max_length, prompt_len, config.length_penalty,
                                           config.early_stopping, pad, device)
        self.done = [False] * self.batch
        self._interned: Dict[Any, int] = {}
        prompts = input_ids.tolist()
        self.content = [self._intern(("prompt", tuple(p))) for p in prompts]
        self.states = []
        for prompt in prompts:
            state = ConstraintListState([c.copy() for c in constraints])
            state.reset(prompt)
            self.states.append(state)

    def _intern(self, key) -> int:
        return self._interned.setdefault(key, len(self._interned))

    def step(self, processed: torch.Tensor, cur: int) -> torch.Tensor:
        """Choose every row's next token; returns the row each new row comes from."""
        B, N, K = self.batch, self.num_beams, self.beams_to_keep
        vocab = processed.shape[-1]
        device = processed.device
        totals = processed + self.beam_scores[:, None]
        top, flat = torch.topk(totals.view(B, N * vocab), K, dim=1, largest=True, sorted=True)
        from_rows = flat // vocab + torch.arange(B, device=device)[:, None] * N
        next_tokens = flat % vocab
        ends = torch.isin(next_tokens, self.eos)

        # Proposals: every running row's constraint-advancing tokens, scored in one gather.
        proposals = [(r, t) for r in range(B * N) if not self.done[r // N] and not self.states[r].completed
                     for t in (self.states[r].advance() or ())]
        proposal_scores = (totals[[r for r, _ in proposals], [t for _, t in proposals]] if proposals
                           else totals.new_zeros(0))

        # Finished: EOS among the best N, on a hypothesis meeting every constraint.
        completed = torch.tensor([s.completed for s in self.states], dtype=torch.bool, device=device)
        best_rows = from_rows[:, :N]
        ended = self.tokens[best_rows]
        ended[:, :, cur] = next_tokens[:, :N]
        ended_beams = self.history[best_rows]
        ended_beams[:, :, cur - self.prompt_len] = best_rows
        not_done = ~torch.tensor(self.done, dtype=torch.bool, device=device)
        self.finished.add(ended, cur + 1, top[:, :N], ended_beams,
                          ends[:, :N] & completed[best_rows] & not_done[:, None])
        now_done = self.finished.is_done(top[:, 0], cur + 1)

        # Host side: picks, proposals, banks (one transfer down, one up).
        top_h, rows_h, tokens_h, ends_h = top.cpu(), from_rows.tolist(), next_tokens.tolist(), ends.tolist()
        proposal_scores_h = proposal_scores.cpu()
        by_row: Dict[int, List[int]] = {}
        for index, (r, _) in enumerate(proposals):
            by_row.setdefault(r, []).append(index)
        chosen_rows: List[int] = []
        chosen_tokens: List[int] = []
        chosen_scores: List[torch.Tensor] = []
        new_states: List[ConstraintListState] = []
        for b in range(B):
            if self.done[b]:  # a done prompt idles: its rows stay put, scored 0, fed pad
                span = range(b * N, (b + 1) * N)
                chosen_rows.extend(span)
                chosen_tokens.extend([self.pad] * N)
                chosen_scores.append(torch.zeros(N, dtype=torch.float32))
                new_states.extend(self.states[r] for r in span)
                continue
            picks = [k for k in range(K) if not ends_h[b][k]][:N]
            rows_b, tokens_b, scores_b, states_b = self._rank_with_proposals(
                b, [rows_h[b][k] for k in picks], [tokens_h[b][k] for k in picks], top_h[b, picks],
                by_row, proposals, proposal_scores_h)
            chosen_rows.extend(rows_b)
            chosen_tokens.extend(tokens_b)
            chosen_scores.append(scores_b)
            new_states.extend(states_b)
        self.done = [d or bool(n) for d, n in zip(self.done, now_done.tolist())]

        source = torch.tensor(chosen_rows, dtype=torch.long, device=device)
        picked = torch.tensor(chosen_tokens, dtype=torch.long, device=device)
        self.beam_scores = torch.cat(chosen_scores).to(device)
        self.tokens = self.tokens[source]
        self.tokens[:, cur] = picked
        self.history = self.history[source]
        self.history[:, cur - self.prompt_len] = source
        self.content = [self._intern((self.content[r], t)) for r, t in zip(chosen_rows, chosen_tokens)]
        self.states = new_states
        return source

    def _rank_with_proposals(self, b, rows, tokens, scores, by_row, proposals, proposal_scores
                             ) -> Tuple[List[int], List[int], torch.Tensor, List[ConstraintListState]]:
        """Merge prompt ``b``'s N picks with its rows' proposals; keep N, round-robin over banks."""
        N = self.num_beams
        states = []
        for r, t in zip(rows, tokens):
            state = self.states[r].copy(stateful=True)
            state.add(t)
            states.append(state)
        seen = {(self.content[r], t) for r, t in zip(rows, tokens)}
        extra = []
        for r in range(b * N, (b + 1) * N):
            for index in by_row.get(r, ()):
                t = proposals[index][1]
                if (self.content[r], t) in seen:
                    continue
                seen.add((self.content[r], t))
                state = self.states[r].copy(stateful=True)
                state.add(t)
                extra.append((r, t, index, state))
        if not extra:
            return rows, tokens, scores, states
        all_rows = rows + [r for r, _, _, _ in extra]
        all_tokens = tokens + [t for _, t, _, _ in extra]
        all_scores = torch.cat((scores, proposal_scores[[i for _, _, i, _ in extra]]))
        all_states = states + [s for _, _, _, s in extra]
        banks = torch.tensor([s.get_bank() for s in all_states])
        order = (banks * 100 + all_scores).sort(descending=True).indices  # bank first, then score
        sorted_banks = banks[order].tolist()
        turn, counter, previous = [], -1, sorted_banks[0]
        for bank in sorted_banks:  # position of each entry within its bank
            counter = counter + 1 if bank == previous else 0
            previous = bank
            turn.append(counter)
        order = order[torch.sort(torch.tensor(turn), stable=True).indices][:N].tolist()
        return ([all_rows[i] for i in order], [all_tokens[i] for i in order], all_scores[order],
                [all_states[i] for i in order])

    def finish(self, cur: int, num_return_sequences: int) -> None:
        """Offer the running beams of prompts still searching: those meeting the constraints first, and
        the others too when fewer than ``num_return_sequences`` do (as 4.56)."""
        B, N = self.batch, self.num_beams
        device = self.tokens.device
        rows = torch.arange(B * N, device=device).view(B, N)
        completed = torch.tensor([s.completed for s in self.states], dtype=torch.bool, device=device).view(B, N)
        searching = ~torch.tensor(self.done, dtype=torch.bool, device=device)[:, None]
        tokens, scores, beams = self.tokens[rows], self.beam_scores.view(B, N), self.history[rows]
        self.finished.add(tokens, cur, scores, beams, completed & searching)
        too_few = completed.sum(1, keepdim=True) < num_return_sequences
        self.finished.add(tokens, cur, scores, beams, ~completed & searching & too_few)
