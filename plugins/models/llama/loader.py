"""Loading (and saving) native Llama-family models from local checkpoints in transformers' layout.

A checkpoint directory holds ``config.json``, the weights as ``model.safetensors`` or as shards listed
in ``model.safetensors.index.json``, and optionally ``generation_config.json`` and a ``tokenizer.json``.
Weights are checked against the shapes ``config.json`` implies before anything is built, and every
problem is one :class:`CheckpointError` naming the file and the fix. On the way in, transformers'
separate q/k/v and gate/up matrices are concatenated into the native model's fused ones; on the way out
(:func:`save_model`) they are split again, so transformers loads what genplug saves. Phi-3 checkpoints
store ``qkv_proj`` and ``gate_up_proj`` fused already, in the native order (q, k, v; gate, up): their
names map one to one.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from .config import NativeLlamaConfig
from .errors import CheckpointError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
# Tensors some checkpoints carry that the model recomputes instead of loading.
_RECOMPUTED_SUFFIXES = ("rotary_emb.inv_freq",)


# ---------------------------------------------------------------------------------------------- entry point


def default_model_path() -> str:
    """The directory of the small story model shipped inside genplug (``genplug/assets/default_model``)."""
    import genplug

    return os.path.join(os.path.dirname(os.path.abspath(genplug.__file__)), "assets", "default_model")


def load_default_model(device: Union[str, torch.device] = "cpu", dtype: Any = None):
    """``(model, tokenizer)`` of the embedded default model; see :func:`default_model_path`."""
    return load_model(default_model_path(), device=device, dtype=dtype)


def load_model(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu", dtype: Any = None):
    """Load a native model and its tokenizer (None when the directory has no tokenizer.json).

    ``dtype`` is a torch dtype or its name (``"bfloat16"``, ``"fp16"``...); None or ``"auto"`` keeps the
    dtype the checkpoint was saved in. The model is returned in eval mode.
    """
    from .modeling import NativeLlamaForCausalLM

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(
            f"{path!r} is not a directory: load_model expects a checkpoint directory written by "
            "transformers' save_pretrained (config.json plus model.safetensors)."
        )
    config = NativeLlamaConfig.from_json_file(os.path.join(path, CONFIG_FILE))
    tensors, origin = read_safetensors(path)
    target_dtype = resolve_dtype(dtype, config, tensors, path)
    state = to_native_state_dict(tensors, origin, config, path)
    device = torch.device(device)
    state = {name: tensor.to(device=device, dtype=target_dtype).contiguous() for name, tensor in state.items()}

    with torch.device("meta"):
        model = NativeLlamaForCausalLM(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    if device.type == "cuda":
        model.store_for_gpu_decode()
    model.generation_config = read_generation_config(path)
    model.eval()
    return model, read_tokenizer(path)


def resolve_dtype(dtype: Any, config: NativeLlamaConfig, tensors: Dict[str, torch.Tensor], path: str) -> torch.dtype:
    """The floating dtype to load in: the one asked for, else the checkpoint's own."""
    if dtype is None or dtype == "auto":
        name = config.dtype
        if name in _DTYPES:
            return _DTYPES[name]
        floating = [t.dtype for t in tensors.values() if t.is_floating_point()]
        return floating[0] if floating else torch.float32
    if isinstance(dtype, str):
        if dtype.replace("torch.", "") not in _DTYPES:
            raise CheckpointError(
                f"dtype={dtype!r} is not a dtype name genplug knows; use one of {', '.join(sorted(_DTYPES))} "
                "or 'auto' (the checkpoint's own dtype)."
            )
        return _DTYPES[dtype.replace("torch.", "")]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise CheckpointError(
            f"dtype={dtype!r} cannot hold model weights loaded from {path}: pass a floating dtype such as "
            "torch.float32, torch.bfloat16 or torch.float16."
        )
    return dtype


# ---------------------------------------------------------------------------------------------- weights


