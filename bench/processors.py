"""The sampling chain's cost: genplug's processors against transformers' on identical inputs.

Chain: repetition penalty 1.1, no-repeat-ngram 3, temperature 0.7, top-k 50, top-p 0.9, min-p 0.05,
on a 128k vocabulary with 512 tokens of history, at batch 1 and batch 32, both run through their own
LogitsProcessorList in this process. Prints median times and genplug/transformers ratios, per processor
(each called alone, as it would be outside a chain) and for the whole chain. Also checks that both
chains give the same scores.

Targets (issue 4), on CPU: chain <= 0.5x transformers; n-gram blocking at batch 32 <= 0.1x.
Run with one thread: OMP_NUM_THREADS=1 python bench/processors.py
On a GPU (``--device cuda``) it also checks that genplug's chain makes no host synchronisation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

VOCAB = 128_256
HISTORY = 512
BATCHES = (1, 32)
CHAIN = (
    ("RepetitionPenaltyLogitsProcessor", (1.1,)),
    ("NoRepeatNGramLogitsProcessor", (3,)),
    ("TemperatureLogitsWarper", (0.7,)),
    ("TopKLogitsWarper", (50,)),
    ("TopPLogitsWarper", (0.9,)),
    ("MinPLogitsWarper", (0.05,)),
)


def paired_ms(ours, theirs, runs: int, device: torch.device):
    """Median milliseconds of each, timed alternately so that load from other processes hits both alike."""

    def finish():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    ours(), theirs()
    samples = ([], [])
    for _ in range(runs):
        for fn, out in ((ours, samples[0]), (theirs, samples[1])):
            finish()
            start = time.perf_counter()
            fn()
            finish()
            out.append(time.perf_counter() - start)
    return statistics.median(samples[0]) * 1000, statistics.median(samples[1]) * 1000


def chains():
    import transformers.generation.logits_process as hf

    import genplug
    from genplug.processing import LogitsProcessorList

    ours = LogitsProcessorList(getattr(genplug, name)(*args) for name, args in CHAIN)
    theirs = hf.LogitsProcessorList(getattr(hf, name)(*args) for name, args in CHAIN)
    return ours, theirs


def inputs(batch: int, device: torch.device):
    generator = torch.Generator().manual_seed(batch)
    # Mostly new tokens plus some repeats, so that n-gram blocking finds matches as in real text.
    input_ids = torch.randint(0, 2_000, (batch, HISTORY), generator=generator)
    scores = torch.randn(batch, VOCAB, generator=generator) * 4
    return input_ids.to(device), scores.to(device)


def check_no_sync(chain, input_ids, scores) -> str:
    """Run the chain with CUDA's sync debugging set to raise on any device-to-host synchronisation."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        chain(input_ids, scores)
        return "none"
    except RuntimeError as error:
        return f"YES: {error}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (the target) or cuda")
    device = torch.device(parser.parse_args().device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    ours, theirs = chains()
    where = f"{torch.get_num_threads()} thread" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"vocab {VOCAB}, history {HISTORY} tokens, {where}; median ms per step")
    print(f"{'batch':>5}  {'what':<34}{'genplug':>10}{'transformers':>14}{'ratio':>8}")
    for batch in BATCHES:
        input_ids, scores = inputs(batch, device)
        same = torch.equal(ours(input_ids, scores), theirs(input_ids, scores))
        runs = 30 if batch == 1 or device.type == "cuda" else 7
        for mine, hers in zip(ours, theirs):
            a, b = paired_ms(lambda: mine(input_ids, scores), lambda: hers(input_ids, scores), runs, device)
            print(f"{batch:>5}  {type(mine).__name__:<34}{a:>10.3f}{b:>14.3f}{a / b:>8.2f}")
        if batch == BATCHES[-1]:
            # Inside a chain the n-gram processor works in place on the chain's one copy of the scores.
            ngram, owned = ours[1], scores.clone()
            a, b = paired_ms(lambda: ngram.apply_(input_ids, owned), lambda: theirs[1](input_ids, scores), runs,
                             device)
            print(f"{batch:>5}  {'  n-gram inside the chain (in place)':<34}{a:>10.3f}{b:>14.3f}{a / b:>8.2f}")
        a, b = paired_ms(lambda: ours(input_ids, scores), lambda: theirs(input_ids, scores), runs, device)
        print(f"{batch:>5}  {'whole chain':<34}{a:>10.3f}{b:>14.3f}{a / b:>8.2f}"
              f"   (same scores: {'yes' if same else 'NO'}; target <= 0.5)")
        if device.type == "cuda":
            print(f"{batch:>5}  host synchronisations in genplug's chain: {check_no_sync(ours, input_ids, scores)}")


if __name__ == "__main__":
    main()
