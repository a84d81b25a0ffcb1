"""CPU cost per decode step of genplug vs transformers' own ``generate``, on the same transformers model.

The model is a tiny random Llama (hidden size 32, 2 layers), so the forward is cheap and what the
generation loop does around it -- input preparation, processors, stopping checks, bookkeeping --
shows. Both libraries run in this process, on one thread, for 256 new tokens with an EOS id set and
``min_new_tokens=256`` (so the EOS machinery is active but every run has the same length). Reported:

* ms per step (median of several runs after a warm-up) and the ratio genplug / transformers, for
  greedy search and for sampling with temperature, top-k, top-p and a repetition penalty;
* genplug twice: as users get it (``native_kernels=True``: a stock transformers Llama runs on
  genplug's native kernels over its own weights) and with ``native_kernels=False`` (the transformers
  forward, so only the loops differ);
* "loop overhead": generate time minus the time of the same number of bare transformers forwards
  through the same kind of cache, i.e. what the loop itself costs per step (native_kernels=False).

Targets: ratio <= 0.8 for greedy, <= 0.6 for sampling. ``--profile`` prints what dominates genplug's
loop (cProfile). ``--family qwen3`` measures a tiny Qwen3 instead (per-head q/k norms); ``gemma``,
``gemma2`` (eager attention with soft-capped scores, final logit soft-capping, 4 norms per layer) and
``gemma3`` (q/k norms, a local RoPE on its sliding layers) the Gemmas, with a sliding layer whose 64-token
window the generation outgrows; ``phi3`` a Phi-4-mini-shaped Phi-3 (fused q/k/v and gate/up, 3/4 of each
head rotated, LongRoPE with scaled cos/sin; the 272 positions stay within its original 4096, as transformers'
generate re-prefills at that crossing and genplug does not); ``mamba`` and ``jamba`` models with recurrent
state, which run on transformers' own cache in both libraries (no native kernels: both genplug columns run
the transformers forward).
Run: ``python bench/hf_loop_overhead.py [--runs 7] [--profile] [--family llama|qwen3|gemma|gemma2|gemma3|phi3|mamba|jamba]``.
"""

from __future__ import annotations

import argparse
import inspect
import cProfile
import io
import pstats
import statistics
import time
import warnings

import torch

NEW_TOKENS = 256
PROMPT_LENGTH = 16
EOS = 2
TARGETS = {"greedy": 0.8, "sampling": 0.6}
MODES = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.9, repetition_penalty=1.2),
}


def build_model(family: str = "llama"):
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=128, eos_token_id=EOS, bos_token_id=1)
    if family == "qwen3":
        return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=8, **shape)).eval()
    if family == "gemma":
        return transformers.GemmaForCausalLM(transformers.GemmaConfig(head_dim=8, **shape)).eval()
    if family == "gemma2":  # layer 0 slides over 64 tokens, layer 1 attends to everything
        return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(head_dim=8, sliding_window=64, **shape)).eval()
    if family == "gemma3":
        return transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(
            head_dim=8, sliding_window=64, layer_types=["sliding_attention", "full_attention"], **shape)).eval()
    if family == "phi3":
        return transformers.Phi3ForCausalLM(transformers.Phi3Config(
            pad_token_id=0, max_position_embeddings=131072, original_max_position_embeddings=4096,
            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                             "short_factor": [1.0, 1.2, 1.5], "long_factor": [2.0, 8.0, 30.0]},  # a factor per rotated pair
            **shape)).eval()
    if family == "mamba":
        return transformers.MambaForCausalLM(transformers.MambaConfig(
            hidden_size=32, num_hidden_layers=2, state_size=4, vocab_size=128, eos_token_id=EOS, bos_token_id=1)).eval()
    if family == "jamba":  # a Mamba layer, then an attention layer with experts
        return transformers.JambaForCausalLM(transformers.JambaConfig(
            attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1, num_experts=2,
            mamba_d_state=4, **shape)).eval()
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape)).eval()


def call_kwargs(mode):
    return dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, eos_token_id=EOS, pad_token_id=0, **MODES[mode])


def run_genplug(model, ids, mode, native_kernels=True):
    import genplug

    torch.manual_seed(0)
    return genplug.generate(model, ids, native_kernels=native_kernels, **call_kwargs(mode))


