"""The native model's one-token decode step through the fused Triton kernels of :mod:`.decode_kernels`.

Same arguments and result as :func:`.graph_step.static_decode_step`'s model part; both the CUDA-graph
step and the model's eager one-token forward over a static cache call :func:`fused_decode_hidden`, so
the two compute the same bits. Imported only where :func:`.graph_step.fused_kernels_apply` says so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import decode_kernels

# The CUDA-graph step reads cos/sin from RoPE's table by position instead of launching RoPE's small
# kernels (bench/probes/step_variants.py switches it off: on an H100, 2026-12-05, batch-1 greedy
# 810 and 799 tokens/s with it in two runs, 801 without -- within run-to-run noise, ~9 fewer launches).
ROPE_TABLE = True


def fused_decode_hidden(model, hidden, position_ids, slot, valid, layers, positions_below=None) -> torch.Tensor:
    """The final-normed hidden state ``[batch, 1, hidden]`` of the embedded tokens ``hidden``, through the
    fused kernels; writes their keys/values at ``slot`` (same arguments as :func:`.graph_step.static_decode_step`).

    Each layer hands on ``(residual, delta)`` unsummed, so every residual add happens inside the next
    norm's kernel. ``positions_below=n`` promises every position is below ``n`` (the CUDA-graph step:
    a token's position never passes its cache slot): the attention kernels then read cos/sin from the
    rotary embedding's table by position, and the step launches no RoPE kernels (the same bits).
    """
    core = model.model
    positions = None
    if positions_below is not None and ROPE_TABLE and core.rotary_emb.tabulates():
        cos, sin = core.rotary_emb.table(positions_below, hidden.dtype, hidden.device)
        positions = position_ids.reshape(position_ids.shape[0], 1)
    else:
        cos, sin = core.rotary_emb(position_ids, hidden.dtype)
    # one set of zeroed counters for every layer's attention: each call leaves them zero again
    arrivals = None
    if decode_kernels.ATTENTION_CONFIG["one row" if hidden.shape[0] == 1 else "rows"][0] > 1:
        arrivals = decode_kernels.new_arrivals(hidden.shape[0], model.config.num_attention_heads, hidden.device)
    delta = None
    for layer, cache_layer in zip(core.layers, layers):
        hidden, delta = fused_decode_layer(layer, hidden, delta, cos, sin, slot, valid,
                                           cache_layer.keys, cache_layer.values, arrivals, positions)
    return decode_kernels.add_rms_norm(hidden, delta, core.norm.weight, core.norm.eps)[1]


def fused_decode_layer(layer, residual, delta, cos, sin, slot, valid, keys, values, arrivals=None, positions=None):
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
        attn.num_heads, attn.num_kv_heads, attn.head_dim, arrivals=arrivals,
        qk_norm=None if attn.q_norm is None else (attn.q_norm.weight, attn.k_norm.weight, attn.q_norm.eps),
        positions=positions,
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
    """Whether genplug's GEMV runs this projection: one row, and weights stored ``[out, in]`` (where it
    reads faster than cuBLAS: bench/probes/gemv_configs.py; the loader stores the projections that gain
    so on CUDA) -- one matrix, or the separate q/k/v or gate/up matrices of a transformers model's
    twin (``ConcatProjection``), read in place as one."""
    if not one_row:
        return False
    weights = _stored_weights(projection)
    return weights is not None and all(w.stride(0) == 1 for w in weights) and decode_kernels.gemv_applies_to_parts(
        weights, getattr(projection, "biases", None))


def _stored_weights(projection):
    weight = getattr(projection, "weight_t", None)
    return [weight] if weight is not None else getattr(projection, "weights_t", None)


def _matmul(projection, x, one_row: bool):
    """``projection(x)``: genplug's GEMV where :func:`_gemv_takes` says so, else PyTorch's matmul."""
    if _gemv_takes(projection, one_row):
        weights = _stored_weights(projection)
        biases = getattr(projection, "biases", None) or [getattr(projection, "bias", None)]
        return decode_kernels.gemv(x, weights, biases, checked=True)
    return projection.forward(x)
