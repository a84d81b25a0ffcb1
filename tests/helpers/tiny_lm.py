"""A tiny pure-torch causal LM that follows genplug's model protocol (docs/models.md).

It lets the decoding loop be tested without transformers: transformers' calling convention,
a cache passed as ``past_key_values`` and used through ``update`` / ``get_seq_length``, left padding
through ``attention_mask`` and ``position_ids``, and ``logits_to_keep``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Optional

import torch
from torch import nn


class _ListCache:
    """A minimal cache for when the caller passes none (the model protocol lets a model make its own)."""

    capabilities = frozenset({"crop"})
    is_compileable = False

    def __init__(self):
        self.keys, self.values = [], []

    def update(self, k, v, layer_idx, *args, **kwargs):
        if layer_idx == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], k], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], v], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx=0):
        return self.keys[layer_idx].shape[-2] if len(self.keys) > layer_idx else 0

    def crop(self, max_length):
        self.keys = [k[..., :max_length, :] for k in self.keys]
        self.values = [v[..., :max_length, :] for v in self.values]


class TinyConfig(SimpleNamespace):
    def get_text_config(self, decoder=True):
        return self


class TinyCausalLM(nn.Module):
    """Embeddings + a few causal self-attention blocks + an LM head; seeded random weights."""

    main_input_name = "input_ids"

    def __init__(self, vocab_size=64, hidden=32, layers=2, heads=2, max_positions=256, seed=0,
                 eos_token_id=None, bos_token_id=None, pad_token_id=None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.config = TinyConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                 num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads,
                                 max_position_embeddings=max_positions, is_encoder_decoder=False,
                                 eos_token_id=eos_token_id, bos_token_id=bos_token_id, pad_token_id=pad_token_id,
                                 sliding_window=None, layer_types=None)
        self.generation_config = None
        self.embed = nn.Embedding(vocab_size, hidden)
        self.pos = nn.Embedding(max_positions, hidden)
        self.qkv = nn.ModuleList(nn.Linear(hidden, 3 * hidden) for _ in range(layers))
        self.out = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, vocab_size)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / math.sqrt(p.shape[-1])))
        self.heads = heads
        self.forward_calls = 0

    def forward(self, input_ids, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, past_key_values=None, use_cache: bool = True,
                logits_to_keep: int = 0, output_attentions: bool = False, output_hidden_states: bool = False,
                return_dict: bool = True):
        self.forward_calls += 1
        batch, q_len = input_ids.shape
        if use_cache and past_key_values is None:
            past_key_values = _ListCache()
        past = past_key_values.get_seq_length() if use_cache else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + q_len, device=input_ids.device).expand(batch, -1)
        x = self.embed(input_ids) + self.pos(position_ids)
        kv_len = past + q_len
        causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=x.device).tril(diagonal=past)
        allowed = causal[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, -kv_len:].bool()
        hidden_states, attentions = [x], []
        for layer, (qkv, out) in enumerate(zip(self.qkv, self.out)):
            q, k, v = qkv(x).view(batch, q_len, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            if use_cache:
                k, v = past_key_values.update(k, v, layer)
            weights = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            weights = weights.masked_fill(~allowed, torch.finfo(weights.dtype).min).softmax(-1)
            attentions.append(weights)
            x = x + out((weights @ v).transpose(1, 2).reshape(batch, q_len, -1))
            hidden_states.append(x)
        kept = x if not logits_to_keep else x[:, -logits_to_keep:]
        return SimpleNamespace(
            logits=self.head(kept),
            past_key_values=past_key_values if use_cache else None,
            attentions=tuple(attentions) if output_attentions else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
        )


def recompute_greedy(model, input_ids, max_new_tokens, attention_mask=None, eos_token_id=None, pad_token_id=0):
    """The oracle: greedy decoding that re-runs the model on the whole sequence at every step."""
    ids = input_ids.clone()
    mask = attention_mask.clone() if attention_mask is not None else torch.ones_like(ids)
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = model(ids, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, -1]
        nxt = logits.argmax(-1)
        if eos_token_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
        ids = torch.cat([ids, nxt[:, None]], -1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], -1)
        if eos_token_id is not None:
            done |= nxt == eos_token_id
            if bool(done.all()):
                break
    return ids