def run_transformers(model, ids, mode):
    torch.manual_seed(0)
    return model.generate(ids, **call_kwargs(mode))


def bare_forwards(model, ids, make_cache):
    """Prefill plus NEW_TOKENS - 1 one-token forwards through a cache: the model work of one generate."""
    cache = make_cache()
    name = "cache_params" if "cache_params" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{name: cache})
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(NEW_TOKENS - 1):
            out = model(input_ids=token, use_cache=True, logits_to_keep=1, **{name: cache})
            token = out.logits[:, -1].argmax(-1, keepdim=True)


def median_seconds(functions, runs):
    """``{name: median seconds}``; the functions run interleaved, round after round, so a change in
    the machine's load affects them all alike (one warm-up round first)."""
    times = {name: [] for name in functions}
    for round_index in range(runs + 1):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if round_index:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per measurement (median reported)")
    parser.add_argument("--profile", action="store_true", help="cProfile genplug's sampling run")
    parser.add_argument("--family", choices=("llama", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "mamba", "jamba"),
                        default="llama")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)

    import transformers

    from genplug.plugins.caches.dynamic import DynamicCache as GenplugDynamicCache
    from genplug.plugins.transformers.adapter import TransformersAdapter

    model = build_model(args.family)
    recurrent = args.family in ("mamba", "jamba")  # genplug's key/value caches cannot hold their state
    ids = torch.randint(4, 128, (1, PROMPT_LENGTH), generator=torch.Generator().manual_seed(0))
    for mode in MODES:  # the two libraries must agree before their speed means anything
        assert torch.equal(run_genplug(model, ids, mode), run_transformers(model, ids, mode)), mode
        assert torch.equal(run_genplug(model, ids, mode, False), run_transformers(model, ids, mode)), mode

    measured = median_seconds({
        "bare transformers": lambda: bare_forwards(model, ids, lambda: transformers.DynamicCache(config=model.config)),
        # genplug's cache as genplug hands it to the model (a transformers view for Gemma 2/3's layer mix)
        "bare genplug": lambda: bare_forwards(model, ids, lambda: (
            transformers.DynamicCache(config=model.config) if recurrent
            else TransformersAdapter(model).cache_for_model(GenplugDynamicCache(model.config)))),
        **{f"{mode} transformers": (lambda mode=mode: run_transformers(model, ids, mode)) for mode in MODES},
        **{f"{mode} genplug": (lambda mode=mode: run_genplug(model, ids, mode)) for mode in MODES},
        **{f"{mode} genplug hf-forward": (lambda mode=mode: run_genplug(model, ids, mode, False)) for mode in MODES},
    }, args.runs)
    per_step = {name: 1e3 * seconds / NEW_TOKENS for name, seconds in measured.items()}  # ms per step
    print(f"tiny transformers {args.family}, 1 thread, {NEW_TOKENS} new tokens, prompt {PROMPT_LENGTH}, "
          f"median of {args.runs} interleaved runs, ms per step; torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"bare forwards: transformers' DynamicCache {per_step['bare transformers']:.3f}, "
          f"genplug's dynamic cache {per_step['bare genplug']:.3f}")
    print("genplug runs the model on its native kernels over the model's own weights (native_kernels, the "
          "default); 'hf-forward' is native_kernels=False: the transformers forward, so only the loops differ")
    print(f"{'mode':<9} {'transformers':>12} {'genplug':>8} {'ratio':>6} {'target':>7}         "
          f"{'hf-forward':>10} {'ratio':>6}   {'loop overhead: transformers':>27} {'genplug hf-forward':>18}")
    for mode, target in TARGETS.items():
        theirs, ours = per_step[f"{mode} transformers"], per_step[f"{mode} genplug"]
        same_forward = per_step[f"{mode} genplug hf-forward"]
        ratio = ours / theirs
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{mode:<9} {theirs:>12.3f} {ours:>8.3f} {ratio:>6.2f} {'<= ' + str(target):>7} {verdict:<6} "
              f"{same_forward:>11.3f} {same_forward / theirs:>6.2f}   "
              f"{theirs - per_step['bare transformers']:>27.3f} {same_forward - per_step['bare genplug']:>18.3f}")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(3):
            run_genplug(model, ids, "sampling")
        profiler.disable()
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(25)
        print(stream.getvalue())


if __name__ == "__main__":
    main()
