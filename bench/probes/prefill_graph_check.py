"""Greedy, then sampling, then greedy again on the native 1B model (two calls each), with or without
programmatic dependent launch and the prefill graph (GENPLUG_PREFILL_GRAPH is set here): which
combination fails on the GPU. With HF=1, transformers' static+compile generate on the same weights
runs before each of genplug's calls, as in bench/gpu_decode.py, where the failure was seen.
Run: python bench/probes/prefill_graph_check.py NAME PDL(0|1) PREFILL_MAX_TOKENS [HF(0|1)]"""
import os
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.prefill_graph as prefill_graph  # noqa: E402

name, pdl, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
with_hf = len(sys.argv) > 4 and sys.argv[4] == "1"
os.environ["GENPLUG_PDL"] = pdl
prefill_graph.ENABLED, prefill_graph.MAX_TOKENS = True, max_tokens
native = gpu_decode.native_one_b()
hf = None
if with_hf:
    import transformers

    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(gpu_decode.one_b_config()).to(torch.bfloat16).cuda().eval()
ids = torch.randint(3, 128000, (1, gpu_decode.PROMPT), device="cuda")
outs = {}
for step, (mode, extra) in enumerate((("greedy", {}), ("sampling", gpu_decode.SAMPLING), ("greedy", {}))):
    for i in range(2):
        if hf is not None:
            hf.generate(ids, cache_implementation="static", max_new_tokens=64, eos_token_id=None, **extra)
        try:
            out = genplug.generate(native, ids, cache_implementation="static", max_new_tokens=64, eos_token_id=None,
                                   **extra)
            torch.cuda.synchronize()
        except Exception:
            print(name, step, mode, i, "FAILED after prefill", prefill_graph.LAST_PREFILL, flush=True)
            traceback.print_exc(limit=-12)
            sys.exit(1)
        print(name, step, mode, i, prefill_graph.LAST_PREFILL, flush=True)
        outs.setdefault(mode, []).append(out)
eager = genplug.generate(native, ids, cache_implementation="static", max_new_tokens=64, eos_token_id=None,
                         disable_compile=True)
print(name, "OK; greedy calls == eager:", all(torch.equal(o, eager) for o in outs["greedy"]))
