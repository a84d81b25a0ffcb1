"""Assisted decoding on the CPU: genplug vs transformers' own ``generate`` on the same model and inputs.

A random transformers Llama (hidden 256, 4 layers, vocab 2048; one thread) continues a prompt that
repeats itself, greedily, 128 new tokens: plain greedy, prompt lookup (10 candidates), and a draft
model (a 1-layer Llama of the same vocabulary, 5 candidates). Both libraries must return plain greedy's
tokens; the table gives ms per new token (median of runs after a warm-up) and genplug / transformers.

``--batch N`` (N > 1) runs N different such prompts at once. transformers refuses assisted decoding for
batches, so its column is then its plain batched greedy search -- what a transformers user gets -- and
ms are per new token of the whole batch.

    python bench/assisted.py [--runs 5] [--batch 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch


def llama(layers: int, hidden: int, seed: int):
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=2048,
                                      max_position_embeddings=1024)
    return transformers.LlamaForCausalLM(config).eval()


def median_ms_per_token(fn, runs: int, new_tokens: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / new_tokens


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    import transformers

    import genplug

    transformers.logging.set_verbosity_error()
    model, draft = llama(4, 256, 0), llama(1, 64, 1)
    half = torch.randint(4, 2048, (args.batch, 48), generator=torch.Generator().manual_seed(0))
    ids = torch.cat((half, half, half), dim=1)
    batched = args.batch > 1
    new = args.new_tokens
    common = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False)
    modes = {"plain greedy": {}, "prompt lookup (10)": dict(prompt_lookup_num_tokens=10),
             "draft model (5)": dict(assistant_model=draft, num_assistant_tokens=5)}
    reference = genplug.generate(model, ids, **common)
    print(f"random Llama 4x256 (vocab 2048), 1 thread, prompt {ids.shape[1]} tokens, {new} new, greedy; "
          f"torch {torch.__version__}, transformers {transformers.__version__}; ms per new token, median of {args.runs}")
    print(f"{'mode':22} {'transformers':>12} {'genplug':>8} {'ratio':>6}")
    if batched:
        print(f"batch of {args.batch}: transformers refuses assisted decoding for batches, so its column is plain greedy")
    for name, extra in modes.items():
        theirs_extra = {} if batched else extra
        ours = genplug.generate(model, ids, **common, **extra)
        theirs = model.generate(ids, **common, **theirs_extra)
        assert torch.equal(ours, reference) and torch.equal(theirs, reference), name
        t_theirs = median_ms_per_token(lambda: model.generate(ids, **common, **theirs_extra), args.runs, new)
        t_ours = median_ms_per_token(lambda: genplug.generate(model, ids, **common, **extra), args.runs, new)
        print(f"{name:22} {t_theirs:12.3f} {t_ours:8.3f} {t_ours / t_theirs:6.2f}", flush=True)


if __name__ == "__main__":
    main()
