"""Where assisted decoding's candidate tokens come from: the prompt itself (prompt lookup) or a smaller
draft model (including the target's own first layers: early exit).

A generator proposes up to ``k`` tokens per row that the target model then checks in one forward
(:mod:`.assisted`); it hears back how many were accepted so it can drop what it computed past them.

The protocol (what a plugin's generator implements, see docs/strategies.md):

* ``candidates(tokens [batch, length])`` -> ``(ids [batch, k], draft_scores [batch, k, vocab] or None)``,
  or a third item ``lengths [batch]`` when rows propose fewer than ``k`` tokens (the rest is filler);
* ``accepted(length)``: the sequence now has ``length`` tokens (every row), the last one new to the generator;
* ``update(n_matches, n_candidates)``: how the round went (for schedules);
* optionally ``verified(matches [batch], running [batch])``: per row, how many of its candidates the
  target accepted (its own count, before the batch keeps the least any row matched) and whether the row
  was still generating -- the draft model tunes its confidence threshold from it.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import attrs
import torch

from genplug.errors import GenerationInputError
from genplug.models import ModelAdapter, returned_cache
from genplug.step_inputs import StepInputs

from .confidence_tuning import ConfidenceTuner, judged_records

# ([batch, k] ids, [batch, k, vocab] draft scores or None, [batch] valid lengths)
Candidates = Tuple[torch.LongTensor, Optional[torch.FloatTensor], torch.LongTensor]


@attrs.define
class CandidateContext:
    """What a candidate generator's ``build(generation_config, context)`` gets besides the config, for one call.

    ``model`` is the target's adapter (``genplug.models.ModelAdapter``); ``input_ids`` the prompt
    (``[batch, length]``, decoder ids for encoder-decoder models) with its ``attention_mask`` (decoder-only;
    None without padding); ``logits_processor`` the call's processors (a draft applies them to its own
    scores); ``encoder_inputs`` the encoder's input and mask (encoder-decoder models).
    """

    model: ModelAdapter
    input_ids: torch.LongTensor
    logits_processor: Any
    eos_token_ids: Optional[torch.LongTensor]
    max_length: int
    device: torch.device
    attention_mask: Optional[torch.Tensor] = None
    assistant_model: Any = None
    tokenizer: Any = None
    assistant_tokenizer: Any = None
    encoder_inputs: Tuple[Any, Any] = (None, None)


def keeps_recurrent_state(adapter: ModelAdapter) -> bool:
    """Whether the model keeps a recurrent state that rejected candidates cannot be taken back out of: Mamba,
    hybrids, RWKV (transformers' ``_is_stateful``, or layer types other than attention and LFM2's short
    convolutions, which can be rolled back)."""
    from genplug.cache import recurrent_layer_types

    return (getattr(adapter.model, "_is_stateful", False) or adapter.makes_own_cache()
            or any(kind != "conv" for kind in recurrent_layer_types(adapter.decoder_config)))


def padded(rows: List[torch.LongTensor], tokens: torch.LongTensor) -> Candidates:
    """One row of candidates per sequence (1-D, any lengths) as ``[batch, k]`` ids, filled past each row's
    length with its last token, and the lengths."""
    lengths = torch.tensor([row.numel() for row in rows], dtype=torch.long, device=tokens.device)
    width = int(lengths.max()) if rows else 0
    ids = tokens[:, -1:].repeat(1, width)
    for index, row in enumerate(rows):
        ids[index, :row.numel()] = row
    return ids, None, lengths


class PromptLookupCandidates:
    """Continue the longest recent n-gram (up to ``max_matching_ngram_size`` tokens) that occurred before
    in the sequence with what followed it there (Saxena, 2023): free candidates for input-grounded tasks.

    As in transformers: the earliest occurrence wins, at most ``num_output_tokens`` tokens are taken
    (never past ``max_length``), a candidate the processors would forbid ends the run, and so does an EOS.
    Each row of a batch is looked up in its own tokens.
    """

    def __init__(self, eos_token_ids, num_output_tokens: int, max_matching_ngram_size: int, max_length: int,
                 processors=None, vocab_size: Optional[int] = None):
        if num_output_tokens <= 0 or max_matching_ngram_size <= 0:
            raise ValueError("prompt_lookup_num_tokens and max_matching_ngram_size must be positive")
        self.eos_token_ids = eos_token_ids
        self.num_output_tokens = num_output_tokens
        self.max_matching_ngram_size = max_matching_ngram_size
        self.max_length = max_length
        self.processors = processors
        self.vocab_size = vocab_size

    def candidates(self, tokens: torch.LongTensor) -> Candidates:
        if self.max_length == tokens.shape[1] + 1:
            return padded([tokens[0, :0]] * tokens.shape[0], tokens)
        if not self.processors:  # every row at once: the first occurrence is always taken
            return self._batch(tokens)
        return padded([self._row(tokens, index) for index in range(tokens.shape[0])], tokens)

    def _batch(self, tokens: torch.LongTensor) -> Candidates:
        """:meth:`_row` for every row in tensor operations (without processors nothing makes the search
        move on from the earliest occurrence of the longest n-gram)."""
        rows, length = tokens.shape
        found = torch.zeros(rows, dtype=torch.bool, device=tokens.device)
        begin = torch.zeros(rows, dtype=torch.long, device=tokens.device)
        for size in range(min(self.max_matching_ngram_size, length - 1), 0, -1):
            hits = (tokens.unfold(1, size, 1) == tokens[:, None, -size:]).all(dim=2)
            hits[:, -1] = False  # the trailing n-gram itself: nothing follows it
            new = hits.any(dim=1) & ~found
            begin = torch.where(new, hits.int().argmax(dim=1) + size, begin)
            found |= new
        end = torch.clamp(begin + self.num_output_tokens, max=min(length, self.max_length))
        lengths = torch.where(found, end - begin, 0)
        width = int(lengths.max()) if rows else 0
        index = (begin[:, None] + torch.arange(width, device=tokens.device)).clamp(max=length - 1)
        ids = tokens.gather(1, index)
        if self.eos_token_ids is not None and width:
            is_eos = torch.isin(ids, self.eos_token_ids.to(ids.device)) & (torch.arange(width, device=ids.device) < lengths[:, None])
            lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), lengths)
        ids = torch.where(torch.arange(width, device=ids.device) < lengths[:, None], ids, tokens[:, -1:])
        return ids, None, lengths

    def _row(self, tokens: torch.LongTensor, row: int) -> torch.LongTensor:
        length = tokens.shape[1]
        seq = tokens[row]
        for size in range(min(self.max_matching_ngram_size, length - 1), 0, -1):
            windows = seq.unfold(0, size, 1)
            starts = (windows == seq[-size:]).all(dim=1).nonzero().flatten().tolist()
            for start in starts:
                begin = start + size
                end = min(begin + self.num_output_tokens, length, self.max_length)
                if begin >= end:
                    continue
                chosen = self._allowed_prefix(tokens, row, seq[begin:end])
                if chosen.numel() == 0:
                    continue
                if self.eos_token_ids is not None:
                    is_eos = torch.isin(chosen, self.eos_token_ids.to(chosen.device)).nonzero()
                    if is_eos.numel():
                        chosen = chosen[: int(is_eos[0])]
                return chosen
        return seq[:0]

    def _allowed_prefix(self, tokens, row: int, chosen):
        """``chosen`` up to the first token the processors would set to -inf (or the lowest float) for ``row``.

        The processors see the whole batch (they may keep per-row state or ask a callback by row index);
        the other rows' histories are extended with their last token."""
        if not self.processors:
            return chosen
        ones = torch.ones(tokens.shape[0], self.vocab_size, dtype=torch.float32, device=tokens.device)
        for i, token in enumerate(chosen.tolist()):
            history = torch.cat((tokens, tokens[:, -1:].expand(-1, i)), dim=1)
            history[row, tokens.shape[1]:] = chosen[:i]
            score = float(self.processors(history, ones.clone())[row, token])
            if score in (float("-inf"), torch.finfo(torch.float32).min):
                return chosen[:i]
        return chosen

    def accepted(self, length: int) -> None:
        """Nothing to undo: the candidates cost no computation."""

    def update(self, n_matches: int, n_candidates: int) -> None:
        """Prompt lookup has no schedule."""


