"""Model adapters: what the core needs to know about a model to drive it.

Any module that follows the model protocol (docs/models.md) -- transformers' calling convention --
is driven by :class:`ModelAdapter` as is. Plugins subclass it for model families that need more
(transformers' encoder-decoder models, native models with a fast path) and hand it out from
``genplug_adapt_model``.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any, FrozenSet, Optional, Tuple

import torch


# Layer types that are recurrent state only (no attention over earlier tokens at all); a "hybrid" layer
# (Zamba2) or any attention layer needs the whole sequence's mask.
_STATE_SPACE_LAYER_TYPES = frozenset({"linear_attention", "mamba"})


# model types whose transformers prepare_inputs_for_generation drops the cache at original_max_position_embeddings + 1
_REFILLING_FAMILIES = frozenset({"phi3", "phimoe", "phi4_multimodal"})


def _config_get(config: Any, name: str, default: Any = None) -> Any:
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


# The names a forward takes its cache (or recurrent state) under, in the order they are looked for:
# transformers' usual name, its >= 5.24 name, state-space models' (Mamba), RWKV's.
CACHE_ARGUMENT_NAMES = ("past_key_values", "cache", "cache_params", "state")


# Inputs of multimodal models that describe the prompt's images, video or audio: the forward that reads
# the prompt turns them into the embeddings of the prompt's placeholder tokens; later forwards must not
# get them again (the names transformers 5 drops outside the prefill).
PROMPT_ONLY_INPUTS = frozenset({
    "mm_encoder_outputs", "pixel_values", "pixel_mask", "input_features", "input_features_mask", "input_values",
    "input_values_mask", "pixel_values_videos", "num_local_patches", "high_res_pixel_values", "image_patches_indices",
    "image_patches", "image_sizes", "image_sizes_videos", "pixel_attention_mask", "pixel_values_images",
    "pixel_values_local", "patches_grid", "image_token_pooling", "image_grids", "video_token_pooling", "video_grids",
})


def returned_cache(outputs: Any) -> Any:
    """The cache a model's forward returned, under whichever of :data:`CACHE_ARGUMENT_NAMES` it uses.

    Plain attributes are read before properties: a transformers >= 5.24 output holds the cache in its
    ``cache`` field (RWKV's in ``state``) and keeps ``past_key_values`` / ``cache_params`` as properties
    that log a deprecation warning when read.
    """
    kind = type(outputs)
    names = sorted(CACHE_ARGUMENT_NAMES, key=lambda name: isinstance(getattr(kind, name, None), property))
    for name in names:
        cache = getattr(outputs, name, None)
        if cache is not None:
            return cache
    return None


_SIGNATURES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # a forward's function -> its facts


def _forward_signature(forward) -> Tuple[FrozenSet[str], bool, str]:
    """``(named parameters, whether it takes **kwargs, the cache argument's name)`` of a model's forward;
    kept per function for bound methods (inspect.signature costs ~20 us, on every generate() call)."""
    function = getattr(forward, "__func__", None)  # a bound method: its class's function
    if function is not None and function in _SIGNATURES:
        return _SIGNATURES[function]
    params = inspect.signature(forward).parameters
    named = frozenset(n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    # The core says past_key_values throughout and renames it at the call: transformers >= 5.24 names
    # it `cache`, state-space models `cache_params`, RWKV `state`
    cache_argument = next((n for n in CACHE_ARGUMENT_NAMES if n in params), "past_key_values")
    facts = (named, takes_kwargs, cache_argument)
    if function is not None:
        try:
            _SIGNATURES[function] = facts
        except TypeError:  # not weakly referable
            pass
    return facts


class ModelAdapter:
    """Drives one model: calls its forward with only the arguments it takes, and runs its encoder.

    Attributes the core reads: ``model``, ``config``, ``decoder_config`` (what caches are sized from),
    ``generation_config`` (the model's defaults, or None), ``device``, ``dtype``, ``vocab_size``,
    ``is_encoder_decoder``, ``main_input_name``.
    """

    def __init__(self, model: Any):
        self.model = model
        self.config = getattr(model, "config", None)
        self.generation_config = getattr(model, "generation_config", None)
        self.is_encoder_decoder = bool(_config_get(self.config, "is_encoder_decoder", False))
        self.main_input_name = getattr(model, "main_input_name", "input_ids")
        facts = _forward_signature(getattr(model, "forward", model))
        self.forward_params, self.forward_takes_kwargs, self.cache_argument = facts
        # a pure state-space model (every layer recurrent: Mamba, Mamba2) reads the attention mask only to zero
        # the padding in the tokens it is fed, before they enter its state
        types = _config_get(self.decoder_config, "layer_types") or ()
        self.recurrent_only = bool(types) and all(t in _STATE_SPACE_LAYER_TYPES for t in types)

    # ------------------------------------------------------------------ facts about the model

    @property
    def decoder_config(self) -> Any:
        get_text_config = getattr(self.config, "get_text_config", None)
        if callable(get_text_config):
            return get_text_config(decoder=True)
        return self.config

    @property
    def vocab_size(self) -> Optional[int]:
        size = _config_get(self.decoder_config, "vocab_size")
        if size is None:
            size = _config_get(self.config, "vocab_size")
        return size

    @property
    def max_position_embeddings(self) -> Optional[int]:
        return _config_get(self.decoder_config, "max_position_embeddings")

    @property
    def device(self) -> torch.device:
        device = getattr(self.model, "device", None)
        if isinstance(device, torch.device):
            return device
        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        dtype = getattr(self.model, "dtype", None)
        if isinstance(dtype, torch.dtype):
            return dtype
        for tensor in self.model.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    def accepts(self, name: str) -> bool:
        """Whether the forward takes the keyword ``name`` (explicitly, not only through **kwargs)."""
        return name in self.forward_params

    def accepts_any_model_kwarg(self) -> bool:
        """Whether generate() passes any keyword on unchecked: by default when the forward takes **kwargs.

        Adapters whose models take **kwargs but document what they accept (transformers) return False,
        so that a misspelt keyword is still refused by :meth:`accepted_model_kwargs`.
        """
        return self.forward_takes_kwargs

    def accepted_model_kwargs(self) -> FrozenSet[str]:
        """Keyword names generate() may pass on to the model (for the unknown-kwarg check)."""
        names = set(self.forward_params)
        prepare = getattr(self.model, "prepare_inputs_for_generation", None)
        if callable(prepare):
            names |= set(inspect.signature(prepare).parameters)
        if self.is_encoder_decoder:
            encoder = self.get_encoder()
            if encoder is not None:
                names |= set(inspect.signature(encoder.forward).parameters)
        return frozenset(names - {"self", "kwargs", "args"})

    def can_crop(self, cache: Any) -> bool:
        """Whether ``cache.crop(-n)`` exactly undoes the last ``n`` steps (so the loop may run past a stop).

        A cache that does not declare ``capabilities`` is assumed to crop; adapters that know their
        model family's caches (transformers' static ones cannot) say better.
        """
        return "crop" in getattr(cache, "capabilities", ("crop",))

    # ------------------------------------------------------------------ running it

    def get_encoder(self):
        get_encoder = getattr(self.model, "get_encoder", None)
        return get_encoder() if callable(get_encoder) else None

    def encode(self, inputs_tensor: torch.Tensor, model_kwargs: dict) -> Any:
        """Run the encoder once (encoder-decoder models); returns its outputs."""
        encoder = self.get_encoder()
        skip = ("decoder_", "cross_attn", "use_cache", "past_key_values", "cache_params", "cache")
        kwargs = {k: v for k, v in model_kwargs.items() if not k.startswith(skip) and v is not None}
        params = inspect.signature(encoder.forward).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
        name = self.main_input_name if self.main_input_name in params else "input_ids"
        if name == "input_ids" and inputs_tensor.is_floating_point():
            name = "inputs_embeds"  # the prompt was given as embeddings
        kwargs[name] = inputs_tensor
        if "return_dict" in params:
            kwargs["return_dict"] = True
        return encoder(**kwargs)

    def wrap_cache(self, cache: Any, request: Any) -> Any:
        """Give a built cache the shape this model family expects (e.g. an encoder-decoder pair).

        The generic adapter hands the cache over unchanged; adapters for model families override this.
        """
        return cache

    def prompt_position_ids(self, input_ids: torch.Tensor, model_kwargs: dict) -> Optional[torch.Tensor]:
        """The prompt's position ids when the model computes its own (e.g. 3-D rotary positions from image
        grids), else None: positions then follow the attention mask. Each new token adds one to the last."""
        return None

    def encode_prompt_media(self, model_kwargs: dict) -> dict:
        """``model_kwargs`` with the prompt's images / video encoded ahead of the prefill, where the model
        family does so (transformers' ``mm_encoder_outputs``); the generic adapter leaves them to the forward."""
        return model_kwargs

    def expand_inputs(self, input_ids: torch.Tensor, times: int, model_kwargs: dict):
        """``(input_ids, model_kwargs)`` with every row repeated ``times`` times (beams, num_return_sequences):
        tensors and encoder outputs row by row; ``[sections, batch, length]`` rotary positions along the batch."""
        from .inputs import expand_rows

        expanded = {}
        for key, value in model_kwargs.items():
            if key == "position_ids" and isinstance(value, torch.Tensor) and value.dim() == 3:
                expanded[key] = value.repeat_interleave(times, dim=1)
            elif key != "past_key_values":
                expanded[key] = expand_rows(value, times)
            else:
                expanded[key] = value
        return expand_rows(input_ids, times), expanded

    def refill_at(self) -> Optional[int]:
        """The sequence length at which the model wants its cache dropped and the whole sequence run again, or
        None: for Phi-3 (and Phi-3.5-MoE, Phi-4-multimodal) ``original_max_position_embeddings + 1``, where
        LongRoPE switches to its long factors and transformers' generate recomputes every key with them."""
        config = self.decoder_config
        if _config_get(config, "model_type") not in _REFILLING_FAMILIES:
            return None
        original = _config_get(config, "original_max_position_embeddings")
        if original is None:
            original = (_config_get(config, "rope_parameters") or {}).get("original_max_position_embeddings")
        return None if original is None else int(original) + 1

    def prompt_only_inputs(self) -> FrozenSet[str]:
        """Model inputs that belong to the prompt and go with the first forward only (pixel values, audio
        features): the tokens they stand for are in the cache after it."""
        return PROMPT_ONLY_INPUTS

    def makes_own_cache(self) -> bool:
        """True when the model builds its own recurrent state on the first forward and returns it (RWKV):
        generate() then passes no cache and the loop carries on with the one the model returned."""
        return False

    def reset_state(self, batch_size: int) -> None:
        """Forget whatever state the model keeps outside its cache -- on its own modules -- from earlier forwards.

        generate() calls it once per call, after the cache is prepared and before the first forward, with the
        number of rows that forward gets: genplug feeds the prompt from its first token, so every call must start
        from an empty state. The model protocol keeps all state in the cache, so the generic adapter has nothing
        to forget; adapters name the model families that keep some on their modules (transformers'
        RecurrentGemma)."""

    def reorder_state(self, beam_idx: torch.LongTensor) -> None:
        """Make row ``i`` of the state the model keeps outside its cache (on its own modules) hold what row
        ``beam_idx[i]`` held; beam search calls it with every reordering of the cache. The generic adapter
        has no such state (see :meth:`reset_state`)."""

    def why_no_chunked_prefill(self) -> Optional[str]:
        """None when the model continues exactly from what its cache holds while it is fed several tokens at
        once -- ``prefill_chunk_size`` feeds the prompt so, one piece after another --, else why not, and
        ``prefill_chunk_size`` is then refused. The model protocol asks for it, so the generic adapter says
        None; adapters name the model families whose forward does not (transformers' Mamba)."""
        return None

    def own_cache(self, name: str, request: Any) -> Any:
        """The cache to use for backend ``name`` when genplug's backends cannot hold this model's state,
        else None (genplug builds backend ``name`` from ``request``, a :class:`genplug.cache.CacheRequest`).

        genplug's backends store attention keys and values; a model with recurrent or convolutional
        layers (Mamba, hybrids) gets its own family's cache here. The generic adapter has none.
        """
        return None

    def forward(self, **kwargs: Any) -> Any:
        """Call the model with the arguments it takes; None values are dropped."""
        if self.cache_argument != "past_key_values" and "past_key_values" in kwargs:
            kwargs[self.cache_argument] = kwargs.pop("past_key_values")
        if self.forward_takes_kwargs:
            return self.model(**{k: v for k, v in kwargs.items() if v is not None})
        params = self.forward_params
        return self.model(**{k: v for k, v in kwargs.items() if v is not None and k in params})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Strategies receive the adapter as ``model``: calling it calls the model, as in transformers.
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Anything the adapter does not define reads through to the model (model.config, ...).
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def configure(self, config: Any) -> None:
        """Called once per generate() call with the resolved generation config, before any input is
        prepared: an adapter may choose how it will run the model (the generic adapter has no choice)."""

    def prefill_capturable(self, model_kwargs: dict) -> bool:
        """Whether the prompt's forward with ``model_kwargs`` over an empty static cache may be captured as
        a CUDA graph and replayed (:mod:`genplug.prefill_graph`): it reads nothing on the host but the
        cache's counters. Models say so with a ``prefill_capturable`` attribute (genplug's native family)."""
        return bool(getattr(self.model, "prefill_capturable", False))

    def why_no_static_decode(self, cache: Any) -> Optional[str]:
        """None when :meth:`static_decode_step` can run over ``cache`` (the CUDA-graph loop), else why not.

        The generic adapter offers it when the model does (genplug's native models): a model class
        provides ``static_decode_step(token, position_ids, slot, valid, layers)`` and
        ``supports_static_decode(cache)``.
        """
        if getattr(self.model, "static_decode_step", None) is None:
            return "the model has no static_decode_step"
        if not self.model.supports_static_decode(cache):
            return "the model/cache pair has sliding or non-static layers"
        return None

    def static_decode_step(self, token: torch.Tensor, position_ids: torch.Tensor, slot: torch.Tensor,
                           valid: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits ``[batch, vocab]`` for ``token [batch, 1]`` written at cache slot ``slot`` (a 0-d device
        tensor), attending to the slots where ``valid [batch, max_cache_len]`` is True. Float32 or the
        model's half precision: the loop converts them to float32 for processors, while its token-choice
        kernels read half precision as it is (no copy of a large vocabulary row).

        Shapes never change and nothing is read on the host, so the step can be captured as a CUDA graph.
        The step writes the cache at ``slot`` and nowhere else: the capture's warm-up run puts back only
        that slot of every layer (:func:`genplug.graph_loop.restored_afterwards`).
        """
        return self.model.static_decode_step(token, position_ids, slot, valid, cache.layers)

    def default_compile_config(self) -> Any:
        """The ``compile_config`` the CUDA-graph loop uses on CUDA when the call sets none.

        None (the default here) captures the model's step uncompiled: its greedy output is then
        identical to the eager loop's, and the first call pays no compile. An adapter may return a
        ``CompileConfig`` to run inductor on the step before capture (faster, but fused kernels round
        differently in half precision); transformers models do, as transformers does.
        """
        return None

    def compiled_static_decode_step(self, options: dict):
        """:meth:`static_decode_step` compiled with ``torch.compile(**options)``; same signature.

        A model may compile itself its own way (``compiled_static_decode_step(options)`` on the model,
        e.g. layer by layer); otherwise the model's step is compiled whole, once per model and options.
        """
        own = getattr(self.model, "compiled_static_decode_step", None)
        step = own(options) if own is not None else compile_once(self.model.static_decode_step, options)
        return lambda token, position_ids, slot, valid, cache: step(token, position_ids, slot, valid, cache.layers)

    def step(self, input_ids, attention_mask, position_ids, cache, model_kwargs, *,
             use_cache: bool = True, logits_to_keep: int = 1, output_attentions: bool = False, output_hidden_states: bool = False,
             inputs_embeds: Optional[torch.Tensor] = None):
        """One forward of the decoding loop: the prompt (prefill) or the newest token(s).

        ``attention_mask`` covers every token so far (None when there is no padding);
        ``model_kwargs`` are the call's extra model arguments (encoder outputs, ...). A decoder-only
        prompt given as embeddings comes as ``inputs_embeds`` with ``input_ids`` None.
        """
        kwargs = dict(model_kwargs)
        if self.is_encoder_decoder:
            kwargs["decoder_input_ids"] = input_ids
            if attention_mask is not None:
                kwargs["decoder_attention_mask"] = attention_mask
        else:
            kwargs["input_ids"] = input_ids
            kwargs["inputs_embeds"] = inputs_embeds
            kwargs["attention_mask"] = attention_mask
            if position_ids is not None and self.accepts("position_ids"):
                kwargs["position_ids"] = position_ids
        if self.recurrent_only and cache is not None and attention_mask is not None:
            # a state-space model takes the mask of the tokens it is given, not of the whole sequence (its
            # state already holds the earlier ones)
            fed = (input_ids if input_ids is not None else inputs_embeds).shape[1]
            kwargs["attention_mask"] = attention_mask[:, -fed:]
        kwargs["past_key_values"] = cache
        kwargs["use_cache"] = use_cache
        if logits_to_keep and self.accepts("logits_to_keep"):
            kwargs["logits_to_keep"] = logits_to_keep
        if output_attentions:
            kwargs["output_attentions"] = True
        if output_hidden_states:
            kwargs["output_hidden_states"] = True
        return self.forward(**kwargs)


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compile_once(function, options: dict):
    """``torch.compile(function, **options)``, made once per process for each (function -- or bound
    method's object and name --, options), so that a later generate() call reuses the compiled code."""
    owner = getattr(function, "__self__", function)
    per_owner = _COMPILED.setdefault(owner, {})
    key = (getattr(function, "__name__", ""), repr(sorted(options.items())))
    if key not in per_owner:
        per_owner[key] = torch.compile(function, **options)
    return per_owner[key]
