"""The native model's one-token decode step through the fused Triton kernels of :mod:`.decode_kernels`.

Same arguments and result as :func:`.graph_step.static_decode_step`'s model part; both the CUDA-graph
step and the model's eager one-token forward over a static cache call :func:`fused_decode_hidden`, so
the two compute the same bits. Imported only where :func:`.graph_step.fused_kernels_apply` says so.
"""

from __future__ import annotations

import torch

from . import decode_kernels

# The CUDA-graph step reads cos/sin from RoPE's table by position instead of launching RoPE's small
# kernels (bench/probes/step_variants.py switches it off: on an H100, 2026-12-05, batch-1 greedy
# 810 and 799 tokens/s with it in two runs, 801 without -- within run-to-run noise, ~9 fewer launches).
ROPE_TABLE = True
# A one-row step's output head through genplug's GEMV where the head is stored ``[vocab, hidden]`` (see
# :meth:`..modeling.NativeLlamaForCausalLM.store_for_gpu_decode`; a transformers twin's head is stored so
# already): it reads its first weights while the final norm finishes, and its logits stay float32.
HEAD_GEMV = True


def fused_decode_hidden(model, hidden, position_ids, slot, valid, layers, positions_below=None,
                        token=None) -> torch.Tensor:
    """The final-normed hidden state ``[batch, 1, hidden]`` of the embedded tokens ``hidden``, through the
    fused kernels; writes their keys/values at ``slot`` (same arguments as :func:`.graph_step.static_decode_step`).
    With ``hidden`` None, ``token [batch, 1]`` is embedded by the first layer's norm kernel
    (:func:`.decode_kernels.embed_rms_norm`: the same bits, one launch fewer).

    Each layer hands on ``(residual, delta)`` unsummed, so every residual add happens inside the next
    norm's kernel (with Gemma 2/3's norm of the delta before it). ``positions_below=n`` promises every
    position is below ``n`` (the CUDA-graph step: a token's position never passes its cache slot): the
    attention kernels then read cos/sin from the rotary embeddings' tables by position, and the step
    launches no RoPE kernels (the same bits).
    """
    core = model.model
    like = hidden if hidden is not None else core.embed_tokens.weight_t  # dtype and device of the step
    rows = hidden.shape[0] if hidden is not None else token.shape[0]
    embeddings = [core.rotary_emb] + ([core.local_rotary_emb] if core.local_rotary_emb is not None else [])
    positions = None
    if positions_below is not None and ROPE_TABLE and all(e.tabulates() for e in embeddings):
        rotations = [e.table(positions_below, like.dtype, like.device) for e in embeddings]
        positions = position_ids.reshape(position_ids.shape[0], 1)
    else:
        rotations = [e(position_ids, like.dtype) for e in embeddings]
    arrivals = None
    if decode_kernels.ATTENTION_CONFIG["one row" if rows == 1 else "rows"][0] != 1:  # split (0: fitted, may split)
        arrivals = attention_arrivals(model, rows, like.device)
    delta = delta_norm = None
    embedded = (core.embed_tokens, token) if hidden is None else None  # the first layer's norm looks it up
    for (layer, window, rope), cache_layer in zip(core.layer_plan, layers):
        cos, sin = rotations[rope]
        hidden, delta, delta_norm = fused_decode_layer(layer, hidden, delta, delta_norm, cos, sin, slot, valid,
                                                       cache_layer.keys, cache_layer.values, arrivals, positions,
                                                       window, embedded)
        embedded = None
    return decode_kernels.add_rms_norm(hidden, delta, core.norm.scale(), core.norm.eps, delta_norm)[1]


def fused_logits(model, normed: torch.Tensor) -> torch.Tensor:
    """Logits ``[rows, 1, vocab]`` of the final-normed ``normed`` for the fused step, the CUDA graph's and the
    eager one-token forward's alike (so their bits agree): one row with a head stored ``[vocab, hidden]``
    goes through genplug's GEMV (float32 logits, soft-capped in float32 where the model caps); otherwise
    the model's own head (cuBLAS, in the head's dtype)."""
    head = model.lm_head
    if not (HEAD_GEMV and normed.shape[0] == 1 and _gemv_takes(head, True)):
        return model.logits_of(normed)
    parts = decode_kernels.gemv(normed, [head.weight_t], [getattr(head, "bias", None)], checked=True).parts
    logits = parts[0] if parts.shape[0] == 1 else parts.sum(0)  # one split wherever the vocabulary fills the GPU
    cap = model.final_logit_softcapping
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits.unsqueeze(1)


