"""The configuration of a native Llama-family model, read from (and written as) transformers' config.json.

One class covers Llama 2/3, Mistral, Qwen2, Qwen3, Gemma 1/2/3 (text), Phi-3/3.5/4-mini, SmolLM and
TinyLlama: they differ only in a few switches (biases on the projections, RMSNorm of each query and key
head, a sliding attention window, tied embeddings, RoPE scaling, Gemma's norms, embedding scale, attention
scale, soft-capping and per-layer-type RoPE, and Phi-3's partial rotary and LongRoPE). Keys this class
does not model are kept in ``extra`` so that a config read and written again loses nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import attrs

from .errors import CheckpointError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")
GEMMA_TYPES = ("gemma", "gemma2", "gemma3_text")
SUPPORTED_ACTIVATIONS = ("silu", "swish", "gelu", "gelu_pytorch_tanh", "relu")
FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"

# config.json keys turned into fields (or deliberately dropped) by ``from_dict``; the rest go to ``extra``.
_CONSUMED_KEYS = frozenset(
    {
        "model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
        "rope_parameters", "rope_scaling", "rope_theta", "hidden_act", "attention_bias", "mlp_bias",
        "tie_word_embeddings", "sliding_window", "use_sliding_window", "max_window_layers", "layer_types",
        "bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype", "transformers_version",
    }
)
# Further keys consumed for Gemma types (Gemma 3's attn_logit_softcapping is not among them: transformers'
# Gemma 3 attention ignores it, so it is only carried along in ``extra``).
_GEMMA_CONSUMED_KEYS = {
    "gemma2": frozenset({"hidden_activation", "query_pre_attn_scalar", "final_logit_softcapping",
                         "attn_logit_softcapping"}),
    "gemma3_text": frozenset({"hidden_activation", "query_pre_attn_scalar", "final_logit_softcapping",
                              "rope_local_base_freq"}),
}


@attrs.define(eq=True)
class NativeLlamaConfig:
    """Shapes and switches of a Llama-family decoder (the fields transformers' configs use, same names).

    ``qkv_bias`` / ``output_bias`` say which attention projections carry a bias (Llama's, Qwen3's and
    Gemma's ``attention_bias`` sets both, Qwen2 has q/k/v biases only). ``qk_norm``: every query and key
    head is RMS-normed (own weights over ``head_dim``) before RoPE, as in Qwen3 and Gemma 3.
    ``layer_types[i]`` is ``"sliding_attention"`` where layer ``i`` attends to the last ``sliding_window``
    tokens only.

    Gemma's switches: ``unit_offset_norms`` (every RMSNorm scales by ``1 + weight`` and rounds to the
    input dtype only after scaling), ``scale_embeddings`` (token embeddings times sqrt(hidden_size)),
    ``sandwich_norms`` (Gemma 2/3: the attention and MLP outputs are normed before the residual add, and
    the MLP input by its own norm), ``query_pre_attn_scalar`` (attention scores scaled by its inverse
    square root instead of head_dim's), ``attn_logit_softcapping`` / ``final_logit_softcapping``
    (``tanh(x / cap) * cap`` on attention scores / logits) and ``local_rope_parameters`` (Gemma 3: the
    RoPE of sliding layers, when it differs from ``rope_parameters``).

    Phi-3's lie in ``rope_parameters``: ``partial_rotary_factor`` (RoPE turns the first ``rotary_dim``
    dimensions of each head only) and ``rope_type="longrope"``; its checkpoints store q/k/v and gate/up
    fused already, as the native model does.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    model_type: str = "llama"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_parameters: Dict[str, Any] = attrs.field(factory=lambda: {"rope_type": "default", "rope_theta": 10000.0})
    hidden_act: str = "silu"
    qkv_bias: bool = False
    output_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    unit_offset_norms: bool = False
    scale_embeddings: bool = False
    sandwich_norms: bool = False
    query_pre_attn_scalar: Optional[float] = None
    attn_logit_softcapping: Optional[float] = None
    final_logit_softcapping: Optional[float] = None
    local_rope_parameters: Optional[Dict[str, Any]] = None
    tie_word_embeddings: bool = False
    sliding_window: Optional[int] = None
    layer_types: List[str] = attrs.field(factory=list)
    bos_token_id: Optional[int] = None
    eos_token_id: Any = None  # an int or a list of ints, as in transformers
    pad_token_id: Optional[int] = None
    dtype: Optional[str] = None  # the dtype the weights were saved in ("float32", "bfloat16", ...)
    architectures: Optional[List[str]] = None
    extra: Dict[str, Any] = attrs.field(factory=dict)

    is_encoder_decoder = False  # class attributes: part of the model protocol, never serialised
    use_cache = True

    def __attrs_post_init__(self) -> None:
        if not self.layer_types:
            kind = SLIDING_ATTENTION if self.sliding_window else FULL_ATTENTION
            self.layer_types = [kind] * self.num_hidden_layers
        self.validate()

    # ------------------------------------------------------------------ derived facts

    @property
    def num_key_value_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def rotary_dim(self) -> int:
        """How many leading dimensions of each head RoPE rotates (``head_dim`` but for Phi-3's partial rotary;
        transformers' rounding, as :func:`.rope.rotary_dim_of`, which this torch-free module cannot import)."""
        return int(self.head_dim * self.rope_parameters.get("partial_rotary_factor", 1.0))

    @property
    def rope_theta(self) -> float:
        return float(self.rope_parameters.get("rope_theta", 10000.0))

    def get_text_config(self, decoder: Optional[bool] = None, encoder: Optional[bool] = None) -> "NativeLlamaConfig":
        """The decoder's config: this one (the model protocol asks every config for it)."""
        return self

    def validate(self, source: str = "config") -> None:
        """Raise CheckpointError for shapes the model cannot be built from."""
        problems = []
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name}={value!r} must be a positive integer")
        if not problems and self.num_attention_heads % self.num_key_value_heads:
            problems.append(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads} (grouped-query attention shares each key/value "
                "head among a whole number of query heads)"
            )
        if not problems and self.head_dim % 2:
            problems.append(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            problems.append(f"model_type={self.model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            problems.append(f"hidden_act={self.hidden_act!r} is not one of {', '.join(SUPPORTED_ACTIVATIONS)}")
        if len(self.layer_types) != self.num_hidden_layers:
            problems.append(
                f"layer_types has {len(self.layer_types)} entries for num_hidden_layers={self.num_hidden_layers}"
            )
        unknown = sorted(set(self.layer_types) - {FULL_ATTENTION, SLIDING_ATTENTION})
        if unknown:
            problems.append(f"layer_types contains {unknown}; only {FULL_ATTENTION!r} and {SLIDING_ATTENTION!r} exist")
        if self.sliding_window is not None and (not isinstance(self.sliding_window, int) or self.sliding_window <= 0):
            problems.append(f"sliding_window={self.sliding_window!r} must be a positive integer or null")
        for name in ("query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                problems.append(f"{name}={value!r} must be a positive number or null")
        if not problems:
            problems += _rope_shape_problems(self.rope_parameters, self.rotary_dim)
        if self.model_type == "gemma3_text" and self.attn_logit_softcapping is not None:
            problems.append(
                f"attn_logit_softcapping={self.attn_logit_softcapping!r} is set on a gemma3_text model, whose attention "
                "transformers computes without it; leave it unset (null)"
            )
        if problems:
            raise CheckpointError(
                f"{source} describes a model genplug's native Llama family cannot build: " + "; ".join(problems)
                + ". Fix the file (it should be the config.json saved with the weights)."
            )

    def window_of_layer(self, layer_idx: int) -> Optional[int]:
        """The sliding window of one layer, or None when it attends to everything before it."""
        if self.sliding_window and self.layer_types[layer_idx] == SLIDING_ATTENTION:
            return self.sliding_window
        return None

    # ------------------------------------------------------------------ reading and writing config.json

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "config.json") -> "NativeLlamaConfig":
        """Build a config from the dict transformers writes to config.json (any supported model type)."""
        model_type = data.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(
                f"{source} has model_type={model_type!r}; genplug's native models support "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}. Load this checkpoint with transformers "
                "(AutoModelForCausalLM.from_pretrained) and pass that model to genplug instead."
            )
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [key for key in required if data.get(key) is None]
        if missing:
            raise CheckpointError(
                f"{source} lacks {', '.join(missing)}; a {model_type} config.json must give every shape "
                f"({', '.join(required)}). Re-save the model with transformers' save_pretrained."
            )
        heads = data["num_attention_heads"]
        head_dim = data.get("head_dim") or data["hidden_size"] // heads
        num_layers = data["num_hidden_layers"]

        gemma = model_type in GEMMA_TYPES
        gemma_2_or_3 = model_type in ("gemma2", "gemma3_text")  # defaults below are those of their transformers configs
        if gemma and data.get("use_bidirectional_attention"):
            raise CheckpointError(
                f"{source} sets use_bidirectional_attention=true: that {model_type} model attends in both directions "
                "(an encoder), which genplug's native causal models do not compute. Load it with transformers instead."
            )
        sliding_window, layer_types = _attention_layout(data, model_type, num_layers, source)
        local_rope = None
        if model_type == "gemma3_text":
            rope, local_rope = _gemma3_rope_parameters(data, source)
        elif model_type == "phi3":
            rope = _phi3_rope_parameters(data, source)
        else:
            rope = _standard_rope_parameters(data, source, model_type)
        attention_bias = bool(data.get("attention_bias", False))
        dtype = data.get("dtype") or data.get("torch_dtype")
        # (Phi-3's top-level partial_rotary_factor and original_max_position_embeddings are copied into
        # rope_parameters, where the model reads them, and also kept in ``extra``, as transformers keeps both)
        consumed = _CONSUMED_KEYS | _GEMMA_CONSUMED_KEYS.get(model_type, frozenset())
        return cls(
            model_type=model_type,
            vocab_size=data["vocab_size"],
            hidden_size=data["hidden_size"],
            intermediate_size=data["intermediate_size"],
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            num_key_value_heads=data.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            max_position_embeddings=data.get("max_position_embeddings", _max_positions_default(model_type)),
            rms_norm_eps=data.get("rms_norm_eps", 1e-5 if model_type == "phi3" else 1e-6),
            rope_parameters=rope,
            hidden_act=_activation(data, model_type),
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            output_bias=attention_bias if model_type in ("llama", "qwen3") or gemma else False,
            mlp_bias=bool(data.get("mlp_bias", False)) if model_type == "llama" else False,
            qk_norm=model_type in ("qwen3", "gemma3_text"),
            unit_offset_norms=gemma,
            scale_embeddings=gemma,
            sandwich_norms=gemma_2_or_3,
            query_pre_attn_scalar=data.get("query_pre_attn_scalar", 256) if gemma_2_or_3 else None,
            attn_logit_softcapping=data.get("attn_logit_softcapping", 50.0) if model_type == "gemma2" else None,
            final_logit_softcapping=(
                data.get("final_logit_softcapping", 30.0 if model_type == "gemma2" else None) if gemma_2_or_3 else None
            ),
            local_rope_parameters=local_rope,
            tie_word_embeddings=bool(data.get("tie_word_embeddings", gemma)),
            sliding_window=sliding_window,
            layer_types=layer_types,
            bos_token_id=data.get("bos_token_id"),
            eos_token_id=data.get("eos_token_id"),
            pad_token_id=data.get("pad_token_id"),
            dtype=str(dtype).replace("torch.", "") if dtype else None,
            architectures=data.get("architectures"),
            extra={k: v for k, v in data.items() if k not in consumed},
        )

    @classmethod
    def from_json_file(cls, path: str) -> "NativeLlamaConfig":
        """Read a config.json file; a missing or unreadable file is a CheckpointError naming it."""
        if not os.path.isfile(path):
            raise CheckpointError(
                f"{path} does not exist: a checkpoint directory needs the config.json that transformers' "
                "save_pretrained writes next to the weights. Point to the directory that holds it."
            )
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path} is not readable JSON ({error}); restore the file from the original checkpoint.") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} holds a {type(data).__name__}, not a JSON object; restore the original config.json.")
        return cls.from_dict(data, source=path)

    def to_dict(self) -> Dict[str, Any]:
        """The config.json dict transformers reads back into the config class of ``model_type`` (LlamaConfig,
        MistralConfig, Qwen2Config, Qwen3Config, GemmaConfig, Gemma2Config, Gemma3TextConfig, Phi3Config)."""
        data: Dict[str, Any] = dict(self.extra)
        data.update(
            model_type=self.model_type,
            architectures=self.architectures or [_ARCHITECTURES[self.model_type]],
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters=dict(self.rope_parameters),
            hidden_act=self.hidden_act,
            tie_word_embeddings=self.tie_word_embeddings,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        if self.model_type == "llama":
            data.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        elif self.model_type in GEMMA_TYPES:
            data.update(attention_bias=self.qkv_bias)
        else:
            data.update(sliding_window=self.sliding_window)
        if self.model_type == "qwen3":
            data.update(attention_bias=self.qkv_bias)
        if self.model_type in ("qwen2", "qwen3"):
            data.update(use_sliding_window=self.sliding_window is not None, layer_types=list(self.layer_types))
        if self.model_type in ("gemma2", "gemma3_text"):
            data["hidden_activation"] = data.pop("hidden_act")  # Gemma 2/3 configs name it so
            data.update(sliding_window=self.sliding_window, layer_types=list(self.layer_types),
                        query_pre_attn_scalar=self.query_pre_attn_scalar,
                        final_logit_softcapping=self.final_logit_softcapping)
        if self.model_type == "gemma2":
            data.update(attn_logit_softcapping=self.attn_logit_softcapping)
        if self.model_type == "phi3" and self.rope_parameters["rope_type"] == "longrope":
            # transformers takes the top-level value over the one in rope_parameters
            data["original_max_position_embeddings"] = self.rope_parameters["original_max_position_embeddings"]
        if self.model_type == "gemma3_text":
            local = self.local_rope_parameters or self.rope_parameters
            data.update(rope_parameters={FULL_ATTENTION: dict(self.rope_parameters), SLIDING_ATTENTION: dict(local)})
        if self.dtype:
            data["dtype"] = self.dtype
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
                  "gemma3_text": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM"}


def _activation(data: Dict[str, Any], model_type: str) -> str:
    """The MLP's activation, under the key and with the defaults each family's transformers config uses."""
    if model_type in ("gemma2", "gemma3_text"):
        return data.get("hidden_activation") or "gelu_pytorch_tanh"
    if model_type == "gemma":
        # GemmaConfig reads Gemma 1's legacy "gelu" as the tanh approximation it was trained with
        activation = data.get("hidden_act") or "gelu_pytorch_tanh"
        return "gelu_pytorch_tanh" if activation == "gelu" else activation
    return data.get("hidden_act", "silu")


def _attention_layout(
    data: Dict[str, Any], model_type: str, num_layers: int, source: str = "config.json"
) -> Tuple[Optional[int], List[str]]:
    """``(sliding_window, layer_types)`` as each model family's transformers code interprets them."""
    if model_type in ("llama", "gemma"):  # no sliding window, whatever the file says
        return None, [FULL_ATTENTION] * num_layers
    if model_type in ("gemma2", "gemma3_text"):
        window = data.get("sliding_window", 4096)
        layer_types = data.get("layer_types")
        if layer_types is None:  # the configs' own defaults: every 2nd (Gemma 2) / 6th (Gemma 3) layer is global
            every = 2 if model_type == "gemma2" else data.get("sliding_window_pattern", 6)
            layer_types = [SLIDING_ATTENTION if (i + 1) % every else FULL_ATTENTION for i in range(num_layers)]
        if window is None and SLIDING_ATTENTION in layer_types:
            raise CheckpointError(
                f"{source} has sliding_attention layers but sliding_window=null; transformers cannot run that "
                f"{model_type} model either. Set sliding_window (or make every layer full_attention in layer_types)."
            )
        return window, list(layer_types)
    window = data.get("sliding_window")
    if model_type in ("qwen2", "qwen3") and not data.get("use_sliding_window", False):
        window = None
    if model_type in ("mistral", "phi3"):  # one window for every layer (Phi-3-mini-4k: 2047)
        kind = SLIDING_ATTENTION if window else FULL_ATTENTION
        return window, [kind] * num_layers
    layer_types = data.get("layer_types")
    if layer_types is None:
        first_sliding = data.get("max_window_layers", 28)
        layer_types = [
            SLIDING_ATTENTION if window is not None and i >= first_sliding else FULL_ATTENTION for i in range(num_layers)
        ]
    if window is None:
        layer_types = [FULL_ATTENTION] * num_layers
    return window, list(layer_types)


def _standard_rope_parameters(data: Dict[str, Any], source: str, model_type: str) -> Dict[str, Any]:
    """One flat RoPE dict from either transformers 5's ``rope_parameters`` or the older ``rope_scaling``/``rope_theta``."""
    rope = dict(data.get("rope_parameters") or data.get("rope_scaling") or {})
    return _checked_rope(rope, data.get("rope_theta", 10000.0), data, source, model_type)


def _max_positions_default(model_type: str) -> int:
    return 4096 if model_type == "phi3" else 2048


def _phi3_rope_parameters(data: Dict[str, Any], source: str) -> Dict[str, Any]:
    """Phi-3's RoPE dict as transformers' Phi3Config completes it: the top-level ``partial_rotary_factor``
    moved in, the old names ``su`` / ``yarn`` read as ``longrope``, and for longrope the top-level
    ``original_max_position_embeddings`` (default 4096) over any value in the dict."""
    rope = dict(data.get("rope_parameters") or data.get("rope_scaling") or {})
    rope_type = rope.pop("type", None)
    rope.setdefault("rope_type", rope_type or "default")
    if rope["rope_type"] in ("su", "yarn"):
        rope["rope_type"] = "longrope"
    rope.setdefault("partial_rotary_factor", data.get("partial_rotary_factor") or 1.0)
    if rope["rope_type"] == "longrope":
        rope["original_max_position_embeddings"] = data.get("original_max_position_embeddings", 4096)
    return _checked_rope(rope, data.get("rope_theta") or 10000.0, data, source, "phi3")


def _rope_shape_problems(rope: Dict[str, Any], rotary_dim: int) -> List[str]:
    """What keeps a RoPE dict from fitting heads that rotate ``rotary_dim`` dimensions."""
    if rotary_dim <= 0 or rotary_dim % 2:
        return [f"partial_rotary_factor={rope.get('partial_rotary_factor')} rotates {rotary_dim} dimensions of each "
                "head; RoPE turns pairs of dimensions, so that must be a positive even number"]
    if rope.get("rope_type") != "longrope":
        return []
    return [f"rope_parameters[{key!r}] has {len(rope.get(key) or ())} entries; longrope needs one per rotated pair "
            f"({rotary_dim // 2} for {rotary_dim} rotated dimensions)"
            for key in ("short_factor", "long_factor") if len(rope.get(key) or ()) != rotary_dim // 2]


def _gemma3_rope_parameters(data: Dict[str, Any], source: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(global, local)`` RoPE dicts of a Gemma 3 text config: transformers 5 nests them per layer type;
    older files give ``rope_theta`` / ``rope_scaling`` for the global layers and ``rope_local_base_freq``
    for the local ones."""
    nested = data.get("rope_parameters")
    if not (isinstance(nested, dict) and (FULL_ATTENTION in nested or SLIDING_ATTENTION in nested)):
        nested = {FULL_ATTENTION: dict(data.get("rope_scaling") or {}), SLIDING_ATTENTION: {}}
    full = _checked_rope(dict(nested.get(FULL_ATTENTION) or {}), data.get("rope_theta", 1_000_000.0), data,
                         f"{source} (full_attention)", "gemma3_text")
    local = _checked_rope(dict(nested.get(SLIDING_ATTENTION) or {}), data.get("rope_local_base_freq", 10_000.0), data,
                          f"{source} (sliding_attention)", "gemma3_text")
    return full, local


def _checked_rope(rope: Dict[str, Any], default_theta: float, data: Dict[str, Any], source: str,
                  model_type: str = "llama") -> Dict[str, Any]:
    """``rope`` completed with the keys transformers fills in, after checking it is a RoPE the native models compute."""
    rope_type = rope.pop("type", None)
    rope.setdefault("rope_type", rope_type or "default")
    rope.setdefault("rope_theta", default_theta)
    if rope["rope_type"] in ("llama3", "yarn", "longrope"):
        rope.setdefault("original_max_position_embeddings", data.get("max_position_embeddings", 2048))
    from .rope import check_rope_parameters  # local import: rope pulls in torch

    check_rope_parameters(rope, source, model_type)
    return rope
