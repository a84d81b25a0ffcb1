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
# At one row, each RMSNorm runs inside the GEMV that reads its output: the GEMV before it adds its
# product into the residual stream and leaves the sums of squares (decode_kernels.NormedResidual), so
# a layer is five launches, not seven (bench/probes/step_variants.py switches it off).
NORMS_IN_GEMVS = True


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
    # one zeroed buffer (one memset) of counters for every layer's attention split merge and GEMV
    # residual add: each call leaves them zero again
    rows, heads, width = hidden.shape[0], model.config.num_attention_heads, hidden.shape[-1]
    split = decode_kernels.ATTENTION_CONFIG["one row" if rows == 1 else "rows"][0] > 1
    in_gemvs = rows == 1 and NORMS_IN_GEMVS
    zeroed = decode_kernels.gemv_counters(rows * heads * split + width * in_gemvs, hidden.device)
    arrivals = zeroed[: rows * heads] if split else None
    counters = zeroed[rows * heads * split:] if in_gemvs else None
    delta = None
    for layer, cache_layer in zip(core.layers, layers):
        hidden, delta = fused_decode_layer(layer, hidden, delta, cos, sin, slot, valid,
                                           cache_layer.keys, cache_layer.values, arrivals, positions, counters)
    return decode_kernels.add_rms_norm(hidden, delta, core.norm.weight, core.norm.eps)[1]


def fused_decode_layer(layer, residual, delta, cos, sin, slot, valid, keys, values, arrivals=None, positions=None,
                       counters=None):
    """One decoder layer with the fused kernels: ``(residual, delta)`` in, ``(residual, delta)`` out.

    Around the four matmuls run three small kernels: add+norm, RoPE+cache write+attention, add+norm.
    At batch 1, projections stored ``[out, in]`` go through genplug's split-K GEMV, whose partial sums
    the next kernel adds up while loading; the down projection then computes SiLU(gate)*up as it reads
    its input. Other matmuls are PyTorch's, and SiLU*up is one more small kernel. Where all four
    projections take the GEMV and ``counters`` are given, the norms run inside the GEMVs too
    (:func:`_layer_through_gemvs`).
    """
    attn, mlp = layer.self_attn, layer.mlp
    one_row = residual.shape[0] == 1
    if counters is not None and _gemvs_take_layer(layer, one_row):
        return _layer_through_gemvs(layer, residual, delta, cos, sin, slot, valid, keys, values, arrivals,
                                    positions, counters)
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


def _layer_through_gemvs(layer, residual, delta, cos, sin, slot, valid, keys, values, arrivals, positions, counters):
    """One row's layer in five launches: qkv GEMV (input norm inside), RoPE+cache+attention, o GEMV
    (adds into the residual stream), gate/up GEMV (post-attention norm inside), down GEMV (SiLU*up on
    the way in, adds into the residual stream). ``delta`` comes back a :class:`decode_kernels.NormedResidual`:
    ``residual`` already holds the sum, updated in place."""
    attn, mlp = layer.self_attn, layer.mlp
    norm = layer.input_layernorm
    if isinstance(delta, decode_kernels.NormedResidual):
        qkv = _gemv(attn.qkv_proj, delta, norm=(norm.weight, norm.eps))
    else:  # the first layer: a fresh residual stream (the GEMVs below add into it in place)
        residual, normed = decode_kernels.add_rms_norm(residual, delta, norm.weight, norm.eps, fresh=True)
        qkv = _gemv(attn.qkv_proj, normed)
    out = decode_kernels.rope_cache_attention(
        qkv, cos, sin, slot, valid, keys, values, attn.num_heads, attn.num_kv_heads, attn.head_dim,
        arrivals=arrivals, positions=positions,
        qk_norm=None if attn.q_norm is None else (attn.q_norm.weight, attn.k_norm.weight, attn.q_norm.eps),
    )
    summed = _gemv(attn.o_proj, out, residual=residual, counters=counters)
    norm = layer.post_attention_layernorm
    gate_up = _gemv(mlp.gate_up_proj, summed, norm=(norm.weight, norm.eps))
    return residual, _gemv(mlp.down_proj, gate_up, silu_input=True, residual=residual, counters=counters)


def _gemvs_take_layer(layer, one_row: bool) -> bool:
    """Whether all four projections of ``layer`` run through genplug's GEMV (the down projection with
    SiLU*up on its input), so the norms can run inside them."""
    attn, mlp = layer.self_attn, layer.mlp
    return (mlp.act is F.silu and _gemv_takes(attn.qkv_proj, one_row) and _gemv_takes(attn.o_proj, one_row)
            and _gemv_takes(mlp.gate_up_proj, one_row) and _gemv_takes(mlp.down_proj, one_row))


def _gemv(projection, x, **kwargs):
    """``projection`` through genplug's GEMV (checked by :func:`_gemv_takes`)."""
    weights = _stored_weights(projection)
    biases = getattr(projection, "biases", None) or [getattr(projection, "bias", None)]
    return decode_kernels.gemv(x, weights, biases, checked=True, **kwargs)


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
        return _gemv(projection, x)
    return projection.forward(x)
