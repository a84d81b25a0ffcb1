"""Run a transformers Llama / Mistral / Qwen2 / Qwen3 / Gemma / Phi-3 model on genplug's native kernels over its own weights.

transformers' modules cost most of a decode step wherever the model is small or the GPU is fed one
kernel at a time: on one CPU thread, a tiny Llama's forward is ~2 ms of Python per token, and on a GPU
a 1B model's eager forward is launch-bound. genplug's native Llama family computes the same function
with fewer operations. The *twin* is a native model whose parameters are views of the transformers
model's own tensors -- nothing is copied, so it follows in-place weight updates and costs no memory.

The twin is used only where it computes what the transformers model would:

* the model is a stock ``LlamaForCausalLM`` / ``MistralForCausalLM`` / ``Qwen2ForCausalLM`` /
  ``Qwen3ForCausalLM`` / ``GemmaForCausalLM`` / ``Gemma2ForCausalLM`` / ``Gemma3ForCausalLM`` /
  ``Phi3ForCausalLM`` whose
  every submodule is of a class from that model's transformers module, ``torch.nn`` or
  ``transformers.activations`` (a PEFT adapter, a quantized linear or any replaced module disables it);
* no forward hook or pre-hook is registered, on any module or globally, and no forward was replaced
  (on an instance, as accelerate's hooks do, or on a class);
* unquantized floating-point weights on one device, eval mode, SDPA or eager attention, and a config
  the native family supports (rope types default/llama3/linear/dynamic, for Phi-3 default/longrope with
  any ``partial_rotary_factor``; no ``pretraining_tp``, no bidirectional Gemma attention);
* per call: the cache is genplug's (or none) and no model argument beyond the native forward's is given.

Switch it off with ``native_kernels=False`` (a generation config field owned by this plugin).
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, Optional

import torch
from torch import nn

_SUPPORTED = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
              "Qwen3ForCausalLM": "qwen3", "GemmaForCausalLM": "gemma", "Gemma2ForCausalLM": "gemma2",
              "Gemma3ForCausalLM": "gemma3_text", "Phi3ForCausalLM": "phi3"}
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
_TWINS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> (fingerprint, twin)


def twin_or_reason(model: Any):
    """``(twin, None)`` where :func:`native_twin` can stand in for ``model``, else ``(None, the reason)``:
    both with one walk over the model (this runs on every generate() call)."""
    walked = []
    reason = why_no_twin(model, walked)
    return (native_twin(model, walked), None) if reason is None else (None, reason)


def why_no_twin(model: Any, walked=None) -> Optional[str]:
    """None when :func:`native_twin` can stand in for ``model``, else the reason it cannot. A list passed
    as ``walked`` receives the model's modules and parameters (:func:`modules_and_parameters`), once
    the checks have walked them."""
    name = type(model).__name__
    if name not in _SUPPORTED:
        return f"{name} is not a Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3 or Phi-3 causal LM"
    home = type(model).__module__
    if not home.startswith("transformers.models."):
        return f"{name} comes from {home}, not from transformers"
    if model.training:
        return "the model is in training mode"
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False):
        return "the model is quantized"
    config = model.config
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return f"attention implementation {config._attn_implementation!r}"
    if name == "Gemma2ForCausalLM" and config._attn_implementation == "sdpa" and config.attn_logit_softcapping:
        return "SDPA attention with attn_logit_softcapping (transformers refuses the pair; eager attention caps)"
    allowed = (home, "torch.nn.modules.", "transformers.activations")
    modules, parameters = modules_and_parameters(model)
    if walked is not None:
        walked[:] = [modules, parameters]
    for module in modules:
        kind = type(module)
        if not kind.__module__.startswith(allowed):
            return f"submodule {kind.__name__} ({kind.__module__}) replaces a stock module"
        if (module._forward_hooks or module._forward_pre_hooks) and any(
                not _is_output_capturing(hook)
                for hook in [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]):
            return f"a forward hook is registered on {kind.__name__}"
        own = module.__dict__
        if "forward" in own or "_hf_hook" in own:  # accelerate's hooks replace forward (and set _hf_hook)
            return f"the forward of a {kind.__name__} was replaced on the instance"
        forward_home = getattr(kind.forward, "__module__", "") or ""
        if not forward_home.startswith((kind.__module__, "torch.nn.modules.")):
            return f"{kind.__name__}.forward was patched (it comes from {forward_home})"
    hooks = sys.modules["torch.nn.modules.module"]
    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks:
        return "a global forward hook is registered"
    devices = set()
    for parameter in parameters:
        if parameter.dtype not in _FLOATS or parameter.is_meta or type(parameter) is not nn.Parameter:
            return f"a parameter is {type(parameter).__name__} of {parameter.dtype} on {parameter.device}"
        devices.add(parameter.device)
    if len(devices) != 1:
        return "the parameters are spread over several devices"
    try:
        _native_config(model)
    except Exception as exc:  # the native family refuses what it cannot compute
        return f"the native family does not take this config: {exc}"
    return None


def modules_and_parameters(model: nn.Module):
    """``(modules, parameters)`` of ``model``, each once, as ``model.modules()`` and ``model.parameters()`` list
    them, in one walk over the modules' own dicts: this runs on every generate() call, and torch's nested
    generators cost ~1 ms for a 16-layer model on a CPU (~0.1 ms this way)."""
    modules, parameters, seen, seen_parameters = [], [], set(), set()
    stack = [model]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        modules.append(module)
        for parameter in module._parameters.values():
            if parameter is not None and id(parameter) not in seen_parameters:
                seen_parameters.add(id(parameter))
                parameters.append(parameter)
        stack.extend(child for child in reversed(module._modules.values()) if child is not None)
    return modules, parameters


def _is_output_capturing(hook) -> bool:
    """transformers' own hooks that record hidden states / attentions once ``output_*`` was asked for
    (idle otherwise); the twin returns those outputs itself."""
    return getattr(hook, "__name__", "") == "output_capturing_hook" and \
        (getattr(hook, "__module__", "") or "").startswith("transformers.")


def native_twin(model: Any, walked=None):
    """The native model sharing ``model``'s weights (built once, rebuilt if its parameters were replaced);
    ``walked``: the model's :func:`modules_and_parameters`, where the caller has them."""
    parameters = (walked or modules_and_parameters(model))[1]
    fingerprint = tuple((id(p), p.data_ptr(), p.dtype, p.device) for p in parameters)
    cached = _TWINS.get(model)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    twin = _build(model)
    _TWINS[model] = (fingerprint, twin)
    return twin


