"""Beam search cost per step beyond the model's forward: genplug vs transformers' own ``generate``.

CPU (always): a tiny random transformers Llama, 4 beams, batch 2, 64 new tokens, one thread, no EOS
(every run takes the same number of steps). Both libraries run in this process on the same model and
inputs and must return the same sequences. Forward hooks add up the time spent inside the model's
forward; what is left, per step, is the decoding overhead: input preparation, log-softmax, top-k over
beams x vocab, stopping checks, finished-hypothesis bookkeeping, cache reordering. The printed ratio
is genplug's overhead / transformers' (target <= 0.5).

GPU (when CUDA is available): a 1B-shaped Llama (Llama-3.2-1B dimensions, random bf16 weights), 4
beams, batch 1 and 8. Hooks would add synchronisations there, so the forward share is instead the
time of bare forwards through a DynamicCache with one ``reorder_cache`` per step (the model work of
one beam search); overhead = generate time - that, per step.

    python bench/beam.py [--runs 7] [--steps 64] [--no-gpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

BEAMS = 4
TARGET = 0.5


def tiny_llama():
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                      max_position_embeddings=512, bos_token_id=1, eos_token_id=2)
    return transformers.LlamaForCausalLM(config).eval()


def one_b_llama(device):
    import transformers

    config = transformers.LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                      max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=1,
                                      eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    return model.eval()


def call_kwargs(steps):
    return dict(num_beams=BEAMS, num_return_sequences=BEAMS, max_new_tokens=steps, eos_token_id=None, pad_token_id=0,
                return_dict_in_generate=True, output_scores=False)


class ForwardClock:
    """Adds up wall time spent inside ``model.forward`` (CPU: the forward is synchronous)."""

    def __init__(self, model):
        self.total = 0.0
        self._start = 0.0
        model.register_forward_pre_hook(self._enter)
        model.register_forward_hook(self._leave)

    def _enter(self, module, args):
        self._start = time.perf_counter()

    def _leave(self, module, args, output):
        self.total += time.perf_counter() - self._start


def overhead_per_step(run, clock, steps, runs):
    """Median over ``runs`` of (wall time - forward time) / steps, after one warm-up run."""
    run()
    samples = []
    for _ in range(runs):
        clock.total = 0.0
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start - clock.total) / steps)
    return statistics.median(samples)


def cpu_section(runs, steps):
    import genplug

    torch.set_num_threads(1)
    model = tiny_llama()
    ids = torch.randint(4, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    kwargs = call_kwargs(steps)
    ours = genplug.generate(model, ids, **kwargs)
    theirs = model.generate(ids, **kwargs)
    assert torch.equal(ours.sequences, theirs.sequences), "genplug and transformers disagree"
    clock = ForwardClock(model)
    with torch.inference_mode():
        results = {"transformers": [], "genplug": []}
        for _ in range(3):  # alternate, so drifting machine load hits both
            results["transformers"].append(
                overhead_per_step(lambda: model.generate(ids, **kwargs), clock, steps, runs))
            results["genplug"].append(
                overhead_per_step(lambda: genplug.generate(model, ids, **kwargs), clock, steps, runs))
    theirs_ms, ours_ms = 1e3 * min(results["transformers"]), 1e3 * min(results["genplug"])
    ratio = ours_ms / theirs_ms
    print(f"CPU, 1 thread, tiny Llama (vocab 128), batch 2 x {BEAMS} beams, {steps} steps, median of {runs}")
    print(f"  overhead beyond the forward, ms/step: transformers {theirs_ms:.3f}, genplug {ours_ms:.3f}, "
          f"ratio {ratio:.2f} (target <= {TARGET}: {'ok' if ratio <= TARGET else 'MISSED'})")


def bare_beam_forwards(model, ids, steps):
    """Prefill, then ``steps - 1`` one-token forwards of every beam row with a reorder each step."""
    from transformers import DynamicCache

    rows = ids.shape[0] * BEAMS
    expanded = ids.repeat_interleave(BEAMS, dim=0)
    cache = DynamicCache(config=model.config)
    order = torch.arange(rows, device=ids.device).flip(0)
    out = model(input_ids=expanded, past_key_values=cache, use_cache=True, logits_to_keep=1)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps - 1):
        cache.reorder_cache(order)
        out = model(input_ids=token, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)


def gpu_seconds(function, runs):
    function()
    torch.cuda.synchronize()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def gpu_section(runs, steps):
    import genplug

    device = torch.device("cuda")
    model = one_b_llama(device)
    kwargs = call_kwargs(steps)
    print(f"GPU {torch.cuda.get_device_name()}, 1B-shaped Llama bf16, {BEAMS} beams, {steps} steps, median of {runs}")
    print(f"  {'batch':>5} {'forward ms':>11} {'transformers ms':>16} {'genplug ms':>11} "
          f"{'overhead: transformers':>23} {'genplug':>8} {'ratio':>6}")
    for batch in (1, 8):
        ids = torch.randint(4, 32000, (batch, 32), generator=torch.Generator().manual_seed(batch)).to(device)
        with torch.inference_mode():
            ours = genplug.generate(model, ids, **kwargs)
            theirs = model.generate(ids, **kwargs)
            agree = torch.equal(ours.sequences, theirs.sequences)
            bare = gpu_seconds(lambda: bare_beam_forwards(model, ids, steps), runs) / steps
            theirs_s = gpu_seconds(lambda: model.generate(ids, **kwargs), runs) / steps
            ours_s = gpu_seconds(lambda: genplug.generate(model, ids, **kwargs), runs) / steps
        ratio = (ours_s - bare) / (theirs_s - bare) if theirs_s > bare else float("nan")
        print(f"  {batch:>5} {1e3 * bare:>11.3f} {1e3 * theirs_s:>16.3f} {1e3 * ours_s:>11.3f} "
              f"{1e3 * (theirs_s - bare):>23.3f} {1e3 * (ours_s - bare):>8.3f} {ratio:>6.2f}"
              f"{'' if agree else '  (outputs differ: bf16 ties)'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--no-gpu", action="store_true")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    cpu_section(args.runs, args.steps)
    if torch.cuda.is_available() and not args.no_gpu:
        gpu_section(args.runs, args.steps)


if __name__ == "__main__":
    main()
