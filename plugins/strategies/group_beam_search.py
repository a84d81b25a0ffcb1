"""Diverse (group) beam search: transformers 4.56's ``_group_beam_search``, as a strategy plugin, plus
its ``HammingDiversityLogitsProcessor`` (Vijayakumar et al., 2016, https://arxiv.org/abs/1610.02424).

The ``num_beams`` beams of a prompt are split into ``num_beam_groups`` groups that search one after
the other within a step; a group is penalised (``diversity_penalty`` per occurrence) for picking a
token an earlier group picked at the same step. transformers 5 moved this mode to a Hub repository;
genplug keeps it as a plugin and reproduces 4.56's output.

Per step the model runs once for every beam; then, group by group (a loop over the few groups,
never over prompts or beams):

1. the logits processors run on the log-probs, the Hamming one penalising the tokens earlier groups
   just chose (the processors see every row, and only the group's rows are used: a processor sized
   to the batch, like a per-row repetition penalty, works unchanged);
2. the top ``K = max(2, 1 + n_eos) * group_size`` continuations of the group's beams are taken;
3. among the best ``group_size`` of them, those ending with EOS join the group's finished list;
4. the best ``group_size`` that do not end with EOS keep running.

A prompt's group is done once its finished list is full and cannot improve (``early_stopping``);
the search ends when every group of every prompt is done or every row hits a stopping criterion.
That needs one host read per step.

Differences from 4.56, on purpose: ``beam_indices`` hold the flattened beam row each token came from
(4.56 stored group-relative indices, which ``compute_transition_scores`` cannot use); a finished
hypothesis keeps the EOS token it generated (4.56 wrote ``eos_token_id[0]``); a done group's rows stay
in place instead of being overwritten with the first prompt's beam (which changed only the per-step
``scores`` of finished prompts).
"""

from __future__ import annotations

from typing import Any

import torch

from genplug import hookimpl
from genplug.errors import GenerationConfigError, GenerationInputError
from genplug.inputs import as_id_list
from genplug.models import ModelAdapter
from genplug.processing import LogitsProcessor

from .beam_hypotheses import FinishedHypotheses, best_hypotheses, rows_of_groups
from .beam_outputs import fill_token, refuse_streamer
from .beam_run import BeamModelRun, stopped_everywhere


class HammingDiversityLogitsProcessor(LogitsProcessor):
    """Subtract ``diversity_penalty`` times the number of earlier groups' beams (of the same prompt)
    that chose each token at this step.

    Called by group beam search with ``current_tokens`` (every row's token of this step; rows of later
    groups are not read) and ``beam_group_idx``. ``scores`` may hold every row (genplug) or only the
    group's rows, ``batch * group_size`` of them (transformers 4.56); both are handled.
    """

    def __init__(self, diversity_penalty: float, num_beams: int, num_beam_groups: int):
        if isinstance(diversity_penalty, bool) or not isinstance(diversity_penalty, float) or not diversity_penalty > 0.0:
            raise GenerationConfigError(
                f"diversity_penalty={diversity_penalty!r} must be a float > 0: it is subtracted from a token's score "
                "once per earlier beam group that chose it; use e.g. 0.5"
            )
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 2:
            raise GenerationConfigError(f"num_beams={num_beams!r} must be an int >= 2 for diverse beam search")
        if (isinstance(num_beam_groups, bool) or not isinstance(num_beam_groups, int) or num_beam_groups < 2
                or num_beam_groups > num_beams):
            raise GenerationConfigError(
                f"num_beam_groups={num_beam_groups!r} must be an int in [2, num_beams={num_beams}]: the beams are "
                "split into that many groups"
            )
        self.diversity_penalty = diversity_penalty
        self.num_beams = num_beams
        self.num_beam_groups = num_beam_groups
        self.group_size = num_beams // num_beam_groups

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, current_tokens: torch.LongTensor,
                 beam_group_idx: int) -> torch.FloatTensor:
        start = beam_group_idx * self.group_size
        if start == 0:
            return scores
        batch = current_tokens.shape[0] // self.num_beams
        vocab = scores.shape[-1]
        earlier = current_tokens.view(batch, self.num_beams)[:, :start]
        counts = torch.zeros((batch, vocab), dtype=torch.long, device=scores.device)
        counts.scatter_add_(1, earlier.to(scores.device), torch.ones_like(earlier, device=scores.device))
        penalty = (self.diversity_penalty * counts).to(scores.dtype)  # (batch, vocab)
        if scores.shape[0] == current_tokens.shape[0]:  # every row: penalise only this group's rows
            out = scores.view(batch, self.num_beams, vocab).clone()
            out[:, start:start + self.group_size] -= penalty[:, None, :]
            return out.view_as(scores)
        return (scores.view(batch, -1, vocab) - penalty[:, None, :]).view_as(scores)


