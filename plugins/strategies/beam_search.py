"""Beam search and beam sampling: transformers 5.23's fixed-shape ``_beam_search``, as strategy plugins.

Every prompt keeps ``num_beams`` running hypotheses and ``num_beams`` finished ones in tensors of one
shape for the whole call, so a step is a few batched tensor operations: no Python loop over prompts,
beams or hypotheses, and no host synchronisation. The host reads "is the search over?" once every
``stop_check_interval`` steps; once the search is over the finished hypotheses are frozen on the
device, so steps run past that point change nothing in the output (the cache is cropped back and its
rows are left where they were).

The algorithm, per step (``cur`` tokens so far, ``K = max(2, 1 + n_eos) * num_beams``):

1. ``log_softmax`` of the logits, then the logits processors (so temperature etc. act on log-probs);
2. add each beam's running score and take the top ``K`` over ``num_beams * vocab`` (or draw ``K``
   without replacement from the softmax of those scores, for beam sampling);
3. ask the stopping criteria about each of the ``K`` candidates;
4. the best ``num_beams`` candidates that did not stop keep running;
5. among the best ``num_beams`` candidates, those that stopped are scored
   ``score / generated_length ** length_penalty`` and merged into the finished set (best
   ``num_beams`` kept), unless the prompt can no longer improve;
6. the cache follows the running beams (``reorder_cache``).
"""

from __future__ import annotations

from typing import Any

import torch

from genplug import hookimpl
from genplug.errors import GenerationConfigError, GenerationInputError
from genplug.inputs import as_id_list
from genplug.loop import DEFAULT_STOP_CHECK_INTERVAL, idle_until_all_finished
from genplug.models import ModelAdapter
from genplug.stopping import StoppingCriteriaList

from .beam_outputs import fill_token, refuse_streamer
from .beam_run import BeamModelRun

_NEG = -1.0e9  # transformers' "never pick this" score; kept so scores match it bit for bit


def beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                streamer=None, **model_kwargs):
    """Keep the ``num_beams`` most likely continuations at every step (transformers' ``BEAM_SEARCH``)."""
    refuse_streamer(streamer, "beam search")
    return run_beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config,
                           synced_gpus=synced_gpus, do_sample=False, **model_kwargs)


def beam_sample(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                streamer=None, **model_kwargs):
    """Beam search that draws the candidates instead of taking the best (transformers' ``BEAM_SAMPLE``)."""
    refuse_streamer(streamer, "beam sampling")
    return run_beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config,
                           synced_gpus=synced_gpus, do_sample=True, **model_kwargs)


@hookimpl
def genplug_register_strategies(register):
    register("beam_search", beam_search, requires=frozenset({"reorder"}),
             description="the num_beams best continuations (vectorised, transformers 5.23)")
    register("beam_sample", beam_sample, requires=frozenset({"reorder"}),
             description="beam search drawing its candidates from the distribution")


# ------------------------------------------------------------------------------------------- the loop


