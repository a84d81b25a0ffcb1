"""``genplug.generate``: prepare one call, assemble its pipeline, hand it to the chosen strategy.

Set-up only: every plugin lookup happens here, once per call. The strategies run the token loop
with the plain objects built here.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any, Callable, Dict, Optional

import torch

from . import inputs as prep
from .cache import CacheRequest
from .errors import GenerationConfigError, GenerationInputError, PluginError, did_you_mean
from .kept import KeptByIdentity
from .models import ModelAdapter
from .pipeline import build_logits_processors, build_stopping_criteria
from .plugin_manager import get_plugin_manager, use_plugin_manager
from .processing import BuildContext

# generate() arguments that are not config fields and never reach the model.
_CALL_ONLY = ("tokenizer", "assistant_tokenizer", "trust_remote_code", "use_model_defaults", "plugin_manager")
# model arguments the core itself fills or consumes, whatever the forward signature says.
_ALWAYS_ACCEPTED = {"attention_mask", "past_key_values", "use_cache", "encoder_outputs", "decoder_input_ids",
                    "decoder_attention_mask", "input_ids", "inputs_embeds", "position_ids", "output_attentions",
                    "output_hidden_states"}


def generate(model, inputs: Optional[torch.Tensor] = None, generation_config=None, logits_processor=None,
             stopping_criteria=None, prefix_allowed_tokens_fn: Optional[Callable] = None,
             synced_gpus: Optional[bool] = None, assistant_model=None, streamer=None,
             negative_prompt_ids: Optional[torch.Tensor] = None,
             negative_prompt_attention_mask: Optional[torch.Tensor] = None,
             custom_generate=None, **kwargs: Any):
    """Generate token ids with ``model``, as transformers' ``model.generate(...)`` does.

    Keyword arguments are generation-config fields (built-in or plugin-owned) or model arguments;
    anything else raises with a suggestion. ``plugin_manager=`` runs the call with an isolated
    plugin manager; ``tokenizer=`` is needed for stop strings and token healing;
    ``trust_remote_code=True`` is needed for a ``custom_generate`` repository.
    """
    with use_plugin_manager(kwargs.pop("plugin_manager", None)) as pm, torch.no_grad():
        call = dict(inputs=inputs, generation_config=generation_config, logits_processor=logits_processor,
                    stopping_criteria=stopping_criteria, prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                    synced_gpus=synced_gpus, assistant_model=assistant_model, streamer=streamer,
                    negative_prompt_ids=negative_prompt_ids,
                    negative_prompt_attention_mask=negative_prompt_attention_mask)
        if isinstance(custom_generate, str):
            return _run_custom_repository(pm, model, custom_generate, call, kwargs)
        if custom_generate is not None and not callable(custom_generate):
            raise GenerationInputError(
                f"custom_generate={custom_generate!r} must be a callable, a local directory or a hub repository id"
            )
        return _generate(pm, model, custom_generate, call, kwargs)


_HUB_OPTIONS = ("revision", "token", "cache_dir", "local_files_only", "force_download")


def _run_custom_repository(pm, model, spec: str, call: Dict[str, Any], kwargs: Dict[str, Any]):
    trust = kwargs.pop("trust_remote_code", None)
    # the call's Hub options are for fetching the repository (as in transformers), not for the function
    hub_options = {k: kwargs.pop(k) for k in _HUB_OPTIONS if k in kwargs}
    loaded = pm.hook.genplug_load_custom_generate(spec=spec, trust_remote_code=trust, hub_options=hub_options)
    if loaded is None:
        raise PluginError(f"no plugin could load custom_generate={spec!r}")
    function, hook_module = loaded
    if hook_module is not None:  # the repository's own hook implementations count for this call only
        name = f"custom_generate:{spec}"
        pm.register(hook_module, name=name)
        try:
            return function(model=model, **call, **kwargs)
        finally:
            pm.unregister(name=name)
    return function(model=model, **call, **kwargs)


# Decoding modes transformers 5 moved out of its core into hub repositories, loaded as custom_generate.
HUB_STRATEGIES = {"contrastive_search": "transformers-community/contrastive-search",
                  "dola_generation": "transformers-community/dola"}


def _generate(pm, model, custom_callable, call, kwargs):
    from .config import GenerationConfig

    as_given = dict(kwargs)  # for a hand-over to a hub strategy
    adapter: ModelAdapter = pm.hook.genplug_adapt_model(model=model)
    tokenizer = kwargs.pop("tokenizer", None)
    assistant_tokenizer = kwargs.pop("assistant_tokenizer", None)
    trust_remote_code = kwargs.pop("trust_remote_code", None)
    use_model_defaults = kwargs.pop("use_model_defaults", True)

    # ---- configuration: passed config, then the model's defaults, then global defaults, then kwargs
    passed = call["generation_config"]
    if passed is not None and not isinstance(passed, GenerationConfig):
        raise GenerationInputError(
            f"generation_config must be a genplug.GenerationConfig, got {type(passed).__name__}; "
            "load a transformers config with GenerationConfig.from_dict(cfg.to_dict())"
        )
    model_defaults = _model_generation_defaults(adapter) if use_model_defaults is not False else None
    kwargs_max_length = kwargs.get("max_length")
    has_default_max_length = (kwargs_max_length is None
                              and (passed is None or passed.max_length is None)
                              and (model_defaults is None or model_defaults.max_length is None))
    if passed is not None:
        base = copy.deepcopy(passed)
    else:  # an empty config needs no validation of its own: resolved() validates the merge
        base = GenerationConfig._from_values({}, custom_ok=False, validate=False)
    config = base.resolved(model_defaults)
    field_names = _config_field_names(pm)
    config_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in field_names}
    extra_custom = _custom_generate_extras(custom_callable, kwargs)
    config.update(**config_kwargs)  # validates (once: a second validate() would repeat its warnings)
    adapter.configure(config)
    model_kwargs = kwargs
    if "cache" in model_kwargs:  # transformers >= 5.24 names the cache argument `cache`
        if model_kwargs.get("past_key_values") is not None:
            raise GenerationInputError("both cache and past_key_values were given; they are the same argument")
        model_kwargs["past_key_values"] = model_kwargs.pop("cache")
    _check_model_kwargs(adapter, model_kwargs, field_names)

    # ---- strategy
    strategy_entry = None
    if custom_callable is None:
        strategy_name = pm.hook.genplug_resolve_strategy(generation_config=config, assistant_model=call["assistant_model"])
        if strategy_name in HUB_STRATEGIES and strategy_name not in pm.registries.strategies:
            repository = HUB_STRATEGIES[strategy_name]
            if not trust_remote_code:
                raise GenerationInputError(
                    f"{strategy_name} is not part of genplug's (or transformers 5's) core: it lives in the hub "
                    f"repository {repository}; pass custom_generate={repository!r}, trust_remote_code=True to run "
                    "its code (or install a genplug plugin that registers the strategy)")
            return _run_custom_repository(pm, model, repository, call, {**as_given, "trust_remote_code": True})
        strategy_entry = pm.registries.strategies.lookup(strategy_name, asked_by="the generation config")
    else:
        strategy_name = "custom_generate"

    # ---- inputs
    input_ids, model_kwargs = _main_inputs(adapter, call["inputs"], model_kwargs, config)
    eos = prep.as_id_list(config.eos_token_id, "eos_token_id")
    batch = input_ids.shape[0]
    if config.pad_token_id is None and eos:
        if batch > 1 and model_kwargs.get("attention_mask") is None:
            warnings.warn("pad_token_id is not set; using eos_token_id "
                          f"{eos[0]} to pad finished rows. Pass an attention_mask for batched inputs.",
                          UserWarning, stacklevel=3)
        config.pad_token_id = eos[0]
    # the encoder_* processors read the encoder input, which for decoder-only models is the prompt (as in transformers)
    encoder_input_ids = input_ids
    if adapter.is_encoder_decoder:
        input_ids, model_kwargs = _encoder_decoder_inputs(adapter, input_ids, model_kwargs, config)
    else:
        input_ids, model_kwargs = _decoder_only_inputs(pm, model, adapter, input_ids, model_kwargs, config, eos,
                                                       tokenizer)

    # ---- expansion for beams / several sequences per prompt
    times = max(config.num_beams or 1, config.num_return_sequences or 1)
    if times > 1:
        input_ids, model_kwargs = adapter.expand_inputs(input_ids, times, model_kwargs)

    user_set_max_length = kwargs_max_length is not None or (passed is not None and passed.max_length is not None)
    prep.generated_lengths(config, input_ids.shape[1], has_default_max_length, adapter.max_position_embeddings,
                           user_set_max_length, embedded=_embedded_positions(adapter, input_ids, model_kwargs))

    # ---- cache
    model_kwargs["past_key_values"] = _prepare_cache(pm, adapter, config, model_kwargs, input_ids, strategy_name,
                                                     strategy_entry)
    model_kwargs["use_cache"] = bool(config.use_cache)
    adapter.reset_state(input_ids.shape[0])  # nothing of an earlier call may leak into this one

    # ---- processors and stopping criteria
    eos_tensor = torch.tensor(eos, device=input_ids.device, dtype=torch.long) if eos else None
    context = BuildContext(
        input_ids=input_ids, vocab_size=adapter.vocab_size, device=input_ids.device, eos_token_ids=eos_tensor,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, num_beams=config.num_beams or 1,
        strategy=strategy_name,
        attention_mask=None if adapter.is_encoder_decoder else model_kwargs.get("attention_mask"),
        is_encoder_decoder=adapter.is_encoder_decoder, tokenizer=tokenizer,
        encoder_input_ids=None if encoder_input_ids.is_floating_point() else encoder_input_ids,  # ids, not embeddings
        model=adapter, prefix_allowed_tokens_fn=call["prefix_allowed_tokens_fn"],
        negative_prompt_ids=call["negative_prompt_ids"],
        negative_prompt_attention_mask=call["negative_prompt_attention_mask"], model_kwargs=model_kwargs,
    )
    processors, _ = build_logits_processors(pm.registries.logits_processors, config, context, call["logits_processor"])
    criteria, _ = build_stopping_criteria(pm.registries.stopping_criteria, config, context, call["stopping_criteria"])

    streamer = call["streamer"]
    if streamer is not None:
        streamer.put(input_ids.cpu())
    synced_gpus = _default_synced_gpus(model) if call["synced_gpus"] is None else bool(call["synced_gpus"])

    run = custom_callable if custom_callable is not None else strategy_entry.obj
    target = model if custom_callable is not None else adapter
    takes = _parameter_names(run) if custom_callable is None and call["assistant_model"] is not None else ()
    if "assistant_model" in takes:
        extra_custom = {**extra_custom, "assistant_model": call["assistant_model"]}
        if assistant_tokenizer is not None and "assistant_tokenizer" in takes:
            extra_custom.update(tokenizer=tokenizer, assistant_tokenizer=assistant_tokenizer)
        if adapter.is_encoder_decoder and "inputs_tensor" in takes:  # the draft runs its own encoder on it
            extra_custom["inputs_tensor"] = encoder_input_ids
    return run(target, input_ids, logits_processor=processors, stopping_criteria=criteria, generation_config=config,
               synced_gpus=synced_gpus, streamer=streamer, **extra_custom, **model_kwargs)


def _parameter_names(function) -> frozenset:
    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()


# ------------------------------------------------------------------------------------------- helpers


def _model_generation_defaults(adapter: ModelAdapter):
    """The model's own generation defaults: its generation_config, else the ids in its model config."""
    from .config import GenerationConfig

    gc = adapter.generation_config
    if gc is not None and not isinstance(gc, GenerationConfig):
        gc = converted_generation_config(gc)
    if gc is None and adapter.config is not None:
        gc = _MODEL_CONFIG_DEFAULTS.get(adapter.config)
        gc = copy.copy(gc) if gc is not None else None
    return gc