def read_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """All tensors of the checkpoint, and for each the file it came from (for error messages)."""
    from safetensors import safe_open

    single = os.path.join(path, WEIGHTS_FILE)
    index = os.path.join(path, WEIGHTS_INDEX_FILE)
    if os.path.isfile(single):
        files = {WEIGHTS_FILE: None}
    elif os.path.isfile(index):
        files = _shards_from_index(index, path)
    else:
        present = sorted(os.listdir(path))
        hint = ""
        if any(name.endswith((".bin", ".pt", ".pth")) for name in present):
            hint = (" It has PyTorch pickle weights: re-save them as safetensors, e.g. "
                    "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True).")
        raise CheckpointError(
            f"{path} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE} (files: {', '.join(present) or 'none'}); "
            f"genplug's native loader reads safetensors weights only.{hint}"
        )

    tensors: Dict[str, torch.Tensor] = {}
    origin: Dict[str, str] = {}
    for filename, wanted in files.items():
        file_path = os.path.join(path, filename)
        try:
            with safe_open(file_path, framework="pt", device="cpu") as handle:
                for name in handle.keys():
                    if wanted is None or name in wanted:
                        tensors[name] = handle.get_tensor(name)
                        origin[name] = file_path
        except Exception as error:  # safetensors raises its own error type for truncated or garbled files
            raise CheckpointError(
                f"{file_path} is not a readable safetensors file ({error}); the download or copy is probably "
                "incomplete: copy the file again from the original checkpoint."
            ) from None
        if wanted is not None:
            absent = sorted(set(wanted) - set(tensors))
            if absent:
                raise CheckpointError(
                    f"{index} says {file_path} holds {absent[0]} (and {len(absent) - 1} more) but the file does not; "
                    "the shards and the index come from different saves: copy them again together."
                )
    return tensors, origin


def _shards_from_index(index: str, path: str) -> Dict[str, set]:
    try:
        with open(index, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{index} is not a valid safetensors index ({type(error).__name__}: {error}); it must be JSON with a "
            "'weight_map' object mapping tensor names to shard files. Restore it from the original checkpoint."
        ) from None
    files: Dict[str, set] = {}
    for name, filename in weight_map.items():
        files.setdefault(filename, set()).add(name)
    missing = sorted(f for f in files if not os.path.isfile(os.path.join(path, f)))
    if missing:
        raise CheckpointError(
            f"{index} lists shard {missing[0]} but {path} does not contain it ({len(missing)} shard(s) missing); "
            "copy every shard next to the index."
        )
    return files


def checkpoint_projections(config: NativeLlamaConfig) -> Dict[str, List[str]]:
    """Each fused projection of a native layer -> the checkpoint's projections it concatenates, in order."""
    if config.model_type == "phi3":  # stored fused, as the native model holds them
        fused = {"self_attn.qkv_proj": ["self_attn.qkv_proj"], "mlp.gate_up_proj": ["mlp.gate_up_proj"]}
    else:
        fused = {"self_attn.qkv_proj": [f"self_attn.{p}_proj" for p in "qkv"],
                 "mlp.gate_up_proj": ["mlp.gate_proj", "mlp.up_proj"]}
    return {**fused, "self_attn.o_proj": ["self_attn.o_proj"], "mlp.down_proj": ["mlp.down_proj"]}