def _native_config(model):
    from genplug.plugins.models.llama.config import NativeLlamaConfig

    data = model.config.to_dict()
    data["model_type"] = _SUPPORTED[type(model).__name__]
    return NativeLlamaConfig.from_dict(data, source="the transformers model's config")


class ConcatProjection(nn.Module):
    """Several linear maps applied to one input, outputs concatenated: q/k/v or gate/up, unfused.

    Stands for the native model's fused ``qkv_proj`` / ``gate_up_proj`` over transformers' separate
    weights, which it reads in place (``weight.t()`` views) instead of copying them into one matrix.
    (Phi-3 stores them fused: its twin views those matrices directly.)
    """

    def __init__(self, linears):
        super().__init__()
        self.weights_t = [linear.weight.t() for linear in linears]
        self.biases = [linear.bias for linear in linears]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x @ w if b is None else torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], -1)
                 for w, b in zip(self.weights_t, self.biases)]
        return torch.cat(parts, dim=-1)


def _view_of(linear) -> nn.Parameter:
    return nn.Parameter(linear.weight.t(), requires_grad=False)


def _build(model):
    from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM
    from genplug.plugins.models.llama.rope import RotaryEmbedding

    config = _native_config(model)
    with torch.device("meta"):
        twin = NativeLlamaForCausalLM(config)
    theirs = model.model
    ours = twin.model
    device = next(model.parameters()).device
    ours.embed_tokens.weight_t = nn.Parameter(theirs.embed_tokens.weight.t(), requires_grad=False)
    ours.rotary_emb = RotaryEmbedding(config.rope_parameters, config.head_dim, config.max_position_embeddings,
                                      device=device)
    if config.local_rope_parameters is not None:
        ours.local_rotary_emb = RotaryEmbedding(config.local_rope_parameters, config.head_dim,
                                                config.max_position_embeddings, device=device)
    ours.norm.weight = theirs.norm.weight
    norms = ["input_layernorm", "post_attention_layernorm"]
    if config.sandwich_norms:
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for mine, their in zip(ours.layers, theirs.layers):
        attention, mlp = their.self_attn, their.mlp
        for norm in norms:
            getattr(mine, norm).weight = getattr(their, norm).weight
        if config.model_type == "phi3":  # fused in transformers too: (q, k, v) and (gate, up), viewed as they are
            mine.self_attn.qkv_proj.weight_t = _view_of(attention.qkv_proj)
            mine.mlp.gate_up_proj.weight_t = _view_of(mlp.gate_up_proj)
        else:
            mine.self_attn.qkv_proj = ConcatProjection([attention.q_proj, attention.k_proj, attention.v_proj])
            mine.mlp.gate_up_proj = ConcatProjection([mlp.gate_proj, mlp.up_proj])
        if config.qk_norm:
            mine.self_attn.q_norm.weight = attention.q_norm.weight
            mine.self_attn.k_norm.weight = attention.k_norm.weight
        mine.self_attn.o_proj.weight_t = _view_of(attention.o_proj)
        mine.self_attn.o_proj.bias = attention.o_proj.bias
        mine.mlp.down_proj.weight_t = _view_of(mlp.down_proj)
        mine.mlp.down_proj.bias = mlp.down_proj.bias
    twin.lm_head.weight_t = _view_of(model.lm_head)
    twin.generation_config = None
    twin.eval()
    return twin
