"""The output head of the native 1B model's decode step: cuBLAS over the embedding matrix stored ``[hidden,
vocab]`` (as shipped before the thirteenth session), cuBLAS over it stored ``[vocab, hidden]``, or genplug's
one-row GEMV over ``[vocab, hidden]`` (shipped since: it takes part in programmatic dependent launch, and so
does the token choice after it, ``loop_kernels.CHOICE_PDL``), under a few GEMV tiles. Batch-1 greedy (and
sampling for the two main settings), best of 3 calls of 256 new tokens, graph == eager checked for each;
then batch 16 and 64 greedy with either storage (several rows' heads are cuBLAS's either way).

Run on the accelerator: python bench/probes/head_variants.py [--batch-1-only]
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402
from genplug import loop_kernels  # noqa: E402
from genplug.plugins.models.llama import decode_kernels, fused_step  # noqa: E402

TUNED = decode_kernels._gemv_config
VOCAB = 128256
SHIPPED = dict(out_in=True, gemv=True, choice_pdl=True, config=None)
VARIANTS = [  # (name, changes to the shipped setting, also sampled)
    ("cuBLAS [hidden, vocab] (before)", dict(out_in=False, gemv=False, choice_pdl=False), True),
    ("GEMV [vocab, hidden] + choice PDL (shipped)", {}, True),
    ("GEMV, choice without PDL", dict(choice_pdl=False), False),
    ("cuBLAS [vocab, hidden]", dict(gemv=False), False),
    ("cuBLAS [vocab, hidden] + choice PDL", dict(gemv=False, choice_pdl=True), False),
    ("GEMV (32, 256, 8, 2, 8)", dict(config=(32, 256, 8, 2, 8)), False),
    ("GEMV (16, 256, 4, 2, 8)", dict(config=(16, 256, 4, 2, 8)), False),
    ("GEMV (16, 512, 8, 2, 8)", dict(config=(16, 512, 8, 2, 8)), False),
    ("GEMV (16, 256, 8, 2, 4)", dict(config=(16, 256, 8, 2, 4)), False),
    ("GEMV (64, 128, 8, 2, 8)", dict(config=(64, 128, 8, 2, 8)), False),
    ("cuBLAS [hidden, vocab] (before, again)", dict(out_in=False, gemv=False, choice_pdl=False), False),
    ("GEMV [vocab, hidden] + choice PDL (shipped, again)", {}, False),
]


def head_storage(model, out_in: bool):
    """The tied embedding/head matrix stored ``[vocab, hidden]`` (out_in) or ``[hidden, vocab]``."""
    weight = model.lm_head.weight_t.detach()
    if (weight.stride(0) == 1) != out_in:
        stored = nn.Parameter(weight.t().contiguous().t() if out_in else weight.contiguous(), requires_grad=False)
        model.lm_head.weight_t = stored
        model.model.embed_tokens.weight_t = stored


def apply(model, setting):
    head_storage(model, setting["out_in"])
    fused_step.HEAD_GEMV = setting["gemv"]
    loop_kernels.CHOICE_PDL = setting["choice_pdl"]
    head = setting["config"]
    decode_kernels._gemv_config = (lambda i, o, k: head if head is not None and o == VOCAB else TUNED(i, o, k))
    graph_loop.release(model)


def main():
    native = gpu_decode.native_one_b()
    ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")
    for name, changes, sampled in VARIANTS:
        apply(native, dict(SHIPPED, **changes))
        for mode, extra in (("greedy", {}), ("sampling", gpu_decode.SAMPLING)):
            if mode == "sampling" and not sampled:
                continue

            def run(**more):
                return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                        eos_token_id=None, **extra, **more)
            try:
                first, out = gpu_decode.timed(run)
                best = min(gpu_decode.timed(run)[0] for _ in range(3))
                same = f"; graph == eager {torch.equal(out, run(disable_compile=True))}" if mode == "greedy" else ""
                print(f"b1 {mode:8} {name:50} {gpu_decode.NEW / best:7.1f} tokens/s (first {first:.2f} s){same}",
                      flush=True)
            except Exception as exc:  # one broken variant must not hide the others
                print(f"b1 {mode:8} {name:50} {type(exc).__name__}: {exc}"[:300], flush=True)
    if "--batch-1-only" in sys.argv:
        return
    for batch in (16, 64):
        ids = torch.randint(3, 128000, (batch, gpu_decode.PROMPT), device="cuda")
        for name, out_in in (("[hidden, vocab]", False), ("[vocab, hidden]", True), ("[hidden, vocab] again", False)):
            apply(native, dict(SHIPPED, out_in=out_in))

            def run():
                return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                        eos_token_id=None)
            gpu_decode.timed(run)
            best = min(gpu_decode.timed(run)[0] for _ in range(2))
            print(f"b{batch} greedy head stored {name:22} {batch * gpu_decode.NEW / best:9.1f} tokens/s", flush=True)


if __name__ == "__main__":
    main()
