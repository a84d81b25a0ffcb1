"""CPU decode-step forward time of genplug's native Llama against transformers' on the same checkpoint.

For each shape, one random checkpoint is written by transformers' ``save_pretrained`` and loaded by
both implementations (fp32, 1 thread). A 128-token prompt is prefilled into each one's dynamic cache,
then decode steps (batch 1, one token each, logits for that token only) are timed with the thread's
CPU time (``time.thread_time``: with one thread that is all the work, and other processes on a shared
machine distort it less than wall time). The printed ratio is native / transformers (lower is
better; the target is <= 0.7). The ~100M shape reads ~400 MB of fp32 weights per token, so both
implementations are bound by memory bandwidth there and the ratio is mostly the weight layout.

    python bench/native_forward.py [--steps 32] [--repeats 7] [--shapes tiny,100m]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

SHAPES = {
    # the embedded default model's shape
    "tiny": dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    # a ~100M-parameter Llama (tied embeddings)
    "100m": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=4, tie_word_embeddings=True),
}
CONTEXT = 128


def build_pair(shape):
    from transformers import LlamaConfig, LlamaForCausalLM

    from genplug.plugins.models.llama.loader import load_model

    torch.manual_seed(0)
    reference = LlamaForCausalLM(LlamaConfig(max_position_embeddings=1024, **shape)).eval()
    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        native, _ = load_model(directory)
    return native, reference


def time_decode(model, prompt, steps, repeats):
    """Median CPU seconds per decode step over ``repeats`` runs of ``steps`` steps after a fresh prefill."""
    per_step = []
    for _ in range(repeats + 1):  # the first run warms up
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.thread_time()
        for _ in range(steps):
            out = model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1:].argmax(-1)
        per_step.append((time.thread_time() - start) / steps)
    return statistics.median(per_step[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", default="tiny,100m")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, fp32, batch 1, {CONTEXT} cached tokens, {args.steps} steps x {args.repeats}")
    print(f"{'shape':<8}{'params':>10}{'native ms':>12}{'transformers ms':>18}{'ratio':>8}")
    for name in args.shapes.split(","):
        native, reference = build_pair(SHAPES[name])
        params = sum(p.numel() for p in native.parameters())
        prompt = torch.randint(0, SHAPES[name]["vocab_size"], (1, CONTEXT))
        with torch.inference_mode():
            # alternate to share any drift in machine load between the two
            times = {"native": [], "transformers": []}
            for _ in range(3):
                times["native"].append(time_decode(native, prompt, args.steps, args.repeats))
                times["transformers"].append(time_decode(reference, prompt, args.steps, args.repeats))
        ours, theirs = min(times["native"]), min(times["transformers"])
        print(f"{name:<8}{params / 1e6:>9.1f}M{ours * 1e3:>12.3f}{theirs * 1e3:>18.3f}{ours / theirs:>8.2f}")


if __name__ == "__main__":
    main()
