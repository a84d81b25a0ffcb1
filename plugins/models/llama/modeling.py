"""genplug's native Llama-family decoder (Llama 2/3, Mistral, Qwen2/3, Gemma 1/2/3, Phi-3, SmolLM, TinyLlama) in plain PyTorch.

It takes transformers' calling convention, so the same generate() drives it and transformers models,
and it is written for the decode step: q/k/v are one matmul (``qkv_proj``), gate/up are one matmul
(``gate_up_proj``), RoPE is applied to queries and keys in one go, the mask is built once per forward,
and attention is ``scaled_dot_product_attention``. Checkpoints in transformers' layout are converted to
the fused layout by :mod:`.loader` (Phi-3's checkpoints are in it already).
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import SLIDING_ATTENTION, NativeLlamaConfig
from .graph_step import (compiled_step_parts, fused_kernels_apply, fused_kernels_cover, static_decode_step,
                         supports_static_decode)
from .masks import attention_mask_for
from .rope import RotaryEmbedding, apply_rotary

from genplug.mixin import GenerationMixin


_ACTIVATIONS = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
}


class CausalLMOutput:
    """What a forward returns: ``logits`` and ``past_key_values``, plus the optional recordings.

    Reads like transformers' ``CausalLMOutputWithPast``: attributes, ``output["logits"]``, and
    ``output[0]`` / ``to_tuple()`` over the fields that are set.
    """

    __slots__ = ("logits", "past_key_values", "hidden_states", "attentions")

    def __init__(self, logits, past_key_values=None, hidden_states=None, attentions=None):
        self.logits = logits
        self.past_key_values = past_key_values
        self.hidden_states = hidden_states
        self.attentions = attentions

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None)

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self) -> List[str]:
        return [name for name in self.__slots__ if getattr(self, name) is not None]


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 like transformers' LlamaRMSNorm.

    On CUDA, half-precision inputs go through one fused ``F.rms_norm`` kernel (float32 inside) instead
    of cast / norm / cast back / scale: four kernels become one, in every layer, twice. It rounds once
    where transformers rounds twice, so bf16 logits differ from transformers' within bf16 noise.
    """

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.shape = (size,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or (x.is_cuda and x.dtype == self.weight.dtype):
            return F.rms_norm(x, self.shape, self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), self.shape, None, self.eps).to(x.dtype)

    def scale(self) -> torch.Tensor:
        """What the normed values are multiplied by (the fused decode kernels take it as the norm's weights)."""
        return self.weight


class UnitOffsetRMSNorm(RMSNorm):
    """Gemma's RMSNorm: scales by ``1 + weight`` (weights are stored centred on zero), in float32, and
    rounds to the input dtype only after scaling (transformers' GemmaRMSNorm, bit for bit on CPU)."""

    def __init__(self, size: int, eps: float):
        super().__init__(size, eps)
        self.weight = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.shape, 1.0 + self.weight.float(), self.eps).to(x.dtype)

    def scale(self) -> torch.Tensor:
        """``1 + weight`` in float32, kept between calls (a decode step would otherwise launch a kernel
        per norm for it) and remade when the weights change: replaced, or edited in place. A captured
        decode graph keeps reading the one made before its capture, like the RoPE tables: release it
        (``genplug.graph_loop.release(model)``) after editing the weights of a model it was captured for."""
        weight = self.weight
        key = (weight.data_ptr(), weight._version, weight.device)
        cached = self.__dict__.get("_scale")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, 1.0 + weight.detach().float())
            self.__dict__["_scale"] = cached
        return cached[1]


def make_norm(config: NativeLlamaConfig, size: int) -> RMSNorm:
    """The RMSNorm the config's family uses (Gemma's with ``unit_offset_norms``), over ``size`` features."""
    return (UnitOffsetRMSNorm if config.unit_offset_norms else RMSNorm)(size, config.rms_norm_eps)


