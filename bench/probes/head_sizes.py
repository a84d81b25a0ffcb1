"""The attention kernel's tile fitted to the head size (decode_kernels.attention_config) against the
tile as tuned at head size 64, for heads of 128 (Llama-3-8B-shaped layers) and 256 (Gemma-shaped):
greedy tokens/s at batch 1 and 16 through genplug's native model, same process, and whether the graph
loop equals the eager path. Few layers, so the model builds quickly; the attention's share of a step
is what changes.

``--one-row``: batch 1 with heads of 256 only, each program's slots per tile as fitted, doubled and
quadrupled (at most the tuned 32), for 8 query heads over 4 key/value heads and 4 over 1 (Gemma-3-1B's
grouping); the printed config shows the slots per tile.

Run on the accelerator: python bench/probes/head_sizes.py [--one-row]
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


def model_with_heads(head_dim: int, layers: int = 4, heads=None):
    hidden, heads_, kv_heads, inter = SHAPES[head_dim]
    heads, kv_heads = heads or (heads_, kv_heads)
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
    if "--one-row" in sys.argv[1:]:  # batch 1, heads of 256: block_s as fitted, then x2 and x4 (at most the tuned 32)
        sweep = [(256, 1, [(f"block_s fitted as if tuned at {t}", t) for t in (64, 128, 256)], (8, 4)),
                 (256, 1, [(f"block_s fitted as if tuned at {t}", t) for t in (64, 128, 256)], (4, 1))]
    else:
        sweep = [(head_dim, batch, [("tile fitted to the head", fitted), ("tile as tuned at 64", 10**9)], None)
                 for head_dim in SHAPES for batch in (1, 16)]
    for head_dim, batch, variants, heads in sweep:
        model = model_with_heads(head_dim, heads=heads)
        n_heads, n_kv = heads or SHAPES[head_dim][1:3]
        ids = torch.randint(3, 32000, (batch, gpu_decode.PROMPT), device="cuda")

        def run(model=model, ids=ids, **extra):
            return genplug.generate(model, ids, cache_implementation="static", max_new_tokens=gpu_decode.NEW,
                                    eos_token_id=None, **extra)

        for name, tuned_at in variants:
            decode_kernels.ATTENTION_TUNED_HEAD_DIM = tuned_at
            graph_loop.release(model)
            eager = run(disable_compile=True)
            run()
            best = min(gpu_decode.timed(run)[0] for _ in range(3))
            config = decode_kernels.attention_config(batch, n_heads // n_kv, head_dim)
            print(f"head {head_dim} ({n_heads}/{n_kv} heads) batch {batch:2d} {name:32} {config}: "
                  f"{batch * gpu_decode.NEW / best:9.1f} tokens/s; graph == eager {torch.equal(run(), eager)}", flush=True)
        decode_kernels.ATTENTION_TUNED_HEAD_DIM = fitted
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