@torch.no_grad()
def run_beam_search(model, input_ids: torch.LongTensor, logits_processor, stopping_criteria, generation_config,
                    synced_gpus: bool = False, *, do_sample: bool = False, **model_kwargs: Any):
    """The beam search loop shared by beam search and beam sampling; returns what generate() returns."""
    adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
    config = generation_config
    if config.low_memory:
        raise GenerationConfigError(
            "low_memory=True (sequential beam search) is not supported: like transformers 5 genplug runs every "
            "beam in one batch; unset low_memory, or lower num_beams or use an offloaded cache to save memory"
        )
    num_beams = int(config.num_beams or 1)
    rows, prompt_len = input_ids.shape
    if rows % num_beams:
        raise GenerationInputError(
            f"input_ids has {rows} rows, which is not a multiple of num_beams={num_beams}: beam search expects "
            "every prompt repeated num_beams times (generate() does this)"
        )
    max_length = stopping_criteria.max_length or config.max_length
    device = input_ids.device
    n_eos = len(as_id_list(config.eos_token_id, "eos_token_id") or ())
    search = BeamSearchState(input_ids, num_beams, max(2, 1 + n_eos) * num_beams, max_length, fill_token(config),
                             config.length_penalty, config.early_stopping)

    run = BeamModelRun(adapter, config, logits_processor, model_kwargs, rows, prompt_len, max_length, device)
    recorder, use_cache = run.recorder, run.use_cache

    def forward(start: int, end: int):
        return run.forward(search.running, start, end)

    outputs = forward(0, prompt_len)
    # the one-token forward from a CUDA graph over a static cache on CUDA (the beams reorder the cache in place)
    graphed = run.graphed_forward(search.running, prompt_len, max_length, config, synced_gpus)
    interval = 1 if synced_gpus else int(getattr(config, "stop_check_interval", None) or DEFAULT_STOP_CHECK_INTERVAL)
    if use_cache and not adapter.can_crop(run.cache):
        interval = 1  # steps past the end could not be taken back out of the returned cache
    # max_length ends every candidate in the step itself: only the other criteria are called each step
    step_criteria = stopping_criteria.per_step() if type(stopping_criteria) is StoppingCriteriaList else stopping_criteria
    cur = prompt_len
    over = torch.zeros((), dtype=torch.bool, device=device)  # True once the search has ended
    steps_past_end = torch.zeros((), dtype=torch.long, device=device)
    steps_run = 0
    while True:
        last = outputs.logits[:, -1, :]
        if last.device != device:
            last = last.to(device)
        # transformers takes log_softmax of a float32 copy; asking log_softmax for float32 is the same
        log_probs = torch.log_softmax(last, dim=-1, dtype=torch.float32)
        if len(logits_processor):
            log_probs = logits_processor(search.running[:, :cur], log_probs)
        if recorder.return_dict:
            recorder.record(log_probs, last.to(torch.float32, copy=True) if recorder.want_logits else None, outputs)
        del outputs
        beam_idx = search.step(log_probs, cur, over, step_criteria, recorder.scores_so_far(), do_sample)
        run.reorder(beam_idx)
        steps_past_end += over
        over |= search.ends(cur + 1)
        cur += 1
        steps_run += 1
        if cur >= max_length:
            if synced_gpus:  # the other ranks may still be searching: keep their forwards company
                idle_until_all_finished(
                    lambda: run.inputs.forward(adapter, search.running, 0, cur, None, run.model_kwargs, use_cache=False),
                    lambda: _ended_everywhere(torch.ones_like(over), True))
            break
        if steps_run % interval == 0 and _ended_everywhere(over, synced_gpus):
            break
        outputs = graphed.forward(search.running[:, cur - 1:cur]) if graphed is not None else forward(cur - 1, cur)

    steps = steps_run - int(steps_past_end)
    if graphed is not None:
        graphed.crop(steps)  # the graph writes the cache without moving its counters
    elif use_cache and steps_run > steps:
        run.cache.crop(steps - steps_run)  # negative: remove that many (the form every cache takes)
    sequences, scores, beam_indices = search.best(int(config.num_return_sequences or 1))
    if not recorder.return_dict:
        return sequences
    return recorder.output(sequences, scores, beam_indices, steps, run.returned_cache, model_kwargs)


def _ended_everywhere(over: torch.Tensor, synced_gpus: bool) -> bool:
    if synced_gpus:  # every rank keeps stepping until all are done (FSDP / ZeRO-3 need the forwards)
        import torch.distributed as dist

        ended = over.to(torch.float32)
        dist.all_reduce(ended, op=dist.ReduceOp.MIN)
        return ended.item() == 1.0
    return bool(over)


# ------------------------------------------------------------------------------------------- the state


