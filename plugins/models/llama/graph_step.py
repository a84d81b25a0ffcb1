"""One decode step of the native model written for CUDA-graph capture (gpt-fast's decode_one_token).

Shapes never change from step to step and nothing is read back to the host: the token to feed, its
rotary position and the cache slot it writes are device tensors, the keys/values go into the static
cache's preallocated buffers with ``index_copy_``, and the attention mask is a ``[batch, max_cache_len]``
bool buffer of the slots that hold real tokens. The same weights serve the eager forward.

On CUDA in half precision the uncompiled step runs the fused Triton kernels of :mod:`.decode_kernels`
(:func:`fused_decode_hidden`); the model's eager forward takes the same function for a one-token step
over a static cache, so both paths compute the same bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genplug.models import compile_once

from . import decode_kernels
from .rope import apply_rotary


def static_decode_step(model, token: torch.Tensor, position_ids: torch.Tensor, slot: torch.Tensor,
                       valid: torch.Tensor, layers, layer_fn=None, head_fn=None) -> torch.Tensor:
    """Logits ``[batch, vocab]`` (float32) for ``token [batch, 1]``; writes its keys/values at ``slot``.

    ``layers`` are the static cache's per-layer objects with ``keys`` / ``values`` buffers
    ``[batch, kv_heads, max_cache_len, head_dim]``. ``valid[b, s]`` says slot ``s`` of row ``b`` may be
    attended to; the caller marks ``slot`` valid before the step. ``layer_fn`` / ``head_fn`` replace
    :func:`decode_layer` / :func:`decode_head` (their compiled versions, see :func:`compiled_step_parts`).
    """
    core = model.model
    hidden = core.embed_tokens(token)
    if layer_fn is None and decode_kernels.usable(hidden):
        normed = fused_decode_hidden(model, hidden, position_ids, slot, valid, layers)
        return model.lm_head(normed)[:, -1].float()
    cos, sin = core.rotary_emb(position_ids, hidden.dtype)
    mask = valid[:, None, None, :]
    index = slot.view(1)
    layer_fn = layer_fn or decode_layer
    for layer, cache_layer in zip(core.layers, layers):
        hidden = layer_fn(layer, hidden, cos, sin, mask, index, cache_layer.keys, cache_layer.values)
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
    qk = apply_rotary(qkv[:, :, : heads + kv_heads], cos, sin)
    keys.index_copy_(2, index, qk[:, :, heads:].transpose(1, 2))
    values.index_copy_(2, index, qkv[:, :, heads + kv_heads:].transpose(1, 2))
    queries = qk[:, :, :heads].reshape(batch, kv_heads, heads // kv_heads, dim)
    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
    hidden = hidden + attn.o_proj(out.reshape(batch, 1, heads * dim))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def fused_decode_hidden(model, hidden, position_ids, slot, valid, layers) -> torch.Tensor:
    """The final-normed hidden state ``[batch, 1, hidden]`` of the embedded tokens ``hidden``, through the
    fused kernels; writes their keys/values at ``slot`` (same arguments as :func:`static_decode_step`).

    Each layer hands on ``(residual, delta)`` unsummed, so every residual add happens inside the next
    norm's kernel.
    """
    core = model.model
    cos, sin = core.rotary_emb(position_ids, hidden.dtype)
    delta = None
    for layer, cache_layer in zip(core.layers, layers):
        hidden, delta = fused_decode_layer(layer, hidden, delta, cos, sin, slot, valid,
                                           cache_layer.keys, cache_layer.values)
    return decode_kernels.add_rms_norm(hidden, delta, core.norm.weight, core.norm.eps)[1]


def fused_decode_layer(layer, residual, delta, cos, sin, slot, valid, keys, values):
    """One decoder layer with the fused kernels: ``(residual, delta)`` in, ``(residual, delta)`` out.

    Around the four matmuls run three small kernels: add+norm, RoPE+cache write+attention, add+norm.
    At batch 1, projections stored ``[out, in]`` go through genplug's split-K GEMV, whose partial sums
    the next kernel adds up while loading; the down projection then computes SiLU(gate)*up as it reads
    its input. Other matmuls are PyTorch's, and SiLU*up is one more small kernel.
    """
    attn, mlp = layer.self_attn, layer.mlp
    one_row = residual.shape[0] == 1
    norm = layer.input_layernorm
    residual, normed = decode_kernels.add_rms_norm(residual, delta, norm.weight, norm.eps)
    out = decode_kernels.rope_cache_attention(
        _matmul(attn.qkv_proj, normed, one_row), cos, sin, slot, valid, keys, values,
        attn.num_heads, attn.num_kv_heads, attn.head_dim,
    )
    norm = layer.post_attention_layernorm
    residual, normed = decode_kernels.add_rms_norm(residual, _matmul(attn.o_proj, out, one_row), norm.weight, norm.eps)
    gate_up = _matmul(mlp.gate_up_proj, normed, one_row)
    down = mlp.down_proj
    if mlp.act is F.silu and _gemv_takes(down, one_row):
        return residual, decode_kernels.gemv(gate_up, down.weight_t, down.bias, silu_input=True)
    if isinstance(gate_up, decode_kernels.PartialSums):
        gate_up = gate_up.total().to(residual.dtype)
    if mlp.act is F.silu:
        activated = decode_kernels.silu_mul(gate_up)
    else:
        gate, up = gate_up.chunk(2, dim=-1)
        activated = mlp.act(gate) * up
    return residual, down.forward(activated)


def _gemv_takes(projection, one_row: bool) -> bool:
    """Whether genplug's GEMV runs this projection: one row, and one weight matrix stored ``[out, in]``
    (where it reads faster than cuBLAS: bench/probes/gemv_configs.py; the loader stores the
    projections that gain so on CUDA)."""
    weight = getattr(projection, "weight_t", None)
    return one_row and decode_kernels.gemv_applies(weight) and weight.stride(0) == 1


def _matmul(projection, x, one_row: bool):
    """``projection(x)``: genplug's GEMV where :func:`_gemv_takes` says so, else PyTorch's matmul."""
    if _gemv_takes(projection, one_row):
        return decode_kernels.gemv(x, projection.weight_t, projection.bias)
    return projection.forward(x)


def decode_head(model, hidden):
    """Final norm and output head: float32 logits of the last position."""
    return model.lm_head(model.model.norm(hidden))[:, -1].float()


def compiled_step_parts(options: dict):
    """``(layer_fn, head_fn)`` compiled with ``torch.compile(**options)``, made once per process and options.

    Only the model's own work is compiled -- the processors around it run as they are, inside the same
    CUDA graph -- so a new call with other processors, a new cache or another batch size reuses the
    compiled code (a new shape retraces; nothing else does).
    """
    return compile_once(decode_layer, options), compile_once(decode_head, options)


def supports_static_decode(model, cache) -> bool:
    """Whether this model + cache pair can use :func:`static_decode_step`: full attention, static buffers."""
    config = model.config
    if any(w is not None for w in getattr(model.model, "layer_windows", [None])):
        return False
    layers = getattr(cache, "layers", None)
    if not layers or len(layers) != config.num_hidden_layers:
        return False
    return all(getattr(l, "keys", None) is not None and getattr(l, "position", None) is not None
               and type(l).__name__ == "StaticLayer" for l in layers)
