"""synced_gpus with two real processes (torch.distributed, gloo on the CPU).

A sharded model (FSDP, DeepSpeed ZeRO-3) needs every rank in every forward, so a rank whose rows have
all stopped must keep stepping until every rank has. Each rank here decodes its own prompt; rank 0's
stops early at an EOS. Checked per strategy: both ranks run the same number of forwards, and each
rank's output equals what it gets alone without synced_gpus.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import genplug
from helpers.tiny_lm import TinyCausalLM

MODES = {
    "greedy": dict(),
    "sampling": dict(do_sample=True, top_k=8),
    "beam search": dict(num_beams=2),
    "prompt lookup": dict(prompt_lookup_num_tokens=3),
}
NEW_TOKENS = 12


def prompts():
    g = torch.Generator().manual_seed(3)
    first = torch.randint(3, 64, (1, 4), generator=g)
    second = torch.randint(3, 64, (1, 6), generator=g)
    return [torch.cat((first, first), 1), torch.cat((second, second), 1)]  # repeats: prompt lookup finds n-grams


def early_eos(model):
    """A token rank 0 greedily emits at its 3rd step and rank 1 never emits within NEW_TOKENS steps."""
    rank0, rank1 = (genplug.generate(model, ids, max_new_tokens=NEW_TOKENS, eos_token_id=None)[0, ids.shape[1]:]
                    for ids in prompts())
    for token in rank0[2:6].tolist():
        if token not in rank1.tolist() and token not in rank0[:2].tolist():
            return token
    pytest.skip("no token separates the two ranks' greedy outputs")


def _worker(rank, port, mode, eos, results, max_length=None):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = TinyCausalLM(seed=0)
        ids = prompts()[rank]
        lengths = dict(max_length=max_length) if max_length else dict(max_new_tokens=NEW_TOKENS)
        settings = dict(eos_token_id=eos, pad_token_id=0, **lengths, **MODES[mode])
        torch.manual_seed(rank)
        alone = genplug.generate(model, ids, synced_gpus=False, **settings)
        model.forward_calls = 0
        torch.manual_seed(rank)
        synced = genplug.generate(model, ids, synced_gpus=True, **settings)
        results.put((rank, model.forward_calls, synced.tolist(), alone.tolist()))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(mode, eos, max_length=None):
    """``{rank: (forward calls, synced output, output alone)}`` from two gloo processes."""
    context = mp.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_worker, args=(rank, port, mode, eos, results, max_length))
                 for rank in range(2)]
    for process in processes:
        process.start()
    outcome = {}
    for _ in processes:
        rank, calls, synced, alone = results.get(timeout=120)
        outcome[rank] = (calls, synced, alone)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return outcome


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_every_rank_steps_until_all_are_done(mode):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    outcome = run_two_ranks(mode, early_eos(TinyCausalLM(seed=0)))
    (calls0, synced0, alone0), (calls1, synced1, alone1) = outcome[0], outcome[1]
    assert calls0 == calls1, f"rank 0 ran {calls0} forwards, rank 1 {calls1}: a sharded model would hang"
    assert synced0 == alone0 and synced1 == alone1
    assert len(alone0[0]) < len(alone1[0])  # rank 0 really stopped early


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["greedy", "beam search"])
def test_a_rank_at_max_length_keeps_stepping_for_the_others(mode):
    """max_length counts the prompt, and rank 0's prompt is shorter: it has more steps to go than rank 1,
    which reaches max_length first and must keep running forwards (no EOS at all here)."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    outcome = run_two_ranks(mode, None, max_length=20)
    (calls0, synced0, alone0), (calls1, synced1, alone1) = outcome[0], outcome[1]
    assert calls0 == calls1
    assert synced0 == alone0 and synced1 == alone1
    assert len(alone0[0]) == len(alone1[0]) == 20
