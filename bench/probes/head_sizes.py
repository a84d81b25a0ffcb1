"""The attention kernel's tile fitted to the head size (decode_kernels.attention_config) against the
tile as tuned at head size 64, for heads of 128 (Llama-3-8B-shaped layers) and 256 (Gemma-shaped):
greedy tokens/s at batch 1 and 16 through genplug's native model, same process, and whether the graph
loop equals the eager path. Few layers, so the model builds quickly; the attention's share of a step
is what changes.

Run on the accelerator: python bench/probes/head_sizes.py
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpu_decode  # noqa: E402

import genplug  # noqa: E402
import genplug.graph_loop as graph_loop  # noqa: E402
from genplug.plugins.models.llama import decode_kernels  # noqa: E402
from genplug.plugins.models.llama.config import NativeLlamaConfig  # noqa: E402
from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM  # noqa: E402

SHAPES = {  # head size -> (hidden, heads, kv heads, intermediate)
    128: (4096, 32, 8, 14336),
    256: (2048, 8, 4, 8192),
}


def model_with_heads(head_dim: int, layers: int = 4):
    hidden, heads, kv_heads, inter = SHAPES[head_dim]
    config = NativeLlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                               num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                               vocab_size=32000, max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = NativeLlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.store_for_gpu_decode()
    return model


def main():
    fitted = decode_kernels.ATTENTION_TUNED_HEAD_DIM
    for head_dim in SHAPES:
        model = model_with_heads(head_dim)
        for batch in (1, 16):
            ids = torch.randint(3, 32000, (batch, gpu_decode.PROMPT), device="cuda")

            def run(model=model, ids=ids, **extra):
                return genplug.generate(model, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                        eos_token_id=None, **extra)

            for name, tuned_at in (("tile fitted to the head", fitted), ("tile as tuned at 64", 10**9)):
                decode_kernels.ATTENTION_TUNED_HEAD_DIM = tuned_at
                graph_loop.release(model)
                eager = run(disable_compile=True)
                run()
                best = min(gpu_decode.timed(run)[0] for _ in range(3))
                config = decode_kernels.attention_config(batch, SHAPES[head_dim][1] // SHAPES[head_dim][2], head_dim)
                print(f"head {head_dim} batch {batch:2d} {name:24} {config}: {batch * gpu_decode.NEW / best:9.1f} "
                      f"tokens/s; graph == eager {torch.equal(run(), eager)}", flush=True)
        decode_kernels.ATTENTION_TUNED_HEAD_DIM = fitted
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
