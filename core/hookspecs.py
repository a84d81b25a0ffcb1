"""Every genplug hook, in one place: a reader learns the whole extension surface from this file.

Plugins implement these with ``@genplug.hookimpl``. Three kinds, told apart by the verb:

* ``genplug_register_*(register)`` -- collecting, called once per plugin manager, never per call or
  per token. Each plugin gets its own ``register`` callback so the registry knows who provided what.
* ``genplug_resolve_*`` / ``genplug_load_*`` / ``genplug_adapt_*`` -- firstresult "who handles this?"
  decisions, made once per ``generate()`` call. genplug's own answers are ``trylast`` so any plugin can
  take over a case it owns by returning non-None.
* ``genplug_addhooks`` -- historic, lets a plugin add hookspecs of its own.

No hook is called inside the token loop: the loop runs the plain objects these hooks produced.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("genplug")


# --------------------------------------------------------------------------------------------------
# Setting up the plugin manager
# --------------------------------------------------------------------------------------------------


@hookspec(historic=True)
def genplug_addhooks(pluginmanager):
    """Add hookspecs of a plugin's own with ``pluginmanager.add_hookspecs(module)``.

    Called once when the plugin is registered. Return value ignored.
    """


# --------------------------------------------------------------------------------------------------
# Registries: what exists. Called once per plugin manager, one plugin at a time.
# --------------------------------------------------------------------------------------------------


@hookspec
def genplug_register_strategies(register):
    """Register decoding strategies.

    ``register(name, run, *, requires=(), description="")``

    * ``name`` -- the strategy name; genplug's built-ins use the transformers generation-mode values
      (``"greedy_search"``, ``"sample"``, ``"beam_search"``, ...).
    * ``run(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus,
      streamer, **model_kwargs)`` -- the shape of a transformers decoding method and of a
      ``custom_generate`` callable, so the two are interchangeable.
    * ``requires`` -- cache capabilities the strategy needs (e.g. ``{"reorder"}``); a cache backend
      lacking one is refused when the call is set up.
    """


@hookspec
def genplug_register_logits_processors(register):
    """Register logits-processor factories.

    ``register(name, build, *, stage, after=(), before=(), fields=(), description="")``

    * ``build(generation_config, context) -> LogitsProcessor | None`` -- called once per generate()
      call; ``None`` means "not enabled by this config". ``context`` is a
      :class:`genplug.processing.BuildContext`.
    * ``stage`` -- one of :data:`genplug.processing.STAGES`; processors run ordered by stage, then by
      the ``after`` / ``before`` names within a stage, then by name -- never by hook-call order.
    * ``fields`` -- the GenerationConfig fields the processor reads (shown by ``genplug explain``).
    """


@hookspec
def genplug_register_stopping_criteria(register):
    """Register stopping-criterion factories.

    ``register(name, build, *, order=100, fields=(), description="")``

    * ``build(generation_config, context) -> StoppingCriteria | None`` -- ``None`` means not enabled.
    * ``order`` -- criteria run in ascending order (max_length 10, max_time 20, stop_strings 30,
      eos 40, as in transformers).
    """


@hookspec
def genplug_register_cache_backends(register):
    """Register KV-cache backends, selected by ``cache_implementation``.

    ``register(name, build, *, capabilities=frozenset(), config_keys=(), description="")``

    * ``build(request) -> Cache`` where ``request`` is a :class:`genplug.cache.CacheRequest`
      (model config, batch size, maximum length, dtype, device, ``cache_config``).
    * ``capabilities`` -- a subset of :data:`genplug.cache.CAPABILITIES`.
    * ``config_keys`` -- the ``cache_config`` keys the backend accepts; others are refused.
    """


@hookspec
def genplug_register_model_adapters(register):
    """Register model adapters: objects that tell the core how to drive a kind of model.

    ``register(name, adapter, *, description="")`` where ``adapter`` has ``claims(model) -> bool``
    and ``adapt(model) -> ModelAdapter``; see :mod:`genplug.models`.
    """


@hookspec
def genplug_register_model_loaders(register):
    """Register loaders of local checkpoints (``genplug generate --model DIR``).

    ``register(name, loader, *, priority=0, description="")`` where ``loader`` has ``claims(path) -> bool`` and
    ``load(path, device, dtype) -> (model, tokenizer)``.
    """


@hookspec
def genplug_register_candidate_generators(register):
    """Register candidate generators for assisted decoding (draft model, prompt lookup, ...).

    ``register(name, build, *, description="")``; ``build(generation_config, context)`` returns the
    generator or None when the config does not ask for it.
    """


@hookspec
def genplug_register_config_fields(register):
    """Add fields to GenerationConfig.

    ``register(ConfigField(name, default, validator=None, help=""))``. The field is then accepted by
    ``GenerationConfig(...)`` and ``generate(**kwargs)``, validated, saved to JSON and listed by
    ``genplug explain --fields``. A name that is a built-in field or another plugin's is an error.
    """


# --------------------------------------------------------------------------------------------------
# Per-call decisions (firstresult: the first non-None answer wins)
# --------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def genplug_resolve_strategy(generation_config, assistant_model):
    """Name the registered strategy that runs this call.

    ``generation_config`` has its defaults filled. genplug's built-in rules (``trylast``) reproduce
    transformers' ``get_generation_mode``; a plugin returns a name only for configs it owns (for
    example when one of its own fields is set) and None otherwise.
    """


@hookspec(firstresult=True)
def genplug_load_custom_generate(spec, trust_remote_code, hub_options):
    """Turn a ``custom_generate`` string (local path or hub id) into a callable.

    ``hub_options`` holds the call's ``revision``, ``token``, ``cache_dir``, ``local_files_only`` and
    ``force_download`` (those given) for fetching a hub repository; an implementation may leave it out of
    its signature.

    Returns ``(generate_callable, plugin_module_or_None)``: the module, when it holds genplug hook
    implementations, is registered for that call only. genplug's built-in loader (``trylast``)
    handles local directories holding ``custom_generate/generate.py`` and Hub repository ids (from the
    local Hugging Face cache, else downloaded -- only with ``trust_remote_code=True``).
    """


@hookspec(firstresult=True)
def genplug_prepare_prompt(model, input_ids, attention_mask, generation_config, tokenizer):
    """Rewrite a decoder-only prompt before decoding; return ``(input_ids, attention_mask)`` or None.

    Called once per generate() call, after the inputs are checked and before they are expanded for
    beams. genplug's token-healing plugin answers when ``token_healing`` is set.
    """


@hookspec(firstresult=True)
def genplug_adapt_model(model):
    """Return the :class:`genplug.models.ModelAdapter` that drives ``model`` for this call.

    genplug's generic adapter (``trylast``) handles any module following the model protocol in
    docs/models.md; the transformers plugin claims ``PreTrainedModel`` instances.
    """