def attention_arrivals(model, rows: int, device: torch.device) -> torch.Tensor:
    """The zeroed counters every layer's attention kernel shares for its split merge, made once per model,
    batch size and device: each launch leaves its counters zero again, so a step (and its CUDA graph)
    needs no fill kernel of its own (1 us a step on an H100, tenth session's loop_timeline). Kept per
    model: steps of one model never run at once, those of two models might."""
    kept = model.__dict__.setdefault("_attention_arrivals", {})
    key = (rows, str(device))
    if key not in kept:
        kept[key] = decode_kernels.new_arrivals(rows, model.config.num_attention_heads, device)
    return kept[key]


def fused_decode_layer(layer, residual, delta, delta_norm, cos, sin, slot, valid, keys, values, arrivals=None,
                       positions=None, window=None, embedded=None):
    """One decoder layer with the fused kernels: ``(residual, delta, delta_norm)`` in and out, where
    ``delta_norm`` is the ``(weights, eps)`` of the norm ``delta`` takes before it is added (Gemma 2/3's
    post-feed-forward norm), or None.

    Around the four matmuls run three small kernels: add+norm, RoPE+cache write+attention, add+norm.
    At batch 1, projections stored ``[out, in]`` go through genplug's split-K GEMV, whose partial sums
    the next kernel adds up while loading; the down projection then computes act(gate)*up as it reads
    its input. Other matmuls are PyTorch's, and act(gate)*up is one more small kernel.
    ``embedded = (token embedding module, token [batch, 1])`` with ``residual`` None (the first layer):
    the input norm looks the tokens up itself.
    """
    attn, mlp = layer.self_attn, layer.mlp
    one_row = (residual if residual is not None else embedded[1]).shape[0] == 1
    norm = layer.input_layernorm
    if residual is None:
        table, token = embedded
        scale = table.scale_in(table.weight_t.dtype) if table.scale is not None else None
        residual, normed = decode_kernels.embed_rms_norm(token, table.weight_t, scale, norm.scale(), norm.eps)
    else:
        residual, normed = decode_kernels.add_rms_norm(residual, delta, norm.scale(), norm.eps, delta_norm)
    qkv = _matmul(attn.qkv_proj, normed, one_row)
    out = decode_kernels.rope_cache_attention(
        qkv, cos, sin, slot, valid, keys, values,
        attn.num_heads, attn.num_kv_heads, attn.head_dim, arrivals=arrivals,
        qk_norm=None if attn.q_norm is None else (attn.q_norm.scale(), attn.k_norm.scale(), attn.q_norm.eps),
        positions=positions, scale=attn.scale, softcap=attn.softcap, window=window,
    )
    if layer.pre_feedforward_layernorm is None:  # Llama: the attention output added as it is
        norm, attended_norm = layer.post_attention_layernorm, None
    else:  # Gemma 2/3: normed first, and the MLP's input has a norm of its own
        post = layer.post_attention_layernorm
        norm, attended_norm = layer.pre_feedforward_layernorm, (post.scale(), post.eps)
    residual, normed = decode_kernels.add_rms_norm(residual, _matmul(attn.o_proj, out, one_row), norm.scale(),
                                                   norm.eps, attended_norm)
    post = layer.post_feedforward_layernorm
    mlp_norm = None if post is None else (post.scale(), post.eps)
    gate_up = _matmul(mlp.gate_up_proj, normed, one_row)
    down = mlp.down_proj
    if mlp.gate_kind is not None and _gemv_takes(down, one_row):
        return residual, decode_kernels.gemv(gate_up, down.weight_t, down.bias, gated_input=mlp.gate_kind), mlp_norm
    if isinstance(gate_up, decode_kernels.PartialSums):
        gate_up = gate_up.total().to(residual.dtype)
    if mlp.gate_kind is not None:
        activated = decode_kernels.gated(gate_up, mlp.gate_kind)
    else:
        gate, up = gate_up.chunk(2, dim=-1)
        activated = mlp.act(gate) * up
    return residual, down.forward(activated), mlp_norm


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
