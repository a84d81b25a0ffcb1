"""Host time of the per-call steps around a CUDA-graph generate call that do not depend on the model's size:
the weights' key that decides whether a kept graph may replay (``graph_loop.parameters_key``, twice a
call), a static cache's reset before reuse, the token ids' range check and the generation config's
resolution, and for a transformers model the native twin's checks and its generation config's conversion
-- each against the form it replaced, in the same process. On an H100 a 2-token call of the 1B model took 7.40 ms of which the GPU
ran 3.62 (bench/probes/call_overhead.py): host time while the GPU waits is a call's fixed cost.

Run: python bench/call_host_time.py [--device cuda] [--layers 16]
"""
import argparse
import tempfile
import time

import torch

import genplug
from genplug import graph_loop
from genplug.inputs import check_token_ids
from genplug.plugins.caches.static import StaticCache
from genplug.plugins.transformers.adapter import _genplug_generation_config
from genplug.plugins.transformers.native_twin import modules_and_parameters, twin_or_reason


def per_call_us(fn, repeats: int = 300) -> float:
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e6


def walk_parameters_key(model):  # the form before 2026-12-06
    return tuple((id(p), p.data_ptr(), p.dtype, str(p.device)) for p in model.parameters())


def layer_by_layer_reset(cache):  # the form before 2026-12-06: three or four fills a layer
    for layer in cache.layers:
        if layer.keys is not None:
            layer.keys.zero_()
            layer.values.zero_()
            layer.position.zero_()
        layer.seen = 0


def two_reads_check(ids, vocab_size):  # the form before 2026-12-06
    low, high = int(ids.min()), int(ids.max())
    assert 0 <= low and high < vocab_size


def three_validations_resolved(config, model_config):  # the form before 2026-12-06: update() validates each fill
    import copy

    from genplug.config.generation_config import _model_settings

    merged = copy.deepcopy(config)
    merged.update(**_model_settings(model_config), defaults_only=True, allow_custom_entries=True)
    merged.update(**config.default_values(), defaults_only=True)
    merged.validate()
    return merged


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()
    import transformers

    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=args.layers,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
    directory = tempfile.mkdtemp()
    theirs = transformers.LlamaForCausalLM(config).eval().to(args.device)
    theirs.save_pretrained(directory)
    model, _ = genplug.load_model(directory, device=args.device)
    cache = StaticCache(model.config, 384)
    ids = torch.randint(3, 900, (1, 128), device=args.device)
    with torch.no_grad():
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    settings = genplug.GenerationConfig(max_new_tokens=5)
    rows = [
        ("weights' key (parameters_key)", lambda: graph_loop.parameters_key(model), lambda: walk_parameters_key(model)),
        ("static cache reset", cache.reset, lambda: layer_by_layer_reset(cache)),
        ("token ids' range check", lambda: check_token_ids(ids, "input_ids", 1000), lambda: two_reads_check(ids, 1000)),
        ("config resolution", lambda: settings.resolved(model.generation_config),
         lambda: three_validations_resolved(settings, model.generation_config)),
        # a transformers model (its native twin's checks walk the modules and parameters every call)
        ("twin checks' walk", lambda: modules_and_parameters(theirs),
         lambda: (list(theirs.modules()), list(theirs.parameters()))),
        ("twin checks (twin_or_reason)", lambda: twin_or_reason(theirs), None),
        ("generation config conversion", lambda: _genplug_generation_config(theirs.generation_config),
         lambda: genplug.GenerationConfig.from_dict(theirs.generation_config.to_dict())),
    ]
    print(f"{args.layers} layers on {args.device}; us per call (genplug now / the form before / ratio)")
    for name, now, before in rows:
        a = per_call_us(now)
        if before is None:
            print(f"  {name:40} {a:8.1f}")
            continue
        b = per_call_us(before)
        print(f"  {name:40} {a:8.1f} {b:8.1f} {a / b:6.2f}x")


if __name__ == "__main__":
    main()