class DraftModelCandidates:
    """Let a draft model (a smaller one sharing the vocabulary, or the target's first ``exit_layer``
    layers) propose up to ``num_tokens`` tokens, greedily or by sampling with the same processors.

    The draft keeps its own cache across rounds, cropped back to the accepted tokens. Drafting stops
    early at an EOS or once the draft's probability of its own token falls below
    ``confidence_threshold``. ``schedule`` ``"heuristic"`` / ``"heuristic_transient"`` grows the number
    of tokens by 2 after a fully accepted round and shrinks it by 1 otherwise (as transformers does).
    With ``tune_confidence`` (an ``assistant_model`` draft, not early exit: transformers' rule) a set
    threshold is tuned after every round from the draft's probabilities of the tokens the target judged
    (:mod:`.confidence_tuning`); the tuned value lasts for the call.
    """

    def __init__(self, adapter: ModelAdapter, step_inputs: StepInputs, processors, do_sample: bool, eos_token_ids,
                 num_tokens: float, schedule: str, confidence_threshold: Optional[float], max_length: int,
                 extra: Optional[dict] = None, tune_confidence: bool = False):
        if keeps_recurrent_state(adapter):
            raise GenerationInputError(
                f"the draft model {type(adapter.model).__name__} keeps a recurrent state, which cannot be rolled back "
                "to the accepted tokens after a rejection; use a draft model with attention layers only")
        self.adapter, self.inputs, self.processors = adapter, step_inputs, processors
        self.do_sample, self.eos_token_ids = do_sample, eos_token_ids
        self.num_tokens, self.schedule = float(num_tokens), schedule
        self.confidence_threshold = confidence_threshold
        self.tuner = ConfidenceTuner() if tune_confidence and confidence_threshold else None
        self.last_round = None  # while tuning: the last round's (probabilities [batch, n], lengths, ends at EOS)
        self.max_length = max_length
        self.extra = dict(extra or {})  # model arguments of every draft step: exit_layer, encoder outputs
        self.cache = None
        self.seen = 0  # tokens of the sequence the draft's cache holds

    def _forward(self, tokens: torch.LongTensor, start: int, end: int):
        out = self.inputs.forward(self.adapter, tokens, start, end, self.cache, dict(self.extra), use_cache=True)
        if self.cache is None:
            self.cache = returned_cache(out)
        self.seen = end
        return out.logits[:, -1, :].float()

    def candidates(self, tokens: torch.LongTensor) -> Candidates:
        length, rows = tokens.shape[1], tokens.shape[0]
        budget = min(int(self.num_tokens), self.max_length - length - 1)
        self.last_round = None
        if budget <= 0:
            return tokens[:, :0], None, tokens.new_zeros(rows)
        buffer = torch.cat((tokens, tokens.new_zeros(rows, budget)), dim=1)
        logits = self._forward(buffer, self.seen, length)
        drafted, draft_scores, own_probabilities = [], [], []
        # a row stops drafting after an EOS or a token below the confidence threshold (that token still counts);
        # the batch drafts on while any row does
        lengths = torch.full((rows,), budget, dtype=torch.long, device=tokens.device)
        stopped = torch.zeros(rows, dtype=torch.bool, device=tokens.device)
        ends_at_eos = torch.zeros_like(stopped)
        for i in range(budget):
            scores = self.processors(buffer[:, :length + i], logits) if self.processors else logits
            probs = torch.softmax(scores, dim=-1)
            token = torch.multinomial(probs, 1)[:, 0] if self.do_sample else scores.argmax(dim=-1)
            buffer[:, length + i] = token
            drafted.append(token)
            draft_scores.append(scores)
            stops = torch.zeros_like(stopped)
            if self.eos_token_ids is not None:
                stops |= torch.isin(token, self.eos_token_ids.to(token.device))
                ends_at_eos |= stops & ~stopped
            if self.confidence_threshold is not None:
                own = probs.gather(1, token[:, None])[:, 0]
                own_probabilities.append(own)
                stops |= own < self.confidence_threshold
            lengths = torch.where(stops & ~stopped, i + 1, lengths)
            stopped |= stops
            if bool(stopped.all()):
                break
            if i + 1 < budget:
                logits = self._forward(buffer, length + i, length + i + 1)
        lengths.clamp_(max=len(drafted))
        if self.tuner is not None:
            self.last_round = (torch.stack(own_probabilities, dim=1), lengths, ends_at_eos)
        return torch.stack(drafted, dim=1), torch.stack(draft_scores, dim=1), lengths

    def accepted(self, length: int) -> None:
        """The sequence now has ``length`` tokens, the last one new to the draft: drop the rest."""
        keep = min(self.seen, length - 1)  # >= 1: the draft has seen the prompt
        if self.cache is not None and keep < self.seen:
            # a count of tokens to remove (a transformers cache, which a model without a native twin returns, refuses
            # a length to keep), but a length under early exit, whose skipped layers hold no tokens to remove
            self.cache.crop(keep if "exit_layer" in self.extra else keep - self.seen)
        self.seen = keep

    def verified(self, matches: torch.LongTensor, running: torch.BoolTensor) -> None:
        """The target accepted the first ``matches[r]`` candidates of row ``r``: record the judged ones and
        move the confidence threshold to the cheapest so far (while tuning)."""
        if self.last_round is None:
            return
        probabilities, lengths, ends_at_eos = self.last_round
        self.last_round = None
        self.tuner.record(*judged_records(probabilities, lengths, matches, running, ends_at_eos))
        threshold = self.tuner.threshold()
        if threshold is not None:
            self.confidence_threshold = threshold

    def update(self, n_matches: int, n_candidates: int) -> None:
        self.num_tokens = scheduled(self.num_tokens, self.schedule, n_matches, n_candidates)


