"""transformers models as first-class genplug clients: the model adapter.

Any ``transformers.PreTrainedModel`` with a language-model head is claimed here -- decoder-only models
(Llama, Mistral, Qwen2, GPT-2, GPT-NeoX, Gemma...) and encoder-decoder ones (T5, BART...). The core
already speaks transformers' calling convention; what this adapter adds is what only a transformers
model needs:

* the model's own ``generation_config`` (a transformers ``GenerationConfig``) becomes genplug's, so
  the model's defaults apply exactly as in transformers;
* the unknown-keyword check accepts what transformers' ``_validate_model_kwargs`` accepts, also for
  the many v5 models whose ``forward`` takes ``**kwargs`` (otherwise every typo would pass silently);
* a cache genplug builds is handed over in the shape the model expects: transformers' encoder-decoder
  layers test ``isinstance(cache, transformers.EncoderDecoderCache)``, so a genplug
  ``EncoderDecoderCache`` is bridged to one (sharing its storage);
* stock Llama / Mistral / Qwen2 / Qwen3 / Gemma 1-3 / Phi-3 models run on genplug's native kernels over their own weights
  (:mod:`.native_twin`, ``native_kernels`` config field);
* a capturable decode step for genplug's CUDA-graph loop (``static_decode_step``);
* two repairs of model state that transformers' own generate gets wrong: RWKV's one-token forwards, which mix
  the rows of a batch, run one row at a time; RecurrentGemma's state kept on its modules starts afresh in
  every call (``reset_state``).

transformers is never imported here: the adapter only looks at ``sys.modules``. If transformers was
not imported, no transformers model can exist, so there is nothing to claim.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, FrozenSet, Optional

import torch

from genplug import hookimpl
from genplug.cache import recurrent_layer_types
from genplug.errors import GenerationConfigError
from genplug.models import ModelAdapter, compile_once, returned_cache

# Keywords transformers' generate() lets through whatever the signatures say (``_validate_model_kwargs``).
_ALWAYS_ALLOWED = frozenset({"debug_io", "mm_encoder_outputs"})

# Model types whose transformers forward, fed several tokens over a cache that already holds a state, starts part
# of that state again instead of continuing it (one-token steps continue it): a prompt fed in pieces
# (prefill_chunk_size) then gets wrong logits from its second piece on, so the adapter refuses it
# (why_no_chunked_prefill; tests/parity/test_hf_chunked_prefill.py checks that each is still so).
_STATE_RESTARTING_FORWARDS = {
    # transformers' Mamba-1 selective scan -- the torch loop, mambapy, the associative scan and mamba_ssm's kernel
    # alike -- takes no initial state (a TODO in modeling_mamba.py says so); the convolution window is continued
    **dict.fromkeys(("mamba", "falcon_mamba", "jamba", "zamba"),
                    "starts the selective scan of its Mamba layers from an empty state in every forward over several "
                    "tokens, not from the state the cache holds (transformers' Mamba-1 scan takes no initial state)"),
    # the recurrent block keeps its state on the module and pads the convolution of such a forward with zeros
    "recurrent_gemma": "starts the convolution of its recurrent blocks from zeros in every forward over several "
                       "tokens, not from the tokens before",
}


# Model types whose transformers forward over one token with a state mixes the rows of a batch. RWKV's time shift
# takes each row's previous token from the state as ``[batch, hidden]`` and mixes it into the ``[batch, 1, hidden]``
# token: that broadcasts to ``[batch, batch, hidden]``, a sequence of ``batch`` tokens whose position ``j`` carries
# row ``j``'s previous token, which the recurrence then runs through. Every one-token step (and a one-token prompt,
# for which the forward makes the state itself) gets wrong logits and a wrong state as soon as there are two rows;
# one row is exact, and so are forwards over several tokens. The adapter runs such forwards one row at a time.
_ONE_TOKEN_FORWARDS_MIXING_ROWS = frozenset({"rwkv"})

# Model types that keep per-row state as tensors on their modules, by attribute name (``reorder_state``).
_MODULE_STATE = {"recurrent_gemma": ("conv1d_state", "recurrent_states")}

# The forward arguments that hold one entry per row (a state is a list of such tensors), split by that loop.
_PER_ROW_ARGUMENTS = ("input_ids", "inputs_embeds", "attention_mask", "position_ids", "past_key_values")


def loaded_transformers():
    """The transformers module if something already imported it, else None (never imports it)."""
    return sys.modules.get("transformers")


def is_transformers_lm(model: Any) -> bool:
    """True for a transformers ``PreTrainedModel`` that has a language-model head."""
    transformers = loaded_transformers()
    if transformers is None or not isinstance(model, transformers.PreTrainedModel):
        return False
    get_head = getattr(model, "get_output_embeddings", None)
    try:
        return callable(get_head) and get_head() is not None
    except (AttributeError, NotImplementedError):
        return False


class TransformersAdapter(ModelAdapter):
    """Drives a transformers model through genplug's loop."""

    def __init__(self, model: Any):
        super().__init__(model)
        self.generation_config = _genplug_generation_config(getattr(model, "generation_config", None))
        self._cache_given = self._cache_converted = None
        self._built_caches: tuple = ()
        self.twin = None  # genplug's native model over this model's weights, when it may stand in (configure)
        # a decoder-only model's own mask builder, used with static caches as transformers uses it; it takes the
        # cache as `cache` from transformers 5.24 on (the old name still works there, with a FutureWarning)
        self._own_mask_builder = None if self.is_encoder_decoder else getattr(model, "create_masks_for_generate", None)
        builder = self._own_mask_builder
        self._mask_builder_cache_name = (
            "cache" if builder is not None and "cache" in _parameters(builder) else "past_key_values")
        self.why_no_twin: Optional[str] = "not configured yet"
        self._one_token_rows_apart = getattr(self.decoder_config, "model_type", None) in _ONE_TOKEN_FORWARDS_MIXING_ROWS
        # the state reorder_state moves with the beams (looked up once: a transformers config's attribute
        # reads cost ~9 us on every beam step otherwise)
        self._module_state_names = _MODULE_STATE.get(getattr(self.decoder_config, "model_type", None), ())

    # ------------------------------------------------------------------ native kernels

    def configure(self, config: Any) -> None:
        """Decide whether the native twin runs this call (see :mod:`.native_twin`)."""
        from .native_twin import twin_or_reason

        if not getattr(config, "native_kernels", True):
            self.twin, self.why_no_twin = None, "native_kernels=False"
            return
        self.twin, self.why_no_twin = twin_or_reason(self.model)

    def forward(self, **kwargs: Any) -> Any:
        """The twin's forward where it takes every argument given and the cache is genplug's, else the model's."""
        twin = self.twin
        if twin is not None:
            cache = kwargs.get("past_key_values")
            if (cache is None or hasattr(cache, "capabilities")) and all(
                    value is None or key in _TWIN_ARGUMENTS for key, value in kwargs.items()):
                return twin(**{k: v for k, v in kwargs.items() if v is not None})
        if self._one_token_rows_apart and _one_token_for_several_rows(kwargs):
            return self._forward_row_by_row(kwargs)
        return super().forward(**kwargs)

    def prefill_capturable(self, model_kwargs: dict) -> bool:
        """Where the native twin runs the prompt's forward (every argument one it takes), it is the twin's
        -- capturable like a native model's."""
        return self.twin is not None and self.twin.prefill_capturable and all(
            value is None or key in _TWIN_ARGUMENTS for key, value in model_kwargs.items())

    def _forward_row_by_row(self, kwargs: dict) -> Any:
        """One forward per row, stacked back into the batch's outputs, for the model types of
        ``_ONE_TOKEN_FORWARDS_MIXING_ROWS`` (RWKV), whose forward over one token mixes the rows.

        Each row gets views of its rows of the state, which the model updates in place (RWKV does; a state
        returned anew is copied into them), so the state passed in is the batch's state afterwards and comes
        back as the output's state, as from one batched forward."""
        state = kwargs.get("past_key_values")
        rows = next(kwargs[name] for name in ("input_ids", "inputs_embeds") if kwargs.get(name) is not None).shape[0]
        outputs = []
        for row in range(rows):
            picked = {name: _rows_of(value, row) if name in _PER_ROW_ARGUMENTS else value
                      for name, value in kwargs.items()}
            output = super().forward(**picked)
            views, updated = picked.get("past_key_values"), returned_cache(output)
            if views is not None and updated is not None:
                for view, tensor in zip(views, updated):
                    if tensor is not view:
                        view.copy_(tensor)
            outputs.append(output)
        stacked = _stacked(outputs)
        if state is not None:
            first = outputs[0]
            for name in first.keys():
                if first[name] is returned_cache(first):
                    stacked[name] = state
        return stacked

    def accepts(self, name: str) -> bool:
        """As the generic adapter; ``exit_layer`` (early-exit drafting) only through the native twin."""
        if name == "exit_layer":
            return self.twin is not None
        return super().accepts(name)

    # ------------------------------------------------------------------ keyword checking

    def accepts_any_model_kwarg(self) -> bool:
        # A v5 forward takes **kwargs (attention options), but transformers still checks the keywords a
        # caller passes against the signatures below; so does genplug.
        return False

    def accepted_model_kwargs(self) -> FrozenSet[str]:
        """The keywords transformers' ``generate`` accepts for this model (``_validate_model_kwargs``)."""
        model = self.model
        names = set(_parameters(model.prepare_inputs_for_generation)) if hasattr(model, "prepare_inputs_for_generation") else set()
        names |= set(_parameters(model.forward))
        if self.is_encoder_decoder:
            base = getattr(model, getattr(model, "base_model_prefix", ""), None)
            encoder = getattr(model, "encoder", None) or getattr(base, "encoder", None)
            if encoder is not None:
                names |= set(_parameters(encoder.forward))
            decoder = getattr(model, "decoder", None) or getattr(base, "decoder", None)
            if decoder is not None:
                names |= {f"decoder_{name}" for name in _parameters(decoder.forward)}
        names |= _transformers_kwargs() | _ALWAYS_ALLOWED
        return frozenset(names - {"self", "kwargs", "args", "model_kwargs"})

    # ------------------------------------------------------------------ caches

    def prompt_position_ids(self, input_ids, model_kwargs):
        """The model's ``_prepare_position_ids_for_generation`` where its class overrides transformers' own
        (Qwen2-VL and kin: text positions stacked on 3-D vision positions), as transformers' generate calls it."""
        own = getattr(type(self.model), "_prepare_position_ids_for_generation", None)
        generic = getattr(loaded_transformers().GenerationMixin, "_prepare_position_ids_for_generation", None)
        if own is None or own is generic or self.is_encoder_decoder:
            return None
        kwargs = dict(model_kwargs)
        if kwargs.get("attention_mask") is None:  # dropped when all ones; the model sizes its batch from it
            kwargs["attention_mask"] = torch.ones_like(input_ids)
        kwargs.pop("past_key_values", None)
        return self.model._prepare_position_ids_for_generation(input_ids, kwargs)

    def encode_prompt_media(self, model_kwargs):
        """transformers (>= 5.2x) encodes a VLM's images and video before the prefill, as ``mm_encoder_outputs``
        (so that beams can repeat them per sample); so does genplug, with the model's own method."""
        encode = getattr(self.model, "_prepare_multimodal_encoder_kwargs_for_generation", None)
        supports = getattr(self.model, "_supports_mm_encoder_outputs", None)
        modalities = getattr(self.model, "input_modalities", ()) or ()
        if encode is None or supports is None or not supports() or not any(m in modalities for m in ("image", "video")):
            return model_kwargs
        return encode(dict(model_kwargs))

    def expand_inputs(self, input_ids, times, model_kwargs):
        """transformers' own expansion where it knows more than row repetition: encoded images repeated per
        sample group (``mm_encoder_outputs``), or a model class with its own ``_expand_inputs_for_generation``."""
        own = getattr(type(self.model), "_expand_inputs_for_generation", None)
        generic = getattr(loaded_transformers().GenerationMixin, "_expand_inputs_for_generation", None)
        if own is None or (own is generic and not model_kwargs.get("mm_encoder_outputs")):
            return super().expand_inputs(input_ids, times, model_kwargs)
        cache = model_kwargs.pop("past_key_values", None)
        input_ids, model_kwargs = self.model._expand_inputs_for_generation(
            expand_size=times, is_encoder_decoder=self.is_encoder_decoder, input_ids=input_ids, **model_kwargs)
        model_kwargs["past_key_values"] = cache
        return input_ids, model_kwargs

    def prompt_only_inputs(self) -> FrozenSet[str]:
        """genplug's list, and the one of the installed transformers (``MULTIMODAL_INPUTS_TO_DROP_OUTSIDE_PREFILL``),
        which grows with its model families."""
        utils = sys.modules.get("transformers.generation.utils")
        return super().prompt_only_inputs() | frozenset(getattr(utils, "MULTIMODAL_INPUTS_TO_DROP_OUTSIDE_PREFILL", ()))

    def makes_own_cache(self) -> bool:
        """True for the models transformers builds no cache for (RWKV, xLSTM, Reformer, XLNet, the first
        MiniMax): their forward makes its state and returns it."""
        supports = getattr(type(self.model), "_supports_default_dynamic_cache", None)
        return callable(supports) and not supports()

    def reset_state(self, batch_size: int) -> None:
        """Start the model's own state afresh where it keeps one on its modules: a transformers model class with a
        ``_setup_cache(config, batch, device, dtype)`` (RecurrentGemma) does, and its forward calls that only when
        it is given no cache -- transformers' generate always gives one, and so does genplug.

        RecurrentGemma's recurrent blocks hold their convolution window and RG-LRU state as module attributes,
        kept from the last forward (re-made only for another batch size). A prompt of several tokens overwrites the
        window and restarts the RG-LRU at position 0, but a one-token prompt runs its convolution over the window the
        previous call left, so its logits depended on that call. The model's own set-up zeroes both."""
        setup = getattr(self.model, "_setup_cache", None)
        if callable(setup):
            setup(self.model.config, batch_size, self.device, self.dtype)

    def reorder_state(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the per-row state a model keeps on its modules (``_MODULE_STATE``: RecurrentGemma's convolution
        window and RG-LRU state) with the beams. transformers reorders only the cache, so its beam search on
        RecurrentGemma goes on from another beam's recurrent state (scores 0.03-0.06 off after a few steps)."""
        names = self._module_state_names
        if not names:
            return
        for module in self.model.modules():
            for name in names:
                state = getattr(module, name, None)
                if isinstance(state, torch.Tensor):
                    setattr(module, name, state.index_select(0, beam_idx.to(state.device)))

    def why_no_chunked_prefill(self) -> Optional[str]:
        """Why a forward over a later piece of the prompt would not continue from the earlier ones, for the model
        families of ``_STATE_RESTARTING_FORWARDS`` (Mamba, FalconMamba, Jamba, Zamba, RecurrentGemma); else None."""
        reason = _STATE_RESTARTING_FORWARDS.get(getattr(self.decoder_config, "model_type", None))
        return None if reason is None else f"{type(self.model).__name__} {reason}"

    def own_cache(self, name: str, request: Any) -> Any:
        """transformers' own cache for models with recurrent or convolutional layers (Mamba, Jamba, Qwen3-Next,
        LFM2, RecurrentGemma...), whose state genplug's key/value backends cannot hold: ``DynamicCache``
        for 'dynamic' and 'offloaded' (offloading), ``StaticCache`` for 'static' and 'offloaded_static', as
        transformers' generate builds them. Other backends are refused with the ones that work."""
        recurrent = recurrent_layer_types(self.decoder_config)
        if not recurrent:
            return None
        transformers = loaded_transformers()
        offloading = name in ("offloaded", "offloaded_static")
        if name in ("dynamic", "offloaded"):
            return transformers.DynamicCache(config=self.decoder_config, offloading=offloading)
        if name in ("static", "offloaded_static"):
            return transformers.StaticCache(config=self.decoder_config, max_cache_len=request.max_cache_len,
                                            offloading=offloading)
        raise GenerationConfigError(
            f"cache_implementation={name!r} stores attention keys and values, but {type(self.model).__name__} has "
            f"{', '.join(map(repr, recurrent))} layers whose recurrent state it cannot hold; use 'dynamic', "
            "'offloaded', 'static' or 'offloaded_static' (transformers' own caches for this model)"
        )

    def wrap_cache(self, cache: Any, request: Any) -> Any:
        """Hand a cache genplug built to the model in the class it tests for (see :meth:`cache_for_model`)."""
        wrapped = self.cache_for_model(cache)
        self._built_caches = (cache, wrapped)
        return wrapped

    def cache_for_model(self, cache: Any) -> Any:
        """``cache`` as this model must receive it: a transformers view where the model tests the class.

        Encoder-decoder models always need a ``transformers.EncoderDecoderCache``. Decoder-only models
        take a genplug cache as it is, except when their first layer slides and a later one does not
        (Gemma 2/3): transformers then sizes the full-attention mask from ``is_sliding``, which it reads
        only from a ``transformers.Cache``.
        """
        if cache is None or isinstance(cache, loaded_transformers().Cache):
            return cache
        if self.is_encoder_decoder or _first_layer_slides_and_not_all(cache):
            return for_transformers(cache)
        return cache

    def can_crop(self, cache: Any) -> bool:
        """Whether the loop may run past a stop and crop the extra steps off ``cache`` afterwards.

        transformers' own caches declare no ``capabilities`` but say ``is_croppable``: static layers
        crop from transformers 5.25 on. Sliding layers, and the recurrent or convolution state of Mamba,
        LFM2 and kin, can be put back only while they record their past (``record_past``): 5.25 calls such
        a layer croppable, and 5.23 an LFM2 one, whether it records or not, so that is checked here. A
        genplug cache with sliding layers crops exactly only as far as the ``crop_margin`` it was built
        with; genplug sizes that margin for the caches it builds, but one the caller passed may have none.
        """
        transformers = loaded_transformers()
        if not isinstance(cache, transformers.Cache) and not hasattr(cache, "capabilities"):
            return False  # a model's own state object (RWKV's list of tensors)
        if any(getattr(cache, "is_sliding", None) or ()) and not any(cache is built for built in self._built_caches):
            return False
        if isinstance(cache, transformers.Cache) and not hasattr(cache, "capabilities"):
            if isinstance(cache, transformers.EncoderDecoderCache):
                both = (cache.self_attention_cache, cache.cross_attention_cache)
                if not all(isinstance(part, transformers.DynamicCache) for part in both):
                    return False  # transformers crops an EncoderDecoderCache only over two DynamicCaches
                cache = cache.self_attention_cache
            if not all(getattr(layer, "record_past", True) for layer in getattr(cache, "layers", ())):
                return False  # a state that is not being recorded cannot be rolled back
            return bool(getattr(cache, "is_croppable", False)) and not any(getattr(cache, "is_sliding", ()))
        return super().can_crop(cache)

    # ------------------------------------------------------------------ CUDA-graph decode step

    def why_no_static_decode(self, cache: Any) -> Optional[str]:
        """With a native twin, its hand-written step serves (uncompiled by default, like native models).
        Else the transformers forward can be captured as a CUDA graph with a genplug static cache when
        the model is decoder-only, takes ``position_ids``, and uses SDPA or eager attention (both take a
        prepared 4-D mask, which transformers passes through untouched). ``cache_position`` is passed
        where the forward still takes it (transformers before 5.20); genplug's static layers keep their
        own device-side write counter."""
        if self.twin is not None:
            return None if self.twin.supports_static_decode(cache) else "the cache has sliding or non-static layers"
        if self.is_encoder_decoder:
            return "encoder-decoder transformers models decode step by step"
        if not self.accepts("position_ids"):
            return "the model's forward takes no position_ids"
        attention = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        if attention not in ("sdpa", "eager"):
            return f"attention implementation {attention!r} takes no prepared 4-D mask (sdpa or eager needed)"
        layers = getattr(cache, "layers", None) or ()
        if not layers or not all(type(layer).__name__ == "StaticLayer" and getattr(layer, "keys", None) is not None
                                 for layer in layers):
            return "the cache has sliding or non-static layers"
        return None

    def static_decode_step(self, token, position_ids, slot, valid, cache):
        if self.twin is not None:
            return self.twin.static_decode_step(token, position_ids, slot, valid, cache.layers)
        return decode_step(self.model, self.accepts("cache_position"), self.cache_argument, token, position_ids, slot,
                           valid, cache)

    def default_compile_config(self):
        if self.twin is not None:
            return None  # the native step, captured as it is: greedy output equals the eager loop's
        # transformers compiles the forward of a model with a static cache by default; so does genplug
        # (the captured eager kernels of a transformers forward run no faster than its compiled ones)
        from genplug.config import CompileConfig

        return CompileConfig()

    def compiled_static_decode_step(self, options: dict):
        if self.twin is not None:
            step = self.twin.compiled_static_decode_step(options)
            return lambda token, position_ids, slot, valid, cache: step(token, position_ids, slot, valid, cache.layers)
        # the model and the cache are arguments, so a new call (new adapter, new cache, other
        # processors) reuses the compiled code
        compiled, takes_cache_position = compile_once(decode_step, options), self.accepts("cache_position")
        return lambda token, position_ids, slot, valid, cache: compiled(
            self.model, takes_cache_position, self.cache_argument, token, position_ids, slot, valid, cache)

    def step(self, input_ids, attention_mask, position_ids, cache, model_kwargs, **options):
        if cache is not None and cache is not self._cache_given:
            # a genplug cache passed by the caller did not go through wrap_cache; convert it once per call
            self._cache_given, self._cache_converted = cache, self.cache_for_model(cache)
        if cache is not None:
            cache = self._cache_converted
        own_masks = self._own_mask_builder
        if own_masks is not None and getattr(cache, "is_compileable", False):
            # transformers hands a model with its own mask builder (BLOOM pads its 2-D mask to the static
            # cache, for the ALiBi tensor) that builder's mask whenever the cache is static; so does genplug
            fed = input_ids if input_ids is not None else options.get("inputs_embeds")
            attention_mask = own_masks(
                config=self.model.config, **{self._mask_builder_cache_name: cache}, attention_mask=attention_mask,
                inputs_embeds=torch.empty((fed.shape[0], fed.shape[1], 0), dtype=self.model.dtype, device=fed.device),
                position_ids=position_ids, token_type_ids=model_kwargs.get("token_type_ids"),
                mm_token_type_ids=model_kwargs.get("mm_token_type_ids"),
                is_first_iteration=attention_mask is None or attention_mask.shape[-1] == fed.shape[1])
        return super().step(input_ids, attention_mask, position_ids, cache, model_kwargs, **options)


# what the native twin's forward takes (anything else given makes the call run the transformers forward)
_TWIN_ARGUMENTS = frozenset({"input_ids", "attention_mask", "position_ids", "past_key_values", "use_cache", "exit_layer",
                             "logits_to_keep", "inputs_embeds", "output_hidden_states", "output_attentions",
                             "return_dict"})


def decode_step(model, takes_cache_position: bool, cache_argument: str, token, position_ids, slot, valid, cache):
    """One capturable decode step of a transformers decoder over a genplug static cache: float32 logits.

    The mask is prepared here as 4-D ``[batch, 1, 1, max_cache_len]`` -- boolean for SDPA, additive for
    eager attention -- so transformers' mask construction (which may read tensors on the host) is skipped.
    """
    mask = valid[:, None, None, :]
    if model.config._attn_implementation == "eager":  # eager attention adds the mask to its scores
        dtype = model.dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
    extra = {"cache_position": slot.view(1)} if takes_cache_position else {}
    extra[cache_argument] = cache
    out = model(input_ids=token, attention_mask=mask, position_ids=position_ids, use_cache=True, logits_to_keep=1,
                **extra)
    return out.logits[:, -1].float()


def _one_token_for_several_rows(kwargs: dict) -> bool:
    """Whether a forward with these arguments feeds one token to each of several rows over a state (given, or
    made by the forward because ``use_cache`` is not False)."""
    fed = kwargs.get("input_ids")
    if fed is None:
        fed = kwargs.get("inputs_embeds")
    over_state = kwargs.get("past_key_values") is not None or kwargs.get("use_cache") is not False
    return fed is not None and fed.shape[0] > 1 and fed.shape[1] == 1 and over_state


def _rows_of(value: Any, row: int) -> Any:
    """Row ``row`` of a per-row forward argument (a tensor, or a list / tuple of them: RWKV's state), as views."""
    if isinstance(value, torch.Tensor):
        return value[row:row + 1]
    if isinstance(value, (list, tuple)):
        return type(value)(_rows_of(part, row) for part in value)
    return value


def _stacked(parts: list) -> Any:
    """The outputs of one forward per row as those of one batched forward: tensors concatenated along the batch,
    through model outputs, lists and tuples (per-layer hidden states, a state's tensors)."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):  # transformers' ModelOutput, whose fields are its keys
        return type(first)(**{name: _stacked([part[name] for part in parts]) for name in first.keys()})
    if isinstance(first, (list, tuple)):
        return type(first)(_stacked(list(layer)) for layer in zip(*parts))
    return first


def _first_layer_slides_and_not_all(cache: Any) -> bool:
    sliding = list(getattr(cache, "is_sliding", None) or ())
    return bool(sliding) and bool(sliding[0]) and not all(sliding)


def for_transformers(cache: Any) -> Any:
    """A transformers ``Cache`` (or ``EncoderDecoderCache``) sharing ``cache``'s storage.

    A cache may provide its own ``to_transformers()``; any other follows genplug's cache protocol and
    is wrapped by the built-in caches' bridge, which forwards every method.
    """
    to_transformers = getattr(cache, "to_transformers", None)
    if callable(to_transformers):
        return to_transformers()
    from genplug.plugins.caches.transformers_bridge import to_transformers as bridge

    return bridge(cache)


# ---------------------------------------------------------------------------------------- helpers


def _parameters(function) -> list:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return []


def _transformers_kwargs() -> set:
    """The model-agnostic keywords of ``transformers.utils.generic.TransformersKwargs``."""
    generic = sys.modules.get("transformers.utils.generic")
    kwargs_type = getattr(generic, "TransformersKwargs", None)
    return set(getattr(kwargs_type, "__optional_keys__", ()))


def _genplug_generation_config(config: Any) -> Optional[Any]:
    """A transformers ``GenerationConfig`` as genplug's (same fields, same JSON, kept between calls:
    :func:`genplug.generation.converted_generation_config`); others pass through."""
    if config is None:
        return None
    from genplug.config import GenerationConfig
    from genplug.generation import converted_generation_config

    if isinstance(config, GenerationConfig):
        return config
    return converted_generation_config(config)


class TransformersAdapterFactory:
    """Claims transformers models with a language-model head."""

    @staticmethod
    def claims(model) -> bool:
        return is_transformers_lm(model)

    @staticmethod
    def adapt(model) -> ModelAdapter:
        return TransformersAdapter(model)


def _bool(value):
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {value!r}")


@hookimpl
def genplug_register_config_fields(register):
    from genplug.config.fields import ConfigField

    register(ConfigField(
        "native_kernels", default=True, validator=_bool,
        help="run transformers Llama/Mistral/Qwen2/Qwen3/Gemma/Phi-3 models on genplug's native kernels over their own weights "
             "(stock modules, no hooks); False always runs the transformers forward",
    ))


@hookimpl
def genplug_register_model_adapters(register):
    register("transformers", TransformersAdapterFactory,
             description="transformers PreTrainedModel with a language-model head (decoder-only and encoder-decoder)")


@hookimpl
def genplug_adapt_model(model):
    if TransformersAdapterFactory.claims(model):
        return TransformersAdapterFactory.adapt(model)
    return None