def transformers_shapes(config: NativeLlamaConfig) -> Dict[str, Tuple[int, ...]]:
    """Every tensor name transformers' ``*ForCausalLM`` stores for this config, with its shape."""
    hidden, inner = config.hidden_size, config.intermediate_size
    q_width = config.num_attention_heads * config.head_dim
    kv_width = config.num_key_value_heads * config.head_dim
    fused_in_checkpoint = config.model_type == "phi3"
    shapes: Dict[str, Tuple[int, ...]] = {"model.embed_tokens.weight": (config.vocab_size, hidden),
                                          "model.norm.weight": (hidden,)}
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, hidden)
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        if fused_in_checkpoint:
            attention = {"self_attn.qkv_proj": ((q_width + 2 * kv_width, hidden), config.qkv_bias)}
            mlp = {"mlp.gate_up_proj": ((2 * inner, hidden), config.mlp_bias)}
        else:
            attention = {"self_attn.q_proj": ((q_width, hidden), config.qkv_bias),
                         "self_attn.k_proj": ((kv_width, hidden), config.qkv_bias),
                         "self_attn.v_proj": ((kv_width, hidden), config.qkv_bias)}
            mlp = {"mlp.gate_proj": ((inner, hidden), config.mlp_bias), "mlp.up_proj": ((inner, hidden), config.mlp_bias)}
        projections = {**attention, "self_attn.o_proj": ((hidden, q_width), config.output_bias),
                       **mlp, "mlp.down_proj": ((hidden, inner), config.mlp_bias)}
        for name, (shape, has_bias) in projections.items():
            shapes[layer + name + ".weight"] = shape
            if has_bias:
                shapes[layer + name + ".bias"] = shape[:1]
        for norm in _layer_norms(config):
            shapes[layer + norm + ".weight"] = (hidden,)
        if config.qk_norm:
            shapes[layer + "self_attn.q_norm.weight"] = (config.head_dim,)
            shapes[layer + "self_attn.k_norm.weight"] = (config.head_dim,)
    return shapes


def to_native_state_dict(
    tensors: Dict[str, torch.Tensor], origin: Dict[str, str], config: NativeLlamaConfig, path: str
) -> Dict[str, torch.Tensor]:
    """Check transformers-named tensors against ``config`` and fuse them into the native model's names."""
    if tensors and not any(name.startswith("model.") for name in tensors):  # a bare LlamaModel save
        origin = {"model." + name: file for name, file in origin.items()}
        tensors = {"model." + name: tensor for name, tensor in tensors.items()}
    expected = transformers_shapes(config)
    config_path = os.path.join(path, CONFIG_FILE)
    present = {n for n in tensors if not n.endswith(_RECOMPUTED_SUFFIXES)}
    if config.tie_word_embeddings:
        present.discard("lm_head.weight")  # the tied head is the embedding matrix, as in transformers

    missing = sorted(set(expected) - present, key=_natural_key)
    if missing:
        raise CheckpointError(
            f"the weights in {path} lack {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f" that {config_path} implies ({_describe(config)}); the weights and config.json come from "
            "different models: use the config.json saved with these weights."
        )
    unexpected = sorted(present - set(expected), key=_natural_key)
    if unexpected:
        raise CheckpointError(
            f"{origin[unexpected[0]]} holds {unexpected[0]}" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
            + f", which a {config.model_type} model as described by {config_path} ({_describe(config)}) does not "
            "have; the weights and config.json come from different models: use the config.json saved with these weights."
        )
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != shape:
            raise CheckpointError(
                f"{name} in {origin[name]} has shape {got} but {config_path} ({_describe(config)}) needs {shape}; "
                "the weights and config.json come from different models: use the config.json saved with these weights."
            )
        if not tensors[name].is_floating_point():
            raise CheckpointError(
                f"{name} in {origin[name]} is {tensors[name].dtype}; the native models load floating-point weights "
                "only (quantized checkpoints are not supported): load this checkpoint with transformers instead."
            )

    # The native model stores matrices input-major (``weight_t``) and q/k/v and gate/up fused.
    state: Dict[str, torch.Tensor] = {"model.embed_tokens.weight_t": tensors["model.embed_tokens.weight"].t(),
                                      "model.norm.weight": tensors["model.norm.weight"]}
    head = "model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"
    state["lm_head.weight_t"] = tensors[head].t()
    fused = checkpoint_projections(config)
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        for target, parts in fused.items():
            state[f"{layer}{target}.weight_t"] = torch.cat([tensors[f"{layer}{p}.weight"] for p in parts], dim=0).t()
            if f"{layer}{parts[0]}.bias" in tensors:
                state[f"{layer}{target}.bias"] = torch.cat([tensors[f"{layer}{p}.bias"] for p in parts], dim=0)
        norms = _layer_norms(config) + (("self_attn.q_norm", "self_attn.k_norm") if config.qk_norm else ())
        for norm in norms:
            state[f"{layer}{norm}.weight"] = tensors[f"{layer}{norm}.weight"]
    return state