def scheduled(num_tokens: float, schedule: str, n_matches: int, n_candidates: int) -> float:
    """The next round's draft length: +2 after a fully accepted round, -1 (at least 1) otherwise, under
    the "heuristic" schedules; unchanged under "constant"."""
    if schedule not in ("heuristic", "heuristic_transient"):
        return num_tokens
    return num_tokens + 2.0 if n_matches == n_candidates else max(1.0, num_tokens - 1.0)


class OtherTokenizerDraftCandidates:
    """A draft model with its own tokenizer (universal assisted decoding): the draft reads the text so far
    in its own tokens, drafts ``num_tokens`` of them, and the text they add becomes the candidates in the
    target's tokens.

    Each round the target's text is re-encoded for the draft and the draft's cache is kept for the
    longest prefix it shares with what it saw before. The draft runs greedily (or samples with
    ``do_sample``) without the call's processors, which speak the target's vocabulary; candidates come
    without draft probabilities, so sampling keeps the target-sampled tokens that match them. Greedy
    verification makes the result plain greedy search's whatever the draft proposes.

    In a batch each row is handled alone, in a loop: its own text (the prompt's padding, from
    ``prompt_mask``, left out), its own draft cache, its own number of candidates in the target's tokens
    (``lengths``; the rest is filler, as :func:`padded` fills it). Rows re-encode to different lengths in
    the draft's tokens and stop drafting at different points, so batching the draft would mean padding
    its cache to the longest row and re-aligning it every round. A row that ended with an EOS after the
    prompt proposes nothing: the loop no longer counts a finished row's matches, so drafting for it
    would be wasted.
    """

    def __init__(self, adapter: ModelAdapter, target_tokenizer, draft_tokenizer, do_sample: bool,
                 num_tokens: float, schedule: str, max_length: int, device, eos_token_ids=None,
                 prompt_mask: Optional[torch.Tensor] = None, prompt_length: int = 0):
        self.adapter, self.target_tokenizer, self.draft_tokenizer = adapter, target_tokenizer, draft_tokenizer
        self.do_sample, self.num_tokens, self.schedule, self.max_length = do_sample, float(num_tokens), schedule, max_length
        self.device = device
        self.eos_token_ids, self.prompt_mask, self.prompt_length = eos_token_ids, prompt_mask, prompt_length
        self.caches: dict = {}  # per row: the draft's cache
        self.seen: dict = {}  # per row: the draft tokens its cache holds ([1, n])
        self.draft_eos = getattr(draft_tokenizer, "eos_token_id", None)

    def _encode(self, tokenizer, text: str, special: bool) -> torch.LongTensor:
        ids = tokenizer(text, add_special_tokens=special, return_tensors="pt")["input_ids"]
        return torch.as_tensor(ids, dtype=torch.long).reshape(1, -1).to(self.device)

    def _step(self, row: int, ids: torch.LongTensor, start: int):
        """Draft logits after ``ids`` (row ``row``'s draft tokens), feeding ``ids[:, start:]`` through that
        row's draft cache."""
        positions = torch.arange(start, ids.shape[1], device=self.device)[None, :]
        out = self.adapter.step(ids[:, start:], None, positions, self.caches.get(row), {}, use_cache=True)
        if self.caches.get(row) is None:
            self.caches[row] = returned_cache(out)
        return out.logits[:, -1, :].float()

    def candidates(self, tokens: torch.LongTensor) -> Candidates:
        budget = min(int(self.num_tokens), self.max_length - tokens.shape[1] - 1)
        if budget <= 0:
            return padded([tokens[0, :0]] * tokens.shape[0], tokens)
        rows = [tokens[row, :0] if self._ended(tokens, row) else self._row(tokens, row, budget).to(tokens.device)
                for row in range(tokens.shape[0])]
        return padded(rows, tokens)

    def _ended(self, tokens: torch.LongTensor, row: int) -> bool:
        """Whether row ``row`` has an EOS after the prompt (it is finished: what follows is padding)."""
        if self.eos_token_ids is None:
            return False
        generated = tokens[row, self.prompt_length:]
        return bool(torch.isin(generated, self.eos_token_ids.to(generated.device)).any())

    def _row(self, tokens: torch.LongTensor, row: int, budget: int) -> torch.LongTensor:
        """Row ``row``'s candidates (1-D, at most ``budget`` target tokens)."""
        own = tokens[row]
        if self.prompt_mask is not None:  # leave the prompt's padding out of the text
            keep = torch.ones_like(own, dtype=torch.bool)
            keep[:self.prompt_mask.shape[1]] = self.prompt_mask[row].bool().to(own.device)
            own = own[keep]
        text = self.target_tokenizer.decode(own.tolist(), skip_special_tokens=True)
        ids = self._encode(self.draft_tokenizer, text, special=True)
        seen = self.seen.get(row, ids[:, :0])
        shared = min(_common_prefix(seen, ids), ids.shape[1] - 1)  # feed at least one token, for the next logits
        cache = self.caches.get(row)
        if cache is not None and shared < seen.shape[1]:
            if shared == 0:
                del self.caches[row]
            else:
                cache.crop(shared)
        logits = self._step(row, ids, shared)
        fed = ids.shape[1]  # how many of ids the draft's cache holds
        drafted = []
        for i in range(budget):
            token = (torch.multinomial(torch.softmax(logits, -1), 1)[:, 0] if self.do_sample
                     else logits.argmax(dim=-1))
            if self.draft_eos is not None and int(token) == self.draft_eos:
                break
            drafted.append(token)
            ids = torch.cat((ids, token[:, None]), dim=1)
            if i + 1 < budget:
                logits = self._step(row, ids, ids.shape[1] - 1)
                fed = ids.shape[1]
        self.seen[row] = ids[:, :fed]
        if not drafted:
            return tokens[row, :0]
        prefix = self.draft_tokenizer.decode(ids[0, : ids.shape[1] - len(drafted)].tolist(), skip_special_tokens=True)
        full = self.draft_tokenizer.decode(ids[0].tolist(), skip_special_tokens=True)
        added = full[len(prefix):] if full.startswith(prefix) else self.draft_tokenizer.decode(
            [int(t) for t in drafted], skip_special_tokens=True)
        return self._encode(self.target_tokenizer, added, special=False)[0, :budget]

    def accepted(self, length: int) -> None:
        """The draft's caches are matched against the re-encoded text next round."""

    def update(self, n_matches: int, n_candidates: int) -> None:
        self.num_tokens = scheduled(self.num_tokens, self.schedule, n_matches, n_candidates)


def _common_prefix(a: torch.LongTensor, b: torch.LongTensor) -> int:
    n = min(a.shape[1], b.shape[1])
    if n == 0:
        return 0
    differs = (a[0, :n] != b[0, :n]).nonzero()
    return int(differs[0]) if differs.numel() else n
