"""One decode step of the native model written for CUDA-graph capture (gpt-fast's decode_one_token).

Shapes never change from step to step and nothing is read back to the host: the token to feed, its
rotary position and the cache slot it writes are device tensors, the keys/values go into the static
cache's preallocated buffers with ``index_copy_``, and the attention mask is a ``[batch, max_cache_len]``
bool buffer of the slots that hold real tokens. The same weights serve the eager forward.

On CUDA in half precision the uncompiled step runs the fused Triton kernels instead
(:func:`.fused_step.fused_decode_hidden`, where :func:`fused_kernels_apply` and the model is one they
implement, :func:`fused_kernels_cover`); the model's eager forward takes the same function for a one-token
step over a static cache, so both paths compute the same bits.

Sliding-window layers (Gemma 2/3, Qwen2's hybrids) take part when their buffer holds the whole static
cache, i.e. nothing is evicted before the cache is full: their slot ``s`` is then cache position ``s`` as
in a full layer, and the window becomes one more condition on the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genplug import triton_support
from genplug.models import compile_once


HALF_PRECISION = (torch.float16, torch.bfloat16)


def fused_kernels_apply(hidden: torch.Tensor) -> bool:
    """Whether the step of ``hidden`` (the embedded new tokens) runs the fused Triton kernels:
    half precision on CUDA, Triton installed, ``GENPLUG_DECODE_KERNELS`` not ``0`` (no Triton import)."""
    return triton_support.runs_on(hidden, HALF_PRECISION)


def fused_kernels_cover(config) -> bool:
    """Whether the fused kernels compute this model's decode step: every block of the family -- Llama's,
    with Qwen3's q/k norms, Phi-3's partial rotary and LongRoPE's scaled cos/sin, Gemma's (1 + weight)
    norms, sandwich norms, attention scale and soft-capping, tanh-GELU, per-layer RoPE and sliding
    layers -- as long as RoPE turns an even number of dimensions."""
    return config.rotary_dim % 2 == 0


def static_decode_step(model, token: torch.Tensor, position_ids: torch.Tensor, slot: torch.Tensor,
                       valid: torch.Tensor, layers, layer_fn=None, head_fn=None) -> torch.Tensor:
    """Logits ``[batch, vocab]`` for ``token [batch, 1]``; writes its keys/values at ``slot``. Float32,
    except through the fused kernels, where they stay in the head's half precision (the caller converts).

    ``layers`` are the static cache's per-layer objects with ``keys`` / ``values`` buffers
    ``[batch, kv_heads, max_cache_len, head_dim]``. ``valid[b, s]`` says slot ``s`` of row ``b`` may be
    attended to; the caller marks ``slot`` valid before the step. ``layer_fn`` / ``head_fn`` replace
    :func:`decode_layer` / :func:`decode_head` (their compiled versions, see :func:`compiled_step_parts`).
    """
    core = model.model
    if layer_fn is None and model.fused_kernels_fit and fused_kernels_apply(core.embed_tokens.weight_t):
        from .fused_step import fused_decode_hidden, fused_logits  # imports Triton: only where it runs

        # positions stay below the cache length: a token's position never passes its slot; the first
        # layer's norm kernel looks the tokens up
        normed = fused_decode_hidden(model, None, position_ids, slot, valid, layers, positions_below=valid.shape[-1],
                                     token=token)
        # float32 from genplug's GEMV, else in the head's dtype: the loop's token choice reads half precision
        # as it is, saving a copy of the row to float32 (~3.6 us a step at 128k entries on an H100) where no
        # processor runs
        return fused_logits(model, normed)[:, -1]
    hidden = core.embed_tokens(token)
    rotations = core.rotations(position_ids, hidden.dtype)
    masks = {None: valid[:, None, None, :]}
    for window in set(core.layer_windows) - {None}:  # a key slot is in the window of the query's slot
        in_window = torch.arange(valid.shape[-1], device=valid.device) > slot - window
        masks[window] = masks[None] & in_window
    index = slot.view(1)
    layer_fn = layer_fn or decode_layer
    for (layer, window, rope), cache_layer in zip(core.layer_plan, layers):
        cos, sin = rotations[rope]
        hidden = layer_fn(layer, hidden, cos, sin, masks[window], index, cache_layer.keys, cache_layer.values)
    return (head_fn or decode_head)(model, hidden)


def decode_layer(layer, hidden, cos, sin, mask, index, keys, values):
    """One decoder layer for one new token; its keys/values are written into ``keys``/``values`` at ``index``.

    Every layer runs this same function with its own module and buffers, so torch.compile traces it
    once for all of them (regional compilation: compile time does not grow with depth).
    """
    attn = layer.self_attn
    batch = hidden.shape[0]
    heads, kv_heads, dim = attn.num_heads, attn.num_kv_heads, attn.head_dim
    qkv = attn.qkv_proj(layer.input_layernorm(hidden)).view(batch, 1, heads + 2 * kv_heads, dim)
    qk = attn.rotated_queries_keys(qkv, cos, sin)
    keys.index_copy_(2, index, qk[:, :, heads:].transpose(1, 2))
    values.index_copy_(2, index, qkv[:, :, heads + kv_heads:].transpose(1, 2))
    if attn.softcap is None:
        queries = qk[:, :, :heads].reshape(batch, kv_heads, heads // kv_heads, dim)
        out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask, scale=attn.scale)
    else:  # soft-capped scores (Gemma 2): eager attention, as in the model's forward
        out = attn.attend_eagerly(qk[:, :, :heads].transpose(1, 2), keys, values, mask)[0]
    return layer.add_attention_and_mlp(hidden, attn.o_proj(out.reshape(batch, 1, heads * dim)))


def decode_head(model, hidden):
    """Final norm and output head (soft-capped where the model caps): float32 logits of the last position."""
    return model.logits_of(model.model.norm(hidden))[:, -1].float()


def compiled_step_parts(options: dict):
    """``(layer_fn, head_fn)`` compiled with ``torch.compile(**options)``, made once per process and options.

    Only the model's own work is compiled -- the processors around it run as they are, inside the same
    CUDA graph -- so a new call with other processors, a new cache or another batch size reuses the
    compiled code (a new shape retraces; nothing else does).
    """
    return compile_once(decode_layer, options), compile_once(decode_head, options)


def supports_static_decode(model, cache) -> bool:
    """Whether this model + cache pair can use :func:`static_decode_step`: static buffers, each of them a
    full-attention layer or a sliding one whose buffer is as long as the full layers' (at least one)."""
    layers = getattr(cache, "layers", None)
    if not layers or len(layers) != model.config.num_hidden_layers:
        return False
    if not all(getattr(l, "keys", None) is not None and getattr(l, "position", None) is not None for l in layers):
        return False
    kinds = [type(l).__name__ for l in layers]
    full = {l.keys.shape[2] for l, kind in zip(layers, kinds) if kind == "StaticLayer"}
    if len(full) != 1:
        return False
    for layer, kind, window in zip(layers, kinds, model.model.layer_windows):
        if kind == "StaticLayer":
            continue
        # a sliding buffer that spans the cache never shifts: its slots are cache positions
        if window is None or kind != "StaticSlidingLayer" or layer.keys.shape[2] not in full:
            return False
    return True
