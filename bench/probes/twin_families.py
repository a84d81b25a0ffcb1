"""Batch-1 greedy decode of random transformers models of the families whose fused-kernel paths had not
been timed on a GPU -- Qwen2 (biased q/k/v, read in place by the twin's GEMV), Phi-3 (fused q/k/v and
gate/up, LongRoPE-free shape) and Gemma 3 -- through genplug (``genplug.generate`` on the transformers
model: its native twin, static cache, graph loop) against transformers' own generate with a static cache
and its automatic compile, same process, same weights. Prints tokens/s, the percent of the
copy-bandwidth limit, the ratio, whether the twin ran the fused kernels and whether genplug's graph loop
equals its eager path.

Shapes are the public 1-4B checkpoints' (Qwen2.5-1.5B, Phi-3-mini, Gemma-3-1B) with random weights.

Run on the accelerator: python bench/probes/twin_families.py [family ...]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
from gemma_kernels import gemma3_one_b_config  # noqa: E402
from genplug.plugins.transformers.native_twin import native_twin, why_no_twin  # noqa: E402


def qwen2():
    import transformers

    return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768, bos_token_id=1, eos_token_id=2))


def phi3():
    import transformers

    return transformers.Phi3ForCausalLM(transformers.Phi3Config(
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        vocab_size=32064, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0))


def gemma3():
    import transformers

    return transformers.Gemma3ForCausalLM(gemma3_one_b_config())


DEVICE = "cuda"
FAMILIES = {"qwen2": qwen2, "phi3": phi3, "gemma3": gemma3}


def measure(name, build, bandwidth):
    torch.manual_seed(0)
    with torch.device(DEVICE):  # random init on the GPU: seconds, not minutes, for 4B parameters
        hf = build().to(torch.bfloat16).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
    limit = bandwidth / weight_bytes
    reason = why_no_twin(hf)
    fused = reason is None and native_twin(hf).fused_kernels_fit
    print(f"{name}: weights {weight_bytes / 1e9:.2f} GB, batch-1 limit {limit:.0f} tokens/s; twin: "
          f"{reason or 'yes'}; fused kernels cover it: {fused}", flush=True)
    ids = torch.randint(3, 30000, (1, gpu_decode.PROMPT), device=DEVICE)

    def theirs():
        return hf.generate(ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW, eos_token_id=None,
                           do_sample=False)

    def ours(**extra):
        return genplug.generate(hf, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                eos_token_id=None, **extra)

    rows = []
    for label, fn in (("transformers static+compile", theirs), ("genplug on the transformers model", ours)):
        first, out = gpu_decode.timed(fn)
        tps = gpu_decode.NEW / min(gpu_decode.timed(fn)[0] for _ in range(3))
        rows.append((label, tps, first, out))
    anchor = rows[0][1]
    eager = ours(disable_compile=True)
    for label, tps, first, out in rows:
        print(f"  {label:36} {tps:8.1f} tokens/s ({100 * tps / limit:4.1f}% of the limit, {tps / anchor:.2f}x; "
              f"first call {first:.1f} s)", flush=True)
    print(f"  genplug graph == eager: {torch.equal(rows[1][3], eager)}; genplug == transformers (greedy tokens): "
          f"{torch.equal(rows[1][3], rows[0][3])}", flush=True)


def main():
    bandwidth = gpu_decode.copy_bandwidth()
    names = sys.argv[1:] or list(FAMILIES)
    for name in names:
        measure(name, FAMILIES[name], bandwidth)
        torch.cuda.empty_cache()  # the last family's model is gone with measure's frame


if __name__ == "__main__":
    main()