class BeamSearchState:
    """The running and finished hypotheses of every prompt, as fixed-shape tensors.

    ``B`` prompts, ``N`` beams, ``K`` candidates per step, ``L`` max length, ``P`` prompt length,
    ``G = L - P`` generated slots. A hypothesis is one row of ``W = L + G`` ids: its tokens (unused
    positions hold the fill token), then for every generated token the flattened beam row
    (``b * N + beam``) it came from (-1 where nothing was generated). Keeping both in one row halves
    the gathers per step; rows are flattened prompt-major, ``b * N + beam``.

    * ``running`` / ``finished`` (B * N, W) -- hypotheses;
    * ``running_scores`` (B, N) -- summed log-probs; ``finished_scores`` (B, N) -- length-normalised,
      best first;
    * ``is_finished`` (B, N) -- which finished slots hold a real hypothesis;
    * ``stuck`` (B, 1) -- no running beam can beat the worst finished one any more (sticky).
    """

    def __init__(self, input_ids: torch.LongTensor, num_beams: int, beams_to_keep: int, max_length: int,
                 fill: int, length_penalty: float, early_stopping):
        rows, prompt_len = input_ids.shape
        batch = rows // num_beams
        device = input_ids.device
        self.batch, self.num_beams, self.beams_to_keep = batch, num_beams, beams_to_keep
        self.prompt_len, self.max_length = prompt_len, max_length
        self.length_penalty, self.early_stopping = length_penalty, early_stopping
        self.width = 2 * max_length - prompt_len

        self.running = input_ids.new_full((rows, self.width), -1)
        self.running[:, :max_length] = fill
        self.running[:, :prompt_len] = input_ids
        self.finished = self.running.clone()
        # Only beam 0 starts alive, so the first step does not pick the same token once per beam.
        self.running_scores = torch.zeros((batch, num_beams), dtype=torch.float32, device=device)
        self.running_scores[:, 1:] = _NEG
        self.finished_scores = torch.full((batch, num_beams), _NEG, dtype=torch.float32, device=device)
        self.is_finished = torch.zeros((batch, num_beams), dtype=torch.bool, device=device)
        self.stuck = torch.zeros((batch, 1), dtype=torch.bool, device=device)
        self.top_beams = torch.arange(beams_to_keep, device=device) < num_beams
        # Index tables from per-prompt positions to flattened rows.
        prompts = torch.arange(batch, device=device).view(-1, 1)
        self.running_rows = prompts * num_beams  # + beam -> row of `running`
        self.candidate_rows = prompts * beams_to_keep  # + candidate -> row of this step's candidates
        # slot j of the merged "finished + candidates" list -> row of cat((finished, candidates))
        slots = torch.arange(num_beams + beams_to_keep, device=device)
        self.pool_rows = torch.where(slots < num_beams, prompts * num_beams + slots,
                                     rows + prompts * beams_to_keep + slots - num_beams)
        self.unchanged = torch.arange(num_beams, device=device).expand(batch, -1)  # "keep the finished set"
        self.identity = torch.arange(rows, device=device)
        self._no_hits = torch.zeros((batch, beams_to_keep), dtype=torch.bool, device=device)  # no criteria to call
        self._hits = None

    def step(self, log_probs: torch.Tensor, cur: int, over: torch.Tensor, stopping_criteria, scores_so_far,
             do_sample: bool) -> torch.Tensor:
        """Advance every beam by one token; returns the cache row each new row comes from.

        ``over`` (0-d bool) is True once the search has ended: the finished set then stays as it is
        and the cache rows stay where they are.
        """
        B, N, K, L = self.batch, self.num_beams, self.beams_to_keep, self.max_length
        vocab = log_probs.shape[-1]
        scores = (log_probs.view(B, N, vocab) + self.running_scores.unsqueeze(-1)).view(B, N * vocab)
        if do_sample:
            flat = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=K)
            # Ranked best first, as top-k ranks them: only the best N candidates may finish a hypothesis
            # (`top_beams`), not the first N drawn (transformers >= 5.25, and 4.x, rank them so too).
            top, order = scores.gather(1, flat).sort(dim=-1, descending=True)
            flat = flat.gather(1, order)
        else:
            top, flat = torch.topk(scores, K)
        source = flat // vocab
        source_rows = (source + self.running_rows).view(-1)
        candidates = self.running.index_select(0, source_rows)  # (B * K, W)
        candidates[:, cur] = (flat % vocab).view(-1)
        candidates[:, L + cur - self.prompt_len] = source_rows

        if cur + 1 >= L:  # max_length ends every candidate even without a max-length criterion
            hits = torch.ones_like(self._no_hits)
        elif stopping_criteria:
            hits = stopping_criteria(candidates[:, :cur + 1], scores_so_far).view(B, K)
        else:
            hits = self._no_hits
        self._hits = hits

        # Running: the best N candidates that did not stop.
        alive = torch.add(top, hits, alpha=_NEG)
        keep = torch.topk(alive, N)[1]
        self.running = candidates.index_select(0, (keep + self.candidate_rows).view(-1))
        self.running_scores = alive.gather(1, keep)

        # Finished: the stopped candidates among the best N, if they can still make the finished set.
        just_finished = hits & self.top_beams
        normalised = top / ((cur + 1 - self.prompt_len) ** self.length_penalty)
        if self.early_stopping is True:
            normalised = torch.add(normalised, self.is_finished.all(-1, keepdim=True), alpha=_NEG)
        normalised = torch.add(normalised, self.stuck, alpha=_NEG)
        normalised = torch.add(normalised, ~just_finished, alpha=_NEG)
        merged_scores = torch.cat((self.finished_scores, normalised), dim=1)
        best = torch.where(over, self.unchanged, torch.topk(merged_scores, N)[1])
        pool = torch.cat((self.finished, candidates))
        self.finished = pool.index_select(0, self.pool_rows.gather(1, best).view(-1))
        self.finished_scores = merged_scores.gather(1, best)
        self.is_finished = torch.cat((self.is_finished, just_finished), dim=1).gather(1, best)
        return torch.where(over, self.identity, self.running[:, L + cur - self.prompt_len])

    def ends(self, cur: int) -> torch.Tensor:
        """Whether the search ends after a step that brought the length to ``cur`` (0-d, on device).

        It ends when no prompt can improve its finished set, or (``early_stopping=True``) every prompt
        has ``num_beams`` finished hypotheses, or every candidate of the step hit a stopping criterion.
        """
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            best_length = self.max_length - self.prompt_len  # longer can only score better
        else:
            best_length = cur - self.prompt_len
        best_possible = self.running_scores[:, :1] / (best_length ** self.length_penalty)
        # finished_scores is sorted best first (it comes out of a sorted top-k): the last is the worst
        worst_finished = torch.where(self.is_finished, self.finished_scores[:, -1:], _NEG)
        self.stuck |= (best_possible <= worst_finished).all(-1, keepdim=True)
        ended = self.stuck.all()
        if self._hits is not self._no_hits:  # (no criterion hit anything)
            ended = ended | self._hits.all()
        if self.early_stopping is True:
            ended |= self.is_finished.all()
        return ended

    def best(self, count: int):
        """The ``count`` best finished hypotheses per prompt, flattened: sequences cut to the longest
        one, their scores, and their beam indices (one host read, for the length)."""
        B, N = self.batch, self.num_beams
        finished = self.finished.view(B, N, self.width)[:, :count].reshape(B * count, self.width)
        scores = self.finished_scores[:, :count].reshape(-1)
        beam_indices = finished[:, self.max_length:]
        generated = int((beam_indices >= 0).sum(1).max())
        return (finished[:, :self.prompt_len + generated].contiguous(), scores,
                beam_indices[:, :generated].contiguous())
