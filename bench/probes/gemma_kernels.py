"""Batch-1 greedy decode of a random Gemma-3-1B-shaped model (genplug's native model loaded from a
transformers checkpoint) with the fused decode kernels and with the PyTorch graph step
(GENPLUG_DECODE_KERNELS=0), same process; prints tokens/s, the percent of the copy-bandwidth limit and
whether the graph loop equals the eager path (which runs the same kernels). With ``--transformers``,
transformers' own generate on the same checkpoint (static cache + its automatic compile) is timed
first, and the ratios are printed against it.

Run on the accelerator: python bench/probes/gemma_kernels.py [--transformers]
"""
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402


def gemma3_one_b_config():
    """Gemma-3-1B's shape (transformers config; random weights are the caller's)."""
    import transformers

    return transformers.Gemma3TextConfig(
        hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
        head_dim=256, vocab_size=262144, sliding_window=512, query_pre_attn_scalar=256, max_position_embeddings=32768,
        bos_token_id=2, eos_token_id=1, pad_token_id=0)


def gemma3_one_b():
    import transformers

    torch.manual_seed(0)
    hf = transformers.Gemma3ForCausalLM(gemma3_one_b_config()).to(torch.bfloat16).cuda().eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
    tmp = Path(tempfile.mkdtemp())
    hf.save_pretrained(tmp)
    return genplug.load_model(tmp, device="cuda", dtype="bfloat16")[0], weight_bytes, hf


def main():
    native, weight_bytes, hf = gemma3_one_b()
    limit = gpu_decode.copy_bandwidth() / weight_bytes
    print(f"Gemma-3-1B shape: weights {weight_bytes / 1e9:.2f} GB, batch-1 limit {limit:.0f} tokens/s; "
          f"fused kernels cover it: {native.fused_kernels_fit}")
    ids = torch.randint(3, 200000, (1, gpu_decode.PROMPT), device="cuda")
    anchor = None
    if "--transformers" in sys.argv[1:]:
        def theirs(hf=hf):
            return hf.generate(ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW, eos_token_id=None,
                               do_sample=False)

        first, _ = gpu_decode.timed(theirs)
        anchor = gpu_decode.NEW / min(gpu_decode.timed(theirs)[0] for _ in range(3))
        print(f"{'transformers static+compile':42} {anchor:7.1f} tokens/s ({100 * anchor / limit:.1f}% of the limit; "
              f"first call {first:.2f} s)", flush=True)
    del hf

    def run(**extra):
        return genplug.generate(native, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                eos_token_id=None, **extra)

    for name, switch in (("fused kernels", "1"), ("PyTorch step (GENPLUG_DECODE_KERNELS=0)", "0")):
        os.environ["GENPLUG_DECODE_KERNELS"] = switch
        graph_loop.release(native)
        eager = run(disable_compile=True)
        first, out = gpu_decode.timed(run)
        best = min(gpu_decode.timed(run)[0] for _ in range(3))
        tps = gpu_decode.NEW / best
        versus = f", {tps / anchor:.2f}x transformers" if anchor else ""
        print(f"{name:42} {tps:7.1f} tokens/s ({100 * tps / limit:.1f}% of the limit{versus}; first call {first:.2f} s); "
              f"graph == eager {torch.equal(out, eager)}", flush=True)


if __name__ == "__main__":
    main()
