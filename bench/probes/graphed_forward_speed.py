"""Batch-1 decoding on a GPU for calls the whole-step CUDA graph refuses (a stopping criterion checked on the
host, per-step scores, beam search): genplug's eager loop with its forward replayed from a CUDA graph
(core/graphed_forward.py, fourteenth session) against the same loop without it (GENPLUG_GRAPHED_FORWARD=0),
the whole-step graph loop on a call it takes (also with stop strings, which it checks inside the step since the
fifteenth session), and transformers' static cache + compile with the same criterion.
Issue 9's model (random Llama-3.2-1B shape, bf16, prompt 128, 256 new tokens). Prints tokens/s (best of
``--repeats`` calls after a first; for beam search, the returned sequence's new tokens) and whether the
greedy tokens agree.
Run on the accelerator: python bench/probes/graphed_forward_speed.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpu_decode import NEW, PROMPT, SAMPLING, hf_and_native_one_b, timed  # noqa: E402


class NeverStops:
    """A stopping criterion of the user's own: Python called every step, which the whole-step graph cannot take."""

    def __call__(self, input_ids, scores, **kwargs):
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cells", default="", help="comma-separated substrings: only the cells whose name has one")
    args = parser.parse_args()
    import transformers

    import genplug

    hf, native = hf_and_native_one_b()
    ids = torch.randint(3, 128000, (1, PROMPT), device="cuda")
    static = dict(max_new_tokens=NEW, eos_token_id=None, cache_implementation="static")
    criterion = genplug.StoppingCriteriaList([NeverStops()])
    scores = dict(output_scores=True, return_dict_in_generate=True)
    # stop strings over the embedded model's tokenizer (ids past its vocabulary spell nothing: no row stops)
    stops = dict(stop_strings=["The end.", "\n\n"], tokenizer=genplug.load_model()[1])

    def plain(env_off=False, **kw):
        def call():
            if env_off:
                os.environ["GENPLUG_GRAPHED_FORWARD"] = "0"
            try:
                out = genplug.generate(native, ids, **static, **kw)
            finally:
                os.environ.pop("GENPLUG_GRAPHED_FORWARD", None)
            return out if isinstance(out, torch.Tensor) else out.sequences
        return call

    cells = {
        "whole-step graph loop (no host criterion)": plain(),
        "host criterion, graphed forward": plain(stopping_criteria=criterion),
        "host criterion, eager forward (GENPLUG_GRAPHED_FORWARD=0)": plain(True, stopping_criteria=criterion),
        "stop strings, whole-step graph (fifteenth session)": plain(**stops),
        "stop strings, eager loop (disable_compile=True)": plain(disable_compile=True, **stops),
        "output_scores, graphed forward": plain(**scores),
        "output_scores, eager forward": plain(True, **scores),
        "sampling + host criterion, graphed forward": plain(stopping_criteria=criterion, **SAMPLING),
        "sampling + host criterion, eager forward": plain(True, stopping_criteria=criterion, **SAMPLING),
        "transformers static+compile, host criterion": lambda: hf.generate(
            ids, stopping_criteria=transformers.StoppingCriteriaList([NeverStops()]), **static),
        "beam search (4 beams), graphed forward": plain(num_beams=4),
        "beam search (4 beams), eager forward": plain(True, num_beams=4),
        "transformers static+compile, beam search (4 beams)": lambda: hf.generate(ids, num_beams=4, **static),
    }
    import genplug.graphed_forward as graphed_forward

    greedy = {}
    wanted = [c for c in args.cells.split(",") if c]
    for name, fn in cells.items():
        if wanted and not any(w in name for w in wanted) and not name.startswith("whole-step"):
            continue
        try:
            first, out = timed(fn)
            best = min(timed(fn)[0] for _ in range(args.repeats))
        except Exception as exc:  # one broken cell must not hide the others
            print(f"{name:60} failed: {type(exc).__name__}: {exc}"[:300], flush=True)
            continue
        if "sampling" not in name and "beam" not in name:
            greedy[name] = out.cpu()
        how = ""
        if "graphed forward" in name:
            graphed_forward.LAST_REUSED = graphed_forward.LAST_CAPTURE_SECONDS = None
            fn()
            how = (f"; its last call {'reused' if graphed_forward.LAST_REUSED else 'captured'} the forward's graph "
                   f"in {1e3 * graphed_forward.LAST_CAPTURE_SECONDS:.1f} ms")
        print(f"{name:60} {NEW / best:8.1f} tokens/s (first call {first:5.1f} s{how})", flush=True)
    reference = greedy["whole-step graph loop (no host criterion)"]
    print("genplug's greedy cells equal the whole-step graph loop's tokens: "
          + str({k: torch.equal(v, reference) for k, v in greedy.items() if not k.startswith("transformers")}))


if __name__ == "__main__":
    main()