class Projection(nn.Module):
    """A linear map stored input-major, ``weight_t [in, out]`` (nn.Linear's weight, transposed).

    ``x @ weight_t`` reads the matrix in the order a one-token decode step consumes it, which CPU BLAS
    runs faster than ``F.linear`` with the usual ``[out, in]`` layout (see bench/native_forward.py).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.weight_t = nn.Parameter(torch.empty(in_features, out_features).normal_(0.0, 0.02))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return x @ self.weight_t
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight_t).view(*x.shape[:-1], -1)


def _stored_out_in(weight: nn.Parameter) -> nn.Parameter:
    """``weight [in, out]`` stored ``[out, in]`` (its transpose contiguous): the same values, or itself if so stored."""
    if weight.stride(0) == 1:
        return weight
    return nn.Parameter(weight.detach().t().contiguous().t(), requires_grad=weight.requires_grad)


class TokenEmbedding(nn.Module):
    """The token embedding matrix, stored ``weight_t [hidden, vocab]`` so that a tied output head can use it as is.

    ``scale`` (Gemma: sqrt(hidden_size)) multiplies the embeddings. transformers rounds it to the weights'
    dtype first (a float32 tensor cast to it: sqrt(3072) becomes 55.5 in bf16), and so does this.
    """

    def __init__(self, vocab_size: int, hidden_size: int, scale: Optional[float] = None):
        super().__init__()
        self.weight_t = nn.Parameter(torch.empty(hidden_size, vocab_size).normal_(0.0, 0.02))
        self.scale = scale
        self.rounded_scales: Dict[torch.dtype, float] = {}
        if scale is not None:  # ready before any forward is traced or captured
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                self.scale_in(dtype)

    def scale_in(self, dtype: torch.dtype) -> float:
        """``scale`` rounded to ``dtype``, as a Python number: nothing to move between devices, nothing for a
        CUDA graph to read."""
        if dtype not in self.rounded_scales:
            self.rounded_scales[dtype] = torch.tensor(self.scale, device="cpu").to(dtype).item()
        return self.rounded_scales[dtype]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embedded = F.embedding(input_ids, self.weight_t.t())
        if self.scale is None:
            return embedded
        return embedded * self.scale_in(embedded.dtype)


class Attention(nn.Module):
    """Grouped-query self-attention with one fused q/k/v projection (and Qwen3's / Gemma 3's per-head q/k
    norms). Scores are scaled by ``scale`` (None: 1/sqrt(head_dim)); with ``softcap`` (Gemma 2) they go
    through ``tanh(s / cap) * cap`` before the mask, which SDPA cannot do: such models attend eagerly.
    """

    def __init__(self, config: NativeLlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.groups = config.num_key_value_groups
        width = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.qkv_proj = Projection(config.hidden_size, width, bias=config.qkv_bias)
        self.o_proj = Projection(self.num_heads * self.head_dim, config.hidden_size, bias=config.output_bias)
        self.q_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.k_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.scale = None if config.query_pre_attn_scalar is None else config.query_pre_attn_scalar**-0.5
        self.softcap = config.attn_logit_softcapping

    def rotated_queries_keys(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """The query and key heads of ``qkv [batch, length, heads + 2 kv_heads, dim]``, normed (Qwen3,
        Gemma 3) and rotated: ``[batch, length, heads + kv_heads, dim]``."""
        heads, kv_heads = self.num_heads, self.num_kv_heads
        if self.q_norm is None:
            return apply_rotary(qkv[:, :, : heads + kv_heads], cos, sin)  # queries and keys rotated together
        queries = self.q_norm.forward(qkv[:, :, :heads])
        keys = self.k_norm.forward(qkv[:, :, heads: heads + kv_heads])
        return apply_rotary(torch.cat((queries, keys), dim=2), cos, sin)

    def forward(self, x, cos, sin, mask, is_causal, cache, return_weights=False):
        batch, length, _ = x.shape
        heads, kv_heads = self.num_heads, self.num_kv_heads
        qkv = self.qkv_proj.forward(x).view(batch, length, heads + 2 * kv_heads, self.head_dim)
        qk = self.rotated_queries_keys(qkv, cos, sin)
        keys = qk[:, :, heads:].transpose(1, 2)
        values = qkv[:, :, heads + kv_heads :].transpose(1, 2)
        if cache is not None:
            keys, values = cache.update(keys, values, self.layer_idx)
        if return_weights or self.softcap is not None:  # (the mask is always built for these: see NativeLlamaModel)
            out, weights = self.attend_eagerly(qk[:, :, :heads].transpose(1, 2), keys, values, mask)
            out = self.o_proj.forward(out.transpose(1, 2).reshape(batch, length, -1))
            return out, weights if return_weights else None
        if length == 1 and self.groups > 1:
            # One new token: view its query heads as `groups` queries per key/value head, so the cached
            # keys/values are never repeated (the mask, [batch, 1, 1, kv], broadcasts over the groups).
            queries = qk[:, :, :heads].reshape(batch, kv_heads, self.groups, self.head_dim)
            out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=self.scale)
            return self.o_proj.forward(out.reshape(batch, 1, heads * self.head_dim)), None
        queries = qk[:, :, :heads].transpose(1, 2)
        out = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=mask, is_causal=is_causal, enable_gqa=self.groups > 1, scale=self.scale
        )
        return self.o_proj.forward(out.transpose(1, 2).reshape(batch, length, heads * self.head_dim)), None

    def attend_eagerly(self, queries, keys, values, mask):
        """``(output, weights)`` of ``queries [batch, heads, q, dim]`` over ``keys`` / ``values``
        ``[batch, kv_heads, kv, dim]`` without SDPA: the weights are returned, and scores can be soft-capped."""
        return eager_attention(queries, keys, values, mask, self.groups, self.scale, self.softcap)


def eager_attention(queries, keys, values, mask, groups, scale=None, softcap=None):
    """Attention that also returns its weights ``[batch, heads, q, kv]`` (for ``output_attentions``, and
    for soft-capped scores). ``mask`` is boolean (True: attend) or None (attend to every key)."""
    if groups > 1:
        keys = keys.repeat_interleave(groups, dim=1)
        values = values.repeat_interleave(groups, dim=1)
    scores = torch.matmul(queries, keys.transpose(2, 3)) * (queries.shape[-1] ** -0.5 if scale is None else scale)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(queries.dtype)
    return torch.matmul(weights, values), weights


class MLP(nn.Module):
    """The gated feed-forward block, with gate and up projections fused into one matmul."""

    def __init__(self, config: NativeLlamaConfig):
        super().__init__()
        self.gate_up_proj = Projection(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = Projection(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act = _ACTIVATIONS[config.hidden_act]
        # the fused decode kernels' name for act(gate) * up (decode_kernels.GATES); None: computed by PyTorch
        self.gate_kind = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh"}.get(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj.forward(x).chunk(2, dim=-1)
        return self.down_proj.forward(self.act(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm attention and MLP, each added back to the residual stream.

    With ``sandwich_norms`` (Gemma 2/3) the attention output is normed (``post_attention_layernorm``)
    before it is added, and the MLP sits between ``pre_feedforward_layernorm`` and
    ``post_feedforward_layernorm``; otherwise ``post_attention_layernorm`` is the MLP's input norm
    (transformers' names either way, so checkpoints map one to one).

    Inner modules are run through ``.forward`` rather than ``__call__``: on a one-token step the
    module-call machinery (hook checks) costs more than a small matmul. Hooks on them do not fire.
    """

    def __init__(self, config: NativeLlamaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = make_norm(config, config.hidden_size)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = make_norm(config, config.hidden_size)
        self.mlp = MLP(config)
        self.pre_feedforward_layernorm = make_norm(config, config.hidden_size) if config.sandwich_norms else None
        self.post_feedforward_layernorm = make_norm(config, config.hidden_size) if config.sandwich_norms else None

    def forward(self, x, cos, sin, mask, is_causal, cache, return_weights=False):
        attended, weights = self.self_attn.forward(
            self.input_layernorm.forward(x), cos, sin, mask, is_causal, cache, return_weights
        )
        return self.add_attention_and_mlp(x, attended), weights

    def add_attention_and_mlp(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The rest of the layer once attention is done: both residual adds and the MLP."""
        if self.pre_feedforward_layernorm is None:
            x = x + attended
            return x + self.mlp.forward(self.post_attention_layernorm.forward(x))
        x = x + self.post_attention_layernorm.forward(attended)
        return x + self.post_feedforward_layernorm.forward(self.mlp.forward(self.pre_feedforward_layernorm.forward(x)))


class NativeLlamaModel(nn.Module):
    """The decoder stack: embeddings, layers, final norm (transformers' ``LlamaModel`` part).

    ``rotary_emb`` rotates every layer, except that with ``local_rope_parameters`` (Gemma 3) the sliding
    layers use ``local_rotary_emb``.
    """

    def __init__(self, config: NativeLlamaConfig):
        super().__init__()
        self.config = config
        scale = config.hidden_size**0.5 if config.scale_embeddings else None
        self.embed_tokens = TokenEmbedding(config.vocab_size, config.hidden_size, scale)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = make_norm(config, config.hidden_size)
        self.rotary_emb = RotaryEmbedding(config.rope_parameters, config.head_dim, config.max_position_embeddings)
        self.local_rotary_emb = None
        if config.local_rope_parameters is not None:
            self.local_rotary_emb = RotaryEmbedding(
                config.local_rope_parameters, config.head_dim, config.max_position_embeddings)
        self.layer_windows = [config.window_of_layer(i) for i in range(config.num_hidden_layers)]
        # which entry of rotations() each layer takes: 0 the global RoPE, 1 the local one
        self.layer_ropes = [int(self.local_rotary_emb is not None and kind == SLIDING_ATTENTION)
                            for kind in config.layer_types]
        # (layer, window, rope) triples as a plain list: slicing an nn.ModuleList builds a new one every forward.
        self.layer_plan = list(zip(self.layers, self.layer_windows, self.layer_ropes))
        # Soft-capped attention is eager, and eager attention needs the mask written out.
        self.explicit_masks = config.attn_logit_softcapping is not None
        # One mask per distinct window; the cache is asked for its sizes at the first layer of each.
        self.mask_layers: Dict[Optional[int], int] = {}
        for i, window in enumerate(self.layer_windows):
            self.mask_layers.setdefault(window, i)

    def rotations(self, position_ids: torch.Tensor, dtype: torch.dtype) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """``[(cos, sin)]`` of the global RoPE, then of the local one if the model has it (see ``layer_ropes``)."""
        rotations = [self.rotary_emb.forward(position_ids, dtype)]
        if self.local_rotary_emb is not None:
            rotations.append(self.local_rotary_emb.forward(position_ids, dtype))
        return rotations

    def forward(self, hidden, attention_mask, position_ids, cache, num_layers, output_hidden_states, output_attentions):
        length = hidden.shape[1]
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = (torch.arange(length, device=hidden.device) + past).unsqueeze(0)
        rotations = self.rotations(position_ids, hidden.dtype)
        explicit = output_attentions or self.explicit_masks
        masks = {}
        for window, layer_idx in self.mask_layers.items():
            if cache is not None:
                query_offset = getattr(cache, "get_query_offset", cache.get_seq_length)(layer_idx)
                kv_length, kv_offset = cache.get_mask_sizes(length, layer_idx)
            else:
                query_offset, kv_length, kv_offset = 0, length, 0
            masks[window] = attention_mask_for(
                attention_mask, length, query_offset, kv_length, kv_offset, window, hidden.device, explicit
            )

        all_hidden = [hidden] if output_hidden_states else None
        all_weights = [] if output_attentions else None
        for layer, window, rope in self.layer_plan[:num_layers]:
            mask, is_causal = masks[window]
            cos, sin = rotations[rope]
            hidden, weights = layer.forward(hidden, cos, sin, mask, is_causal, cache, output_attentions)
            if all_hidden is not None:
                all_hidden.append(hidden)
            if all_weights is not None:
                all_weights.append(weights)
        hidden = self.norm.forward(hidden)
        if all_hidden is not None:
            all_hidden[-1] = hidden  # transformers reports the last layer's output after the final norm
        return hidden, all_hidden, all_weights


class NativeLlamaForCausalLM(nn.Module, GenerationMixin):
    """A Llama-family causal LM with transformers' forward signature and genplug's ``generate()``.

    Build one with :func:`genplug.plugins.models.llama.loader.load_model` from a checkpoint directory,
    or from a :class:`NativeLlamaConfig` (random weights) for training.
    """

    main_input_name = "input_ids"
    # The forward over an empty static cache reads nothing on the host but the cache's counters, so
    # the CUDA-graph loop may capture the prompt's forward and replay it (core/prefill_graph.py).
    prefill_capturable = True

    def __init__(self, config: NativeLlamaConfig):
        super().__init__()
        self.config = config
        self.generation_config = None  # a genplug GenerationConfig when loaded from a checkpoint
        self.model = NativeLlamaModel(config)
        self.lm_head = Projection(config.hidden_size, config.vocab_size, bias=False)
        self.final_logit_softcapping = config.final_logit_softcapping
        # whether the fused Triton decode kernels implement this model's step (graph_step.fused_kernels_cover)
        self.fused_kernels_fit = fused_kernels_cover(config)
        self.tie_weights()

    # ------------------------------------------------------------------ facts about the model

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight_t.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight_t.dtype

    def get_input_embeddings(self) -> TokenEmbedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> Projection:
        return self.lm_head

    def logits_of(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head over final-normed ``hidden``, soft-capped as ``tanh(x / cap) * cap`` where the
        config sets ``final_logit_softcapping`` (Gemma 2, optionally Gemma 3)."""
        logits = self.lm_head.forward(hidden)
        cap = self.final_logit_softcapping
        if cap is None:
            return logits
        return torch.tanh(logits / cap) * cap

    def tie_weights(self) -> None:
        """Share the embedding matrix with the output head when the config says so (after loading)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight_t = self.model.embed_tokens.weight_t

    def new_cache(self, batch_size: int = 1, max_cache_len: Optional[int] = None):
        """An empty cache from the ``"dynamic"`` cache backend (or the fallback when none is installed)."""
        from genplug.cache import CacheRequest, build_cache
        from genplug.plugin_manager import get_plugin_manager

        registry = get_plugin_manager().registries.cache_backends
        if "dynamic" not in registry:
            from .fallback_cache import FallbackDynamicCache

            return FallbackDynamicCache(self.config.num_hidden_layers)
        request = CacheRequest(
            model_config=self.config, batch_size=batch_size, dtype=self.dtype, device=self.device,
            max_cache_len=max_cache_len or self.config.max_position_embeddings,
        )
        return build_cache(registry, "dynamic", request)

    def store_for_gpu_decode(self) -> None:
        """Re-store the q/k/v, output, gate/up and down projections and the output head (with the embedding
        matrix, where it is tied) ``[out, in]`` (``weight_t`` stays their transpose).

        A one-row decode step then runs them through genplug's split-K GEMV kernel, which reads that
        layout faster than cuBLAS reads either (bench/probes/gemv_configs.py) and, unlike cuBLAS, reads its
        first weights while the kernel before it finishes (gate/up since the twelfth session, H100, batch-1
        greedy 890.8 against 876.4 / 875.3 tokens/s, batch 16 and 64 unchanged: bench/probes/gate_up_storage.py);
        several rows' matmuls (cuBLAS) read either layout. :func:`.loader.load_model` does this for CUDA
        models; same values, new storage.
        """
        for layer in self.model.layers:
            for projection in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj,
                               layer.mlp.down_proj):
                projection.weight_t = _stored_out_in(projection.weight_t)
        tied = self.lm_head.weight_t is self.model.embed_tokens.weight_t
        self.lm_head.weight_t = _stored_out_in(self.lm_head.weight_t)  # for the GEMV (fused_step.HEAD_GEMV)
        if tied:  # the embedding lookup then reads one contiguous row per token
            self.model.embed_tokens.weight_t = self.lm_head.weight_t

    # ------------------------------------------------------------------ checkpoints

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype=None) -> "NativeLlamaForCausalLM":
        """The model of a local checkpoint directory (its tokenizer: :func:`.loader.load_model`)."""
        from .loader import load_model

        return load_model(path, device=device, dtype=dtype)[0]

    def save_pretrained(self, directory) -> None:
        """Write config.json, model.safetensors (transformers' layout) and the generation config, if any."""
        from .loader import save_model

        save_model(self, directory)
        if self.generation_config is not None:
            self.generation_config.save_pretrained(directory)

    # ------------------------------------------------------------------ the CUDA-graph decode step

    def static_decode_step(self, token, position_ids, slot, valid, layers):
        """One capturable decode step over a static cache (see :mod:`.graph_step`)."""
        return static_decode_step(self, token, position_ids, slot, valid, layers)

    def compiled_static_decode_step(self, options: dict):
        """:meth:`static_decode_step` with its per-layer and head parts compiled (regional compilation)."""
        layer_fn, head_fn = compiled_step_parts(options)
        return functools.partial(static_decode_step, self, layer_fn=layer_fn, head_fn=head_fn)

    def supports_static_decode(self, cache) -> bool:
        return supports_static_decode(self, cache)

    def _fused_static_step(self, hidden, attention_mask, position_ids, cache, input_ids=None) -> Optional[torch.Tensor]:
        """Logits of one new token per row through the fused decode kernels, as the CUDA-graph step
        computes them (same function, same bits: given ``input_ids``, the first norm kernel embeds them as
        the step's does), or None when this cache/mask is not a case for it."""
        if cache is None or not supports_static_decode(self, cache):
            return None
        layers = cache.layers
        past, max_len = layers[0].get_seq_length(), layers[0].max_cache_len
        if past + 1 > max_len or (attention_mask is not None and tuple(attention_mask.shape) != (hidden.shape[0], past + 1)):
            return None  # the general path raises the cache's own error / handles other mask shapes
        valid = torch.zeros(hidden.shape[0], max_len, dtype=torch.bool, device=hidden.device)
        valid[:, : past + 1] = True if attention_mask is None else attention_mask.bool()
        if position_ids is None:
            position_ids = torch.full((1, 1), past, dtype=torch.long, device=hidden.device)
        from .fused_step import fused_decode_hidden, fused_logits  # imports Triton: only where the kernels run

        normed = fused_decode_hidden(self, hidden if input_ids is None else None, position_ids, layers[0].position,
                                     valid, layers, token=input_ids)
        for layer in layers:
            layer.mark_written(1)
        return fused_logits(self, normed)

    # ------------------------------------------------------------------ running it

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Any = None,
        use_cache: bool = True,
        logits_to_keep: Union[int, torch.Tensor] = 0,
        inputs_embeds: Optional[torch.Tensor] = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        return_dict: bool = True,
        exit_layer: Optional[int] = None,
    ) -> Union[CausalLMOutput, Tuple]:
        """Logits for the tokens of ``input_ids`` (``[batch, seq]``), attending over ``past_key_values``.

        ``attention_mask`` is the 2-D 0/1 padding mask over cached plus new tokens; ``position_ids``
        default to cache positions (pass them for left-padded batches). ``logits_to_keep=k`` computes
        logits for the last ``k`` positions only (0: all; a 1-D tensor: those positions).
        ``exit_layer=k`` runs only the first ``k`` layers and reads logits from there through the final
        norm and head (early-exit drafting; deeper layers' caches are left untouched).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds to the model")
        hidden = self.model.embed_tokens.forward(input_ids) if inputs_embeds is None else inputs_embeds
        num_layers = self.config.num_hidden_layers
        if exit_layer is not None:
            if not 1 <= exit_layer <= num_layers:
                raise ValueError(
                    f"exit_layer={exit_layer} is outside 1..{num_layers}: it is how many of the model's "
                    f"{num_layers} layers run before the logits are read"
                )
            num_layers = exit_layer
        cache = past_key_values
        if cache is None and use_cache:
            cache = self.new_cache(hidden.shape[0])
        if (
            hidden.shape[1] == 1 and num_layers == self.config.num_hidden_layers and isinstance(logits_to_keep, int)
            and not (output_hidden_states or output_attentions) and self.fused_kernels_fit
            and fused_kernels_apply(hidden)
        ):
            logits = self._fused_static_step(hidden, attention_mask, position_ids, cache, input_ids)
            if logits is not None:
                output = CausalLMOutput(logits=logits, past_key_values=cache if use_cache else None)
                return output if return_dict else output.to_tuple()

        hidden, all_hidden, all_weights = self.model.forward(
            hidden, attention_mask, position_ids, cache, num_layers, output_hidden_states, output_attentions
        )
        if isinstance(logits_to_keep, int):
            if logits_to_keep:
                hidden = hidden[:, -logits_to_keep:]
        else:
            hidden = hidden[:, logits_to_keep]
        output = CausalLMOutput(
            logits=self.logits_of(hidden),
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_weights) if all_weights is not None else None,
        )
        return output if return_dict else output.to_tuple()