def build_hamming_diversity(config, context):
    if context.strategy != "group_beam_search" or not config.diversity_penalty:
        return None
    return HammingDiversityLogitsProcessor(float(config.diversity_penalty), int(config.num_beams),
                                           int(config.num_beam_groups))


def group_beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                      streamer=None, **model_kwargs):
    """Diverse beam search (transformers 4.56's ``GROUP_BEAM_SEARCH``); returns what generate() returns."""
    refuse_streamer(streamer, "group beam search")
    return run_group_beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config,
                                 synced_gpus=synced_gpus, **model_kwargs)


@hookimpl
def genplug_register_strategies(register):
    register("group_beam_search", group_beam_search, requires=frozenset({"reorder"}),
             description="diverse beam search: beam groups penalised for repeating each other (transformers 4.56)")


@hookimpl
def genplug_register_logits_processors(register):
    register("hamming_diversity", build_hamming_diversity, stage="bias", after=("sequence_bias",),
             fields=("diversity_penalty", "num_beam_groups", "num_beams"),
             description="group beam search: penalise tokens earlier beam groups chose at this step")


# ------------------------------------------------------------------------------------------- the loop


@torch.no_grad()
def run_group_beam_search(model, input_ids: torch.LongTensor, logits_processor, stopping_criteria,
                          generation_config, synced_gpus: bool = False, **model_kwargs: Any):
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    config = generation_config
    num_beams = int(config.num_beams or 1)
    num_groups = int(config.num_beam_groups or 1)
    if num_beams < 2 or num_groups < 2 or num_beams % num_groups:
        raise GenerationConfigError(
            f"group beam search needs num_beams >= 2 split into num_beam_groups >= 2 equal groups; got "
            f"num_beams={num_beams}, num_beam_groups={num_groups}"
        )
    rows, prompt_len = input_ids.shape
    if rows % num_beams:
        raise GenerationInputError(
            f"input_ids has {rows} rows, which is not a multiple of num_beams={num_beams}: beam search expects "
            "every prompt repeated num_beams times (generate() does this)"
        )
    batch, group_size = rows // num_beams, num_beams // num_groups
    device = input_ids.device
    max_length = stopping_criteria.max_length or config.max_length
    eos_ids = as_id_list(config.eos_token_id, "eos_token_id") or []
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    pad = fill_token(config)
    per_group = max(2, 1 + len(eos_ids)) * group_size
    groups = rows_of_groups(batch, num_beams, group_size, device)
    finished = [FinishedHypotheses(batch, group_size, max_length, prompt_len, config.length_penalty,
                                   config.early_stopping, pad, device) for _ in groups]
    done = torch.zeros((batch, num_groups), dtype=torch.bool, device=device)

    tokens = input_ids.new_full((rows, max_length), pad)
    tokens[:, :prompt_len] = input_ids
    history = torch.full((rows, max_length - prompt_len), -1, dtype=torch.long, device=device)
    beam_scores = torch.full((batch, num_beams), -1e9, dtype=torch.float32, device=device)
    beam_scores[:, ::group_size] = 0  # one live beam per group to start with
    beam_scores = beam_scores.view(-1)

    run = BeamModelRun(adapter, config, logits_processor, model_kwargs, rows, prompt_len, max_length, device)
    recorder = run.recorder

    def forward(start: int, end: int):
        return run.forward(tokens, start, end)

    outputs = forward(0, prompt_len)
    graphed = run.graphed_forward(tokens, prompt_len, max_length, config, synced_gpus)  # (a static cache on CUDA)
    cur = prompt_len
    steps = 0
    stopped_here = False  # with synced_gpus a finished rank keeps running forwards for the others
    while True:
        if not stopped_here:
            logits = outputs.logits[:, -1, :].to(dtype=torch.float32, device=device, copy=True)
            source_rows, processed_all = _step(tokens, history, beam_scores, done, finished, groups, cur,
                                               torch.log_softmax(logits, dim=-1), logits_processor, eos, pad,
                                               per_group, prompt_len, recorder.want_scores)
            recorder.record(processed_all, logits, outputs)
            run.reorder(source_rows)
            cur += 1
            steps += 1
            stopped_here = cur >= max_length or bool(
                done.all() | stopping_criteria(tokens[:, :cur], recorder.scores_so_far()).all())
        del outputs
        if (stopped_everywhere(stopped_here, device) if synced_gpus else stopped_here):
            break
        outputs = graphed.forward(tokens[:, cur - 1:cur]) if graphed is not None else forward(cur - 1, cur)
    if graphed is not None:
        graphed.crop(steps)  # the graph writes the cache without moving its counters

    # Groups still searching offer their running beams as they stand.
    for g, group_rows in enumerate(groups):
        finished[g].add(tokens[group_rows], cur, beam_scores[group_rows], history[group_rows],
                        ~done[:, g, None].expand(-1, group_size))
    sequences, scores, beam_indices = best_hypotheses(finished, int(config.num_return_sequences or 1))
    if not recorder.return_dict:
        return sequences
    return recorder.output(sequences, scores, beam_indices, steps, run.returned_cache, model_kwargs)



