"""Correctness of the CUDA-graph loop on a real GPU, in cases the CPU tests run uncaptured.

A 4-layer model of the 1B shape (bf16), prompt 32, EOS set and min_new_tokens on: graph output equals
the eager loop's for the native model and for a transformers model through its native twin; a
transformers model on its own forward (native_kernels=False: compiled + captured) runs; sampling never
ends a row before min_new_tokens. Run: python bench/probes/graph_checks.py
"""
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402


def main():
    import transformers

    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(gpu_decode.one_b_config(layers=4)).to(torch.bfloat16).cuda().eval()
    tmp = Path(tempfile.mkdtemp())
    hf.save_pretrained(tmp)
    native, _ = genplug.load_model(tmp, device="cuda", dtype="bfloat16")
    ids = torch.randint(3, 128000, (4, 32), device="cuda")
    free = genplug.generate(native, ids, max_new_tokens=64, eos_token_id=None)
    eos = int(free[0, 32 + 3])  # row 0 would stop at its 4th new token
    common = dict(max_new_tokens=64, eos_token_id=eos, pad_token_id=0, min_new_tokens=10,
                  cache_implementation="static")
    for name, model, extra in (("native", native, {}), ("transformers via twin", hf, {}),
                               ("transformers forward", hf, dict(native_kernels=False))):
        graph_loop.LAST_CAPTURE_SECONDS = None
        start = time.perf_counter()
        graph = genplug.generate(model, ids, **common, **extra)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        captured = graph_loop.LAST_CAPTURE_SECONDS is not None
        eager = genplug.generate(model, ids, disable_compile=True, **common, **extra)
        held_back = bool((graph[:, 32:32 + 10] != eos).all())
        print(f"{name}: graph loop ran {captured}, {seconds:.1f} s, graph == eager {torch.equal(graph, eager)}, "
              f"no EOS before min_new_tokens {held_back}", flush=True)
    torch.manual_seed(1)
    sampled = genplug.generate(native, ids, do_sample=True, top_k=50, top_p=0.9, temperature=0.7,
                               repetition_penalty=1.1, **common)
    print(f"sampling (native, graph): no EOS before min_new_tokens {bool((sampled[:, 32:42] != eos).all())}, "
          f"lengths {sampled.shape}")


if __name__ == "__main__":
    main()
