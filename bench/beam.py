"""Beam search cost per step beyond the model's forward: genplug vs transformers' own ``generate``.

CPU (always): a tiny random transformers Llama (vocab 128, so the forward is cheap and the decoding
work shows), 4 beams, batch 2, one thread, no EOS (every run takes the same number of steps). Both
libraries run in this process on the same model and inputs and are checked to return the same
sequences. Forward hooks add up the time spent inside the model's forward; what is left is the
decoding overhead: input preparation, log-softmax, top-k over beams x vocab, stopping checks,
finished-hypothesis bookkeeping, cache reordering. Per step means the slope between a short and a
long generation (``--steps`` and 3x that), so each library's one-off set-up per call is not counted;
it is printed apart. The ratio is genplug's per-step overhead / transformers' (target <= 0.5).
Runs alternate between the libraries and the fastest of ``--runs`` is kept, which is what a busy
machine disturbs least.

GPU (when CUDA is available): a 1B-shaped Llama (Llama-3.2-1B dimensions, random bf16 weights), 4
beams, batch 1 and 8. Hooks would add synchronisations there, so the forward share is instead the
time of bare forwards through a DynamicCache with one ``reorder_cache`` per step (the model work of
one beam search); overhead = generate time - that, per step.

    python bench/beam.py [--runs 15] [--steps 32] [--no-gpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

BEAMS = 4
TARGET = 0.5


def transformers_version() -> str:
    import transformers

    return transformers.__version__


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


def overhead(run, clock):
    """Wall time minus forward time of one run, in seconds."""
    clock.total = 0.0
    start = time.perf_counter()
    run()
    return time.perf_counter() - start - clock.total


def cpu_section(runs, steps):
    import genplug

    torch.set_num_threads(1)
    model = tiny_llama()
    ids = torch.randint(4, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    lengths = (steps, 3 * steps)
    for length in lengths:
        kwargs = call_kwargs(length)
        if not torch.equal(genplug.generate(model, ids, **kwargs).sequences, model.generate(ids, **kwargs).sequences):
            print(f"WARNING: genplug and transformers {transformers_version()} return different sequences")
    clock = ForwardClock(model)
    runners = {
        (name, length): (lambda name=name, kwargs=call_kwargs(length): (
            model.generate(ids, **kwargs) if name == "transformers" else genplug.generate(model, ids, **kwargs)))
        for name in ("transformers", "genplug") for length in lengths
    }
    best = {}
    with torch.inference_mode():
        for run in runners.values():  # warm-up
            run()
        for _ in range(runs):  # alternate single runs, so a busy machine slows every variant alike
            for key, run in runners.items():
                best[key] = min(best.get(key, float("inf")), overhead(run, clock))
    per_step = {name: (best[name, lengths[1]] - best[name, lengths[0]]) / (lengths[1] - lengths[0])
                for name in ("transformers", "genplug")}
    set_up = {name: best[name, lengths[0]] - lengths[0] * per_step[name] for name in per_step}
    ratio = per_step["genplug"] / per_step["transformers"]
    print(f"CPU, 1 thread, torch {torch.__version__}, transformers {transformers_version()}, tiny Llama (vocab 128), "
          f"batch 2 x {BEAMS} beams, {lengths[0]} and {lengths[1]} steps, best of {runs} runs")
    print(f"  overhead beyond the forward, ms per step: transformers {1e3 * per_step['transformers']:.3f}, "
          f"genplug {1e3 * per_step['genplug']:.3f}, ratio {ratio:.2f} "
          f"(target <= {TARGET}: {'ok' if ratio <= TARGET else 'MISSED'})")
    print(f"  set-up per call, ms: transformers {1e3 * set_up['transformers']:.2f}, genplug {1e3 * set_up['genplug']:.2f}")


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
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=32)
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