def _step(tokens, history, beam_scores, done, finished, groups, cur, log_probs, logits_processor, eos, pad,
          per_group, prompt_len, want_scores):
    """One step of every group, in place; returns the cache row each row now comes from and, when
    asked for, the processed log-probs of every row."""
    rows = tokens.shape[0]
    batch, group_size = groups[0].shape
    processed_all = torch.zeros_like(log_probs) if want_scores else None
    current = torch.zeros(rows, dtype=torch.long, device=tokens.device)  # this step's token of every row
    source_rows = torch.empty(rows, dtype=torch.long, device=tokens.device)
    for g, group_rows in enumerate(groups):
        flat_rows = group_rows.view(-1)
        processed = logits_processor(tokens[:, :cur], log_probs, current_tokens=current, beam_group_idx=g)[flat_rows]
        if processed_all is not None:
            processed_all[flat_rows] = processed
        vocab = processed.shape[-1]
        candidates = (processed + beam_scores[flat_rows, None]).view(batch, group_size * vocab)
        top, flat = torch.topk(candidates, per_group, dim=1)
        from_rows = group_rows.gather(1, flat // vocab)  # (batch, per_group) global source rows
        next_tokens = flat % vocab
        ends = torch.isin(next_tokens, eos)

        # The best group_size candidates that end with EOS are finished hypotheses.
        best_rows = from_rows[:, :group_size]
        ended = tokens[best_rows]
        ended[:, :, cur] = next_tokens[:, :group_size]
        ended_beams = history[best_rows]
        ended_beams[:, :, cur - prompt_len] = best_rows
        finished[g].add(ended, cur + 1, top[:, :group_size], ended_beams, ends[:, :group_size] & ~done[:, g, None])

        # The best group_size that do not end with EOS keep running; a done group idles on pad.
        keep = torch.sort(ends.to(torch.int8), dim=1, stable=True)[1][:, :group_size]
        idle = done[:, g, None]
        chosen_rows = torch.where(idle, group_rows, from_rows.gather(1, keep)).view(-1)
        chosen_tokens = torch.where(idle, pad, next_tokens.gather(1, keep)).view(-1)
        beam_scores[flat_rows] = torch.where(idle, 0.0, top.gather(1, keep)).view(-1)
        current[flat_rows] = chosen_tokens
        source_rows[flat_rows] = chosen_rows
        done[:, g] |= finished[g].is_done(top[:, 0], cur + 1)
    # Rows move only once every group has chosen, so every processor call of this step saw the same rows.
    tokens[:] = tokens[source_rows]
    tokens[:, cur] = current
    history[:] = history[source_rows]
    history[:, cur - prompt_len] = source_rows
    return source_rows, processed_all