def to_transformers_state_dict(model) -> Dict[str, torch.Tensor]:
    """The model's weights under transformers' names and layout (q/k/v and gate/up split again, except for
    Phi-3, which stores them fused), contiguous."""
    config: NativeLlamaConfig = model.config
    split = config.model_type != "phi3"
    q_width = config.num_attention_heads * config.head_dim
    kv_width = config.num_key_value_heads * config.head_dim
    out: Dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        if name.endswith(".weight_t"):
            name, tensor = name[: -len("_t")], tensor.t()
        if ".qkv_proj." in name and split:
            for part, piece in zip("qkv", tensor.split([q_width, kv_width, kv_width], dim=0)):
                out[name.replace("qkv_proj", f"{part}_proj")] = piece
        elif ".gate_up_proj." in name and split:
            gate, up = tensor.split(config.intermediate_size, dim=0)
            out[name.replace("gate_up_proj", "gate_proj")] = gate
            out[name.replace("gate_up_proj", "up_proj")] = up
        elif name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        else:
            out[name] = tensor
    return {name: tensor.contiguous().clone() for name, tensor in out.items()}


def save_model(model, directory: Union[str, os.PathLike], generation_config: Optional[Dict[str, Any]] = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` (plus ``generation_config.json`` when given as a dict).

    The files are what transformers' ``save_pretrained`` writes, so both transformers and
    :func:`load_model` read them.
    """
    from safetensors.torch import save_file

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    config: NativeLlamaConfig = model.config
    config.dtype = str(model.dtype).replace("torch.", "")
    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as handle:
        handle.write(config.to_json_string())
    save_file(to_transformers_state_dict(model), os.path.join(directory, WEIGHTS_FILE), metadata={"format": "pt"})
    if generation_config is not None:
        with open(os.path.join(directory, GENERATION_CONFIG_FILE), "w", encoding="utf-8") as handle:
            handle.write(json.dumps(generation_config, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------- side files


def read_generation_config(path: str):
    """``generation_config.json`` as a genplug GenerationConfig, or None when the file is absent."""
    file_path = os.path.join(path, GENERATION_CONFIG_FILE)
    if not os.path.isfile(file_path):
        return None
    from genplug.config import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{file_path} cannot be read as a generation config ({error}); fix or delete the file "
            "(the model then uses genplug's defaults)."
        ) from None


def read_tokenizer(path: str):
    """The checkpoint's tokenizer (see :mod:`.tokenizer`), or None without a tokenizer.json."""
    from .tokenizer import NativeTokenizer, TOKENIZER_FILE

    if not os.path.isfile(os.path.join(path, TOKENIZER_FILE)):
        return None
    return NativeTokenizer.from_pretrained(path)


def _layer_norms(config: NativeLlamaConfig) -> Tuple[str, ...]:
    """The names of a decoder layer's norms over the hidden size (Gemma 2/3 have four)."""
    if config.sandwich_norms:
        return ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm")
    return ("input_layernorm", "post_attention_layernorm")


def _describe(config: NativeLlamaConfig) -> str:
    return (f"vocab_size={config.vocab_size}, hidden_size={config.hidden_size}, "
            f"intermediate_size={config.intermediate_size}, num_hidden_layers={config.num_hidden_layers}, "
            f"num_attention_heads={config.num_attention_heads}, num_key_value_heads={config.num_key_value_heads}, "
            f"head_dim={config.head_dim}")


def _natural_key(name: str) -> List[Any]:
    return [int(part) if part.isdigit() else part for part in name.split(".")]
