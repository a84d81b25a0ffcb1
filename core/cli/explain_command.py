"""``genplug explain``: what a config resolves to -- strategy, processors in order, criteria, cache,
and whether the CUDA-graph decode loop can take it.

This makes visible what transformers decides inside ``get_generation_mode`` and
``_get_logits_processor``, with the plugin that provides each piece.
"""

from __future__ import annotations

import json

from .options import add_config_options, load_config, parse_sets


def register(sub) -> None:
    parser = sub.add_parser("explain", help="show the strategy, processors, criteria and cache a config resolves to")
    add_config_options(parser)
    parser.add_argument("--vocab-size", type=int, default=32000, help="vocabulary size assumed for the explanation")
    parser.add_argument("--prompt-length", type=int, default=8, help="prompt length assumed for the explanation")
    parser.add_argument("--fields", action="store_true", help="also list plugin-owned config fields")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def explain(config, vocab_size: int = 32000, prompt_length: int = 8, pm=None) -> dict:
    """The explanation as a dict (also used by tests)."""
    import torch

    from genplug.pipeline import build_logits_processors, build_stopping_criteria
    from genplug.plugin_manager import get_plugin_manager
    from genplug.processing import BuildContext

    pm = pm or get_plugin_manager()
    resolved = config.resolved()
    strategy, chooser = None, None
    for impl in reversed(pm.hook.genplug_resolve_strategy.get_hookimpls()):
        strategy = impl.function(generation_config=resolved, assistant_model=None)
        if strategy is not None:
            chooser = pm._provider(impl.plugin_name)
            break
    strategy_entry = pm.registries.strategies.lookup(strategy) if strategy else None
    resolved.max_length = (resolved.max_new_tokens or resolved.max_length) + prompt_length
    eos = resolved.eos_token_id
    eos_ids = None if eos is None else torch.tensor([eos] if isinstance(eos, int) else list(eos))
    context = BuildContext(input_ids=torch.zeros((1, prompt_length), dtype=torch.long), vocab_size=vocab_size,
                           device=torch.device("cpu"), eos_token_ids=eos_ids, pad_token_id=resolved.pad_token_id,
                           bos_token_id=resolved.bos_token_id, num_beams=resolved.num_beams or 1,
                           strategy=strategy or "")
    processors, providers = build_logits_processors(pm.registries.logits_processors, resolved, context)
    criteria, criteria_providers = build_stopping_criteria(pm.registries.stopping_criteria, resolved, context)
    cache_name = resolved.cache_implementation or "dynamic"
    cache_entry = pm.registries.cache_backends.get(cache_name)
    return {
        **_graph_loop(strategy, processors, criteria, resolved, cache_entry),
        "strategy": strategy,
        "chosen_by": chooser,
        "strategy_provider": strategy_entry.provider if strategy_entry else None,
        "processors": [{"class": type(p).__name__, "provider": prov,
                        "argmax_invariant": bool(getattr(p, "argmax_invariant", False)),
                        "compile_safe": bool(getattr(p, "compile_safe", False)),
                        "history_use": getattr(p, "history_use", "sequence")}
                       for p, prov in zip(processors, providers)],
        "stopping_criteria": [{"class": type(c).__name__, "provider": prov} for c, prov in zip(criteria, criteria_providers)],
        "cache": {"backend": cache_name, "provider": cache_entry.provider if cache_entry else None,
                  "capabilities": sorted(cache_entry.options.get("capabilities", ())) if cache_entry else []},
        "plugin_fields": {name: {"default": e.obj.default, "help": e.obj.help, "provider": e.provider}
                          for name, e in pm.registries.config_fields.items()},
    }


def _graph_loop(strategy, processors, criteria, config, cache_entry) -> dict:
    """Whether a call with these settings would decode in the CUDA-graph loop (``core/graph_loop.py``),
    as far as the settings decide it: on CUDA, with a model that offers a static decode step."""
    from genplug.graph_loop import pipeline_refusal

    if strategy not in ("greedy_search", "sample"):  # the strategies that run core/loop.py
        reason = f"strategy {strategy!r} runs its own loop"
    elif cache_entry is None or "static_shape" not in cache_entry.options.get("capabilities", ()):
        reason = "the cache is not static (cache_implementation='static')"
    else:
        reason = pipeline_refusal(processors, criteria, config)
    return {"cuda_graph_decode": {"possible": reason is None, "reason": reason},
            "cuda_graph_forward": _graphed_forward(strategy, config, cache_entry, reason)}


def _graphed_forward(strategy, config, cache_entry, whole_step_refusal) -> dict:
    """Whether the eager loop would replay its one-token forward from a CUDA graph (``core/graphed_forward.py``)
    -- for calls the whole-step graph refuses -- as far as the settings decide it."""
    if whole_step_refusal is None:
        reason = "the whole step runs as a CUDA graph"
    elif strategy not in ("greedy_search", "sample", "beam_search", "beam_sample", "group_beam_search",
                          "constrained_beam_search"):
        reason = f"strategy {strategy!r} runs its own forwards"
    elif cache_entry is None or "static_shape" not in cache_entry.options.get("capabilities", ()):
        reason = "the cache is not static (cache_implementation='static')"
    elif getattr(config, "disable_compile", None):
        reason = "disable_compile=True"
    elif config.return_dict_in_generate and (config.output_attentions or config.output_hidden_states):
        reason = "per-step attentions or hidden states were requested"
    else:
        reason = None
    return {"possible": reason is None, "reason": reason}


def run(args) -> int:
    config = load_config(args.config, parse_sets(args.set))
    report = explain(config, args.vocab_size, args.prompt_length)
    if not args.fields:
        report.pop("plugin_fields")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]strategy[/]: {report['strategy']}  (chosen by {report['chosen_by']}; "
                  f"provided by {report['strategy_provider']})", highlight=False)
    table = Table(title="logits processors, in the order they run")
    for column in ("#", "processor", "provider", "argmax-invariant", "compile-safe", "history"):
        table.add_column(column)
    for i, p in enumerate(report["processors"]):
        table.add_row(str(i), p["class"], p["provider"], str(p["argmax_invariant"]), str(p["compile_safe"]),
                      p["history_use"])
    console.print(table)
    criteria = ", ".join(f"{c['class']} ({c['provider']})" for c in report["stopping_criteria"]) or "-"
    console.print(f"[bold]stopping criteria[/]: {criteria}", highlight=False)
    cache = report["cache"]
    console.print(f"[bold]cache[/]: {cache['backend']} ({cache['provider']}), capabilities: "
                  f"{', '.join(cache['capabilities']) or '-'}", highlight=False)
    graph = report["cuda_graph_decode"]
    verdict = ("yes, on CUDA (native and transformers decoder-only models)" if graph["possible"]
               else f"no: {graph['reason']}")
    console.print(f"[bold]CUDA-graph decode loop[/]: {verdict}", highlight=False)
    if not graph["possible"]:
        forward = report["cuda_graph_forward"]
        verdict = ("yes, on CUDA: the eager loop replays the model's forward from a graph" if forward["possible"]
                   else f"no: {forward['reason']}")
        console.print(f"[bold]CUDA-graph forward[/]: {verdict}", highlight=False)
    if args.fields:
        fields = Table(title="plugin-owned config fields")
        for column in ("field", "default", "provider", "help"):
            fields.add_column(column)
        for name, f in report["plugin_fields"].items():
            fields.add_row(name, repr(f["default"]), f["provider"], f["help"])
        console.print(fields)
    return 0