def converted_generation_config(config: Any):
    """A foreign generation config (transformers', or a dict) as genplug's ``GenerationConfig``: a copy of a
    conversion kept while the source object's attributes are unchanged (converting costs ~0.1 ms, on every
    generate() call)."""
    return copy.copy(_CONVERTED_CONFIGS.get(config))


def _converted(config: Any):
    from .config import GenerationConfig

    return GenerationConfig.from_dict(config.to_dict() if hasattr(config, "to_dict") else dict(config))


def _model_config_defaults(model_config: Any):
    """The generation fields of a model config as a GenerationConfig (kept between calls while the config is
    unchanged: ~0.05 ms a call otherwise), or None where they do not make one."""
    from .config import GenerationConfig

    try:
        return GenerationConfig.from_model_config(model_config)
    except Exception:
        return None


_MODEL_CONFIG_DEFAULTS = KeptByIdentity(_model_config_defaults)
_CONVERTED_CONFIGS = KeptByIdentity(_converted)


def _config_field_names(pm) -> set:
    from .config import BUILTIN_FIELD_NAMES

    return set(BUILTIN_FIELD_NAMES) | set(pm.registries.config_fields)


def _custom_generate_extras(custom_callable, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Keyword arguments named by a custom_generate callable's own parameters go to it, not the model."""
    if custom_callable is None:
        return {}
    standard = {"model", "input_ids", "logits_processor", "stopping_criteria", "generation_config",
                "synced_gpus", "streamer", "self"}
    params = inspect.signature(custom_callable).parameters
    return {k: kwargs.pop(k) for k in list(kwargs) if k in params and k not in standard}


def _check_model_kwargs(adapter: ModelAdapter, model_kwargs: Dict[str, Any], field_names: set) -> None:
    if adapter.accepts_any_model_kwarg():
        return
    accepted = adapter.accepted_model_kwargs() | _ALWAYS_ACCEPTED
    unknown = [k for k in model_kwargs if k not in accepted]
    if unknown:
        pm = get_plugin_manager()
        hints = []
        for name in unknown:
            owners = pm.owners_among_unloaded(name)
            if owners:
                hints.append(f"{name!r} is a field of plugin {owners[0]!r}, which is {pm.infos[owners[0]].status}")
            else:
                hints.append(f"{name!r}{did_you_mean(name, field_names | accepted)}")
        raise GenerationInputError(
            "generate() got keyword arguments that are neither generation-config fields nor arguments the model "
            "takes: " + "; ".join(hints)
        )


def _main_inputs(adapter: ModelAdapter, inputs, model_kwargs: Dict[str, Any], config):
    name = adapter.main_input_name
    if inputs is not None and model_kwargs.get(name) is not None:
        raise GenerationInputError(f"both `inputs` and `{name}` were given; pass the prompt once")
    if inputs is None:
        inputs = model_kwargs.pop(name, None)
    else:
        model_kwargs.pop(name, None)
    embeds = model_kwargs.get("inputs_embeds")
    if embeds is not None and not adapter.is_encoder_decoder:
        inputs = _embedded_prompt(adapter, inputs, embeds)
    elif embeds is not None:  # the encoder's input, as embeddings
        if inputs is not None:
            raise GenerationInputError(f"both {name} and inputs_embeds were given for the encoder; pass one of them")
        _check_embeddings(embeds)
        return model_kwargs.pop("inputs_embeds"), model_kwargs
    if inputs is None:
        if config.bos_token_id is None:
            raise GenerationInputError("no prompt was given and bos_token_id is not set: nothing to start from")
        batch = next((v.shape[0] for v in model_kwargs.values() if isinstance(v, torch.Tensor) and v.dim() > 0), 1)
        inputs = torch.full((batch, 1), config.bos_token_id, dtype=torch.long, device=adapter.device)
    if name == "input_ids" or not adapter.is_encoder_decoder:
        prep.check_token_ids(inputs, name, adapter.vocab_size if not adapter.is_encoder_decoder else None)
    return inputs, model_kwargs


def _decoder_only_inputs(pm, model, adapter, input_ids, model_kwargs, config, eos, tokenizer):
    """A decoder-only prompt made ready: rewritten by a ``genplug_prepare_prompt`` plugin (token healing),
    its attention mask, the model's own prompt positions and its images encoded ahead, where it has them.
    A prompt given as embeddings alone has no token ids for any of that but the mask."""
    if _embedded_positions(adapter, input_ids, model_kwargs):
        _decoder_only_mask(adapter, input_ids, model_kwargs, config, eos)
        return input_ids, model_kwargs
    prepared = pm.hook.genplug_prepare_prompt(model=model, input_ids=input_ids,
                                              attention_mask=model_kwargs.get("attention_mask"),
                                              generation_config=config, tokenizer=tokenizer)
    if prepared is not None:
        input_ids, model_kwargs["attention_mask"] = prepared
    _decoder_only_mask(adapter, input_ids, model_kwargs, config, eos)
    if model_kwargs.get("position_ids") is None:
        positions = adapter.prompt_position_ids(input_ids, model_kwargs)
        if positions is not None:
            model_kwargs["position_ids"] = positions
    return input_ids, adapter.encode_prompt_media(model_kwargs)


def _check_embeddings(embeds) -> None:
    """``inputs_embeds`` must be a non-empty float tensor ``(batch, length, hidden_size)``."""
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3 or not embeds.dtype.is_floating_point:
        raise GenerationInputError(
            f"inputs_embeds must be a float tensor of shape (batch, length, hidden_size), got "
            f"{tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__}")
    if embeds.shape[0] == 0 or embeds.shape[1] == 0:
        raise GenerationInputError(f"inputs_embeds has shape {tuple(embeds.shape)}: pass at least one row and one position")


def _embedded_prompt(adapter, input_ids, embeds):
    """The token ids of a decoder-only prompt given as ``inputs_embeds``: ``input_ids`` when both are given
    (they must match: processors read the ids, the model gets the embeddings), else none -- ``(batch, 0)``,
    and only the new tokens are returned, as in transformers."""
    _check_embeddings(embeds)
    if not (adapter.accepts("inputs_embeds") or adapter.accepts_any_model_kwarg()):
        raise GenerationInputError(f"{type(adapter.model).__name__}'s forward takes no inputs_embeds; pass input_ids")
    if input_ids is None:
        return torch.empty((embeds.shape[0], 0), dtype=torch.long, device=embeds.device)
    if isinstance(input_ids, torch.Tensor) and tuple(input_ids.shape[:2]) != tuple(embeds.shape[:2]):
        raise GenerationInputError(
            f"input_ids {tuple(input_ids.shape)} and inputs_embeds {tuple(embeds.shape)} were both given but cover "
            "different tokens; pass the ids of the embedded prompt, or inputs_embeds alone")
    return input_ids


def _embedded_positions(adapter, input_ids, model_kwargs) -> int:
    """How many prompt positions come as embeddings with no token ids (0 unless inputs_embeds came alone)."""
    embeds = None if adapter.is_encoder_decoder else model_kwargs.get("inputs_embeds")
    return 0 if embeds is None else embeds.shape[1] - input_ids.shape[1]


def _decoder_only_mask(adapter, input_ids, model_kwargs, config, eos) -> None:
    mask = model_kwargs.get("attention_mask")
    embedded = _embedded_positions(adapter, input_ids, model_kwargs)
    if mask is None and adapter.accepts("attention_mask") and not embedded:
        mask = prep.infer_attention_mask(input_ids, config.pad_token_id, eos)
    if mask is not None:
        prep.check_attention_mask(mask, model_kwargs["inputs_embeds"][..., 0] if embedded else input_ids)
        prep.warn_right_padding(input_ids, mask, config.pad_token_id)
        if bool(mask.all()):
            mask = None  # no padding: the model needs no mask (transformers drops it too)
    elif input_ids.shape[0] > 1 and not embedded:
        prep.warn_right_padding(input_ids, None, config.pad_token_id)
    model_kwargs["attention_mask"] = mask


def _encoder_decoder_inputs(adapter, encoder_input_ids, model_kwargs, config):
    mask = model_kwargs.get("attention_mask")
    embedded = encoder_input_ids.dim() == 3 and adapter.main_input_name == "input_ids"  # inputs_embeds
    if mask is not None:
        prep.check_attention_mask(mask, encoder_input_ids[..., 0] if embedded else encoder_input_ids)
    elif config.pad_token_id is not None and adapter.main_input_name == "input_ids" and not embedded:
        model_kwargs["attention_mask"] = (encoder_input_ids != config.pad_token_id).long()
    if model_kwargs.get("encoder_outputs") is None:
        # the encoder's attentions / hidden states are part of the output when the config asks for them
        wanted = {flag: True for flag in ("output_attentions", "output_hidden_states") if getattr(config, flag)}
        model_kwargs["encoder_outputs"] = adapter.encode(encoder_input_ids, {**model_kwargs, **wanted})
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
    if start is None:
        raise GenerationConfigError(
            "decoder_start_token_id and bos_token_id are both unset: an encoder-decoder model needs one of them "
            "to start the decoder"
        )
    batch = encoder_input_ids.shape[0]
    device = encoder_input_ids.device
    if isinstance(start, (list, tuple)):
        if len(start) != batch:
            raise GenerationConfigError(
                f"decoder_start_token_id has {len(start)} entries but the batch has {batch} rows"
            )
        start_ids = torch.tensor(start, dtype=torch.long, device=device).view(-1, 1)
    else:
        start_ids = torch.full((batch, 1), start, dtype=torch.long, device=device)
    decoder_ids = model_kwargs.pop("decoder_input_ids", None)
    if decoder_ids is None:
        decoder_ids = start_ids
    elif bool((decoder_ids[:, 0] != start_ids[:, 0]).all()):
        decoder_ids = torch.cat([start_ids, decoder_ids], dim=-1)
        decoder_mask = model_kwargs.get("decoder_attention_mask")
        if decoder_mask is not None:
            model_kwargs["decoder_attention_mask"] = torch.cat([torch.ones_like(decoder_mask[:, :1]), decoder_mask], -1)
    prep.check_token_ids(decoder_ids, "decoder_input_ids", adapter.vocab_size)
    return decoder_ids, model_kwargs


def _prepare_cache(pm, adapter, config, model_kwargs, input_ids, strategy_name, strategy_entry):
    user_cache = model_kwargs.get("past_key_values")
    requires = frozenset(strategy_entry.options.get("requires", ())) if strategy_entry is not None else frozenset()
    if user_cache is not None:
        if config.cache_implementation is not None:
            raise GenerationInputError(
                "both past_key_values and cache_implementation were given; pass one of them"
            )
        if isinstance(user_cache, tuple):
            raise GenerationInputError("past_key_values as a tuple of tensors is not supported; pass a Cache object")
        missing = requires - set(getattr(user_cache, "capabilities", requires))
        if missing:
            raise GenerationConfigError(
                f"strategy {strategy_name!r} needs cache capabilities {sorted(missing)}, which the given "
                f"past_key_values ({type(user_cache).__name__}) lacks"
            )
        return user_cache
    if not config.use_cache:
        return None
    from .cache import build_cache, check_capabilities

    registry = pm.registries.cache_backends
    name = config.cache_implementation or "dynamic"
    if adapter.makes_own_cache():
        if requires:
            raise GenerationConfigError(
                f"strategy {strategy_name!r} needs cache capabilities {sorted(requires)}, but "
                f"{type(adapter.model).__name__} keeps its own recurrent state, which has none of them (as in "
                "transformers); use greedy search or sampling")
        if config.cache_implementation is not None:
            warnings.warn(f"cache_implementation={name!r} is ignored: {type(adapter.model).__name__} builds its own "
                          "recurrent state", UserWarning, stacklevel=4)
        return None
    if name == "dynamic" and name not in registry:
        return None  # no dynamic backend installed: the model makes its own cache
    max_cache_len = config.max_length - 1 + _embedded_positions(adapter, input_ids, model_kwargs)
    if config.max_cache_len is not None:
        max_cache_len = max(max_cache_len, config.max_cache_len)
    encoder_outputs = model_kwargs.get("encoder_outputs")
    request = CacheRequest(
        model_config=adapter.decoder_config, batch_size=input_ids.shape[0], max_cache_len=max_cache_len,
        dtype=adapter.dtype, device=input_ids.device, cache_config=dict(config.cache_config or {}),
        is_encoder_decoder=adapter.is_encoder_decoder,
        encoder_length=getattr(encoder_outputs, "last_hidden_state", input_ids).shape[1] if encoder_outputs is not None else 0,
        crop_margin=_steps_past_stop(config),
    )
    own = adapter.own_cache(name, request)
    if own is not None:
        return own
    entry = registry.lookup(name, asked_by="cache_implementation")
    check_capabilities(strategy_name, requires, name, entry)
    # A static cache is kept with the model's last CUDA-graph call; an identical request takes it back
    # (emptied) so that call's graph can replay over it. Not when the cache is returned to the caller.
    reusable = name == "static" and not config.return_dict_in_generate and not adapter.is_encoder_decoder
    if reusable:
        from .graph_loop import remember_cache_request, reusable_cache

        request_key = (name, request.batch_size, request.max_cache_len, request.dtype, str(request.device),
                       repr(sorted(request.cache_config.items())), request.crop_margin)
        kept = reusable_cache(adapter.model, request_key)
        if kept is not None:
            return kept
    built = build_cache(registry, name, request)
    cache = adapter.wrap_cache(built, request)
    if reusable and cache is built:
        remember_cache_request(cache, request_key)
    return cache


def _steps_past_stop(config) -> int:
    """How many steps the loop may run after every row stopped (and later crop from the cache).

    Sliding-window layers keep that many tokens beyond their window so the crop stays exact.
    """
    from .loop import DEFAULT_STOP_CHECK_INTERVAL

    return max(int(getattr(config, "stop_check_interval", None) or DEFAULT_STOP_CHECK_INTERVAL) - 1, 0)


def _default_synced_gpus(model) -> bool:
    """True for a model sharded with FSDP across several processes (every rank must keep stepping)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    if torch.distributed.get_world_size() < 2:
        return False
    return any(type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()) if hasattr(model, "modules") else False
