"""Loading, saving and refusing checkpoints; the plugin's loader and adapter."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from genplug.plugins.models.llama import plugin
from genplug.plugins.models.llama.config import NativeLlamaConfig
from genplug.plugins.models.llama.errors import CheckpointError
from genplug.plugins.models.llama.loader import load_model, save_model
from native_llama_fixtures import DEFAULT_MODEL_DIR, GEMMA_SWITCHES, PHI3_SWITCHES, longrope, native_model


@pytest.fixture
def checkpoint(tmp_path):
    """A small native checkpoint (the default model's files, copied) that tests may damage."""
    directory = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, directory)
    return directory


def edit_config(directory, **changes):
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def assert_checkpoint_error(directory, *fragments, **kwargs):
    with pytest.raises(CheckpointError) as caught:
        load_model(directory, **kwargs)
    assert isinstance(caught.value, OSError) and isinstance(caught.value, ValueError)
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)


def test_missing_config(checkpoint):
    (checkpoint / "config.json").unlink()
    assert_checkpoint_error(checkpoint, "config.json does not exist", "save_pretrained")


def test_not_a_directory(tmp_path):
    assert_checkpoint_error(tmp_path / "nowhere", "is not a directory")


def test_unsupported_model_type(checkpoint):
    edit_config(checkpoint, model_type="gpt2")
    assert_checkpoint_error(checkpoint, "model_type='gpt2'", "llama, mistral, qwen2", "transformers")


def test_config_that_is_not_json(checkpoint):
    (checkpoint / "config.json").write_text("{not json")
    assert_checkpoint_error(checkpoint, "config.json is not readable JSON")


def test_corrupt_safetensors(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_checkpoint_error(checkpoint, "model.safetensors is not a readable safetensors file", "copy the file again")


def test_missing_weights(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(b"")
    assert_checkpoint_error(checkpoint, "neither model.safetensors", "safe_serialization=True")


def test_shape_mismatch(checkpoint):
    edit_config(checkpoint, intermediate_size=700)
    assert_checkpoint_error(checkpoint, "mlp.gate_proj.weight", "has shape (688, 256)", "needs (700, 256)",
                            "use the config.json saved with these weights")


def test_layer_count_mismatch(checkpoint):
    edit_config(checkpoint, num_hidden_layers=5)
    assert_checkpoint_error(checkpoint, "lack model.layers.4.", "different models")
    edit_config(checkpoint, num_hidden_layers=3)
    assert_checkpoint_error(checkpoint, "holds model.layers.3.", "does not have")


def test_bad_head_layout(checkpoint):
    edit_config(checkpoint, num_key_value_heads=3)
    assert_checkpoint_error(checkpoint, "not a multiple of num_key_value_heads=3")


def test_unsupported_rope(checkpoint):
    edit_config(checkpoint, rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0})
    assert_checkpoint_error(checkpoint, "rope_type='longrope'")


def test_bad_dtype_request(checkpoint):
    assert_checkpoint_error(checkpoint, "floating dtype", dtype=torch.int64)
    assert_checkpoint_error(checkpoint, "dtype='float8'", dtype="float8")


def test_missing_shard(make_checkpoint):
    _, directory = make_checkpoint("llama", max_shard_size="20KB")
    with open(os.path.join(directory, "model.safetensors.index.json")) as handle:
        shard = sorted(set(json.load(handle)["weight_map"].values()))[-1]
    os.remove(os.path.join(directory, shard))
    assert_checkpoint_error(directory, f"lists shard {shard}", "copy every shard")


def test_dtype_and_device_arguments(checkpoint):
    model, tokenizer = load_model(checkpoint, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.device == torch.device("cpu") and not model.training
    assert model.lm_head.weight_t is model.model.embed_tokens.weight_t  # tied again after loading
    assert load_model(checkpoint, dtype="auto")[0].dtype == torch.float32
    assert tokenizer is not None and tokenizer.eos_token_id == model.generation_config.eos_token_id


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": True, "qkv_bias": True, "model_type": "qwen2"},
                                       {"sliding_window": 4, "model_type": "mistral"},
                                       {"qk_norm": True, "qkv_bias": True, "output_bias": True, "model_type": "qwen3"},
                                       *GEMMA_SWITCHES.values(), *PHI3_SWITCHES.values(),
                                       {**PHI3_SWITCHES["phi4_mini"], "sliding_window": 4}],
                         ids=["llama", "qwen2", "mistral", "qwen3", *GEMMA_SWITCHES, *PHI3_SWITCHES, "phi4_mini-window"])
def test_save_then_load_round_trip(tmp_path, overrides):
    model = native_model(**overrides)
    save_model(model, tmp_path, generation_config={"eos_token_id": 2})
    loaded, tokenizer = load_model(tmp_path)
    assert tokenizer is None and loaded.generation_config.eos_token_id == 2
    assert NativeLlamaConfig.from_json_file(str(tmp_path / "config.json")).to_dict() == model.config.to_dict()
    input_ids = torch.randint(0, 97, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=input_ids).logits, model(input_ids=input_ids).logits)


@pytest.mark.parity
@pytest.mark.parametrize("family, overrides", [("qwen2", dict(qkv_bias=True)),
                                               ("qwen3", dict(qk_norm=True, qkv_bias=True, output_bias=True))])
def test_transformers_loads_what_save_model_writes(tmp_path, family, overrides):
    transformers = pytest.importorskip("transformers")
    model = native_model(model_type=family, sliding_window=6, layer_types=[
        "full_attention", "sliding_attention", "sliding_attention"], **overrides)
    save_model(model, tmp_path)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reference).__name__ == {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[family]
    input_ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(input_ids=input_ids).logits.sub(reference(input_ids=input_ids).logits).abs().max() <= 1e-4


@pytest.mark.parity
@pytest.mark.parametrize("family, overrides", [
    ("gemma", {"attention_bias": True}),
    ("gemma2", {"sliding_window": 5, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}),
    ("gemma3", {"sliding_window": 5, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
                "final_logit_softcapping": 3.0,
                "rope_parameters": {"full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}}),
    ("phi3", {"partial_rotary_factor": 0.5, "sliding_window": 5, "resid_pdrop": 0.1, "embd_pdrop": 0.1}),
    ("phi3", {"rope_parameters": longrope(0.75, 8), "original_max_position_embeddings": 8, "tie_word_embeddings": True}),
], ids=["gemma", "gemma2", "gemma3", "phi3", "phi4-mini"])
def test_checkpoints_go_from_transformers_through_genplug_and_back(make_checkpoint, tmp_path, family, overrides):
    """transformers' save_pretrained -> load_model -> save_pretrained -> transformers' from_pretrained: the
    same logits all the way, and the config keys Gemma's and Phi-3's transformers code reads survive the trip
    (Phi-3's fused q/k/v and gate/up tensors are read and written as they are)."""
    transformers = pytest.importorskip("transformers")
    original, directory = make_checkpoint(family, **overrides)
    native, _ = load_model(directory)
    native.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(again) is type(original)
    for key in ("layer_types", "sliding_window", "rope_parameters", "query_pre_attn_scalar", "final_logit_softcapping",
                "attn_logit_softcapping", "hidden_activation", "hidden_act", "attention_bias", "tie_word_embeddings",
                "use_bidirectional_attention", "original_max_position_embeddings", "partial_rotary_factor",
                "resid_pdrop", "embd_pdrop", "pad_token_id", "max_position_embeddings", "rms_norm_eps"):
        assert getattr(again.config, key, None) == getattr(original.config, key, None), key
    input_ids = torch.randint(0, 97, (2, 14), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = original(input_ids=input_ids).logits
        assert native(input_ids=input_ids).logits.sub(expected).abs().max() <= 1e-5
        assert again(input_ids=input_ids).logits.sub(expected).abs().max() == 0


@pytest.mark.parametrize("changes, fragment", [
    ({"model_type": "gemma3_text", "use_bidirectional_attention": True}, "use_bidirectional_attention=true"),
    ({"model_type": "gemma2", "layer_types": ["sliding_attention", "full_attention"], "sliding_window": None},
     "sliding_window=null"),
], ids=["bidirectional", "no window"])
def test_gemma_configs_the_native_models_cannot_compute_are_refused(checkpoint, changes, fragment):
    edit_config(checkpoint, **changes)
    assert_checkpoint_error(checkpoint, fragment, "transformers")


def test_gemma_config_defaults_follow_transformers():
    """Keys a Gemma config.json may leave out take the defaults of transformers' config classes."""
    shape = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4)
    gemma = NativeLlamaConfig.from_dict({"model_type": "gemma", "hidden_act": "gelu", **shape})
    assert gemma.hidden_act == "gelu_pytorch_tanh" and gemma.tie_word_embeddings and gemma.query_pre_attn_scalar is None
    gemma2 = NativeLlamaConfig.from_dict({"model_type": "gemma2", **shape})
    assert (gemma2.sliding_window, gemma2.query_pre_attn_scalar) == (4096, 256)
    assert (gemma2.attn_logit_softcapping, gemma2.final_logit_softcapping) == (50.0, 30.0)
    assert gemma2.layer_types == ["sliding_attention", "full_attention"] * 2
    gemma3 = NativeLlamaConfig.from_dict({"model_type": "gemma3_text", "rope_theta": 5e5, "rope_local_base_freq": 1e3,
                                          "attn_logit_softcapping": 50.0, **shape})
    assert gemma3.rope_parameters == {"rope_type": "default", "rope_theta": 5e5}
    assert gemma3.local_rope_parameters == {"rope_type": "default", "rope_theta": 1e3}
    assert gemma3.layer_types == ["sliding_attention"] * 4  # every 6th layer is global
    # transformers' Gemma 3 attention ignores attn_logit_softcapping: carried along, not applied
    assert gemma3.attn_logit_softcapping is None and gemma3.to_dict()["attn_logit_softcapping"] == 50.0


@pytest.mark.parity
@pytest.mark.parametrize("rope_type", ["longrope", "su", None])
def test_phi3_config_json_reads_as_transformers_reads_it(rope_type):
    """A Phi-3.5 / Phi-4-mini style config.json (``rope_scaling`` with ``type``, a top-level
    ``partial_rotary_factor`` and ``original_max_position_embeddings``) gives the RoPE dict transformers'
    Phi3Config makes of it; the old name "su" is longrope (transformers 5.23 itself fails on it: it then
    lacks original_max_position_embeddings); the defaults are Phi3Config's."""
    transformers = pytest.importorskip("transformers")
    shape = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    rope = longrope(0.75, 16)
    data = {"model_type": "phi3", **shape, "partial_rotary_factor": 0.75, "original_max_position_embeddings": 16,
            "max_position_embeddings": 64, "rope_theta": 500.0, "sliding_window": 7,
            "rope_scaling": None if rope_type is None else {
                "type": rope_type, "short_factor": rope["short_factor"], "long_factor": rope["long_factor"]}}
    config = NativeLlamaConfig.from_dict(data)
    reference = transformers.Phi3Config(**{**data, "rope_scaling": data["rope_scaling"] and {
        **data["rope_scaling"], "type": "longrope"}}).to_dict()
    assert config.rope_parameters == {k: v for k, v in reference["rope_parameters"].items() if k != "type"}
    assert config.rotary_dim == 6 and config.layer_types == ["sliding_attention"] * 2 and config.sliding_window == 7
    assert config.to_dict()["original_max_position_embeddings"] == 16
    defaults = NativeLlamaConfig.from_dict({"model_type": "phi3", **shape})
    assert (defaults.rms_norm_eps, defaults.max_position_embeddings, defaults.rotary_dim) == (1e-5, 4096, 8)


def test_phi3_checkpoints_hold_fused_projections(tmp_path):
    model = native_model(**PHI3_SWITCHES["phi4_mini"])
    save_model(model, tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        names = {name.split("layers.0.")[-1] for name in handle.keys() if "layers.0." in name}
    assert names == {"self_attn.qkv_proj.weight", "self_attn.o_proj.weight", "mlp.gate_up_proj.weight",
                     "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight"}


@pytest.mark.parametrize("changes, fragment", [
    ({"partial_rotary_factor": 0.375}, "rotates 3 dimensions"),  # int(8 * 0.375): an odd count
    ({"rope_scaling": {"type": "longrope", "short_factor": [1.0] * 3, "long_factor": [2.0] * 4}},
     "'short_factor'] has 3 entries; longrope needs one per rotated pair (4"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_type='linear'; the native phi3 models compute default, longrope"),
], ids=["odd rotary dims", "factor count", "linear"])
def test_phi3_configs_the_native_models_cannot_compute_are_refused(changes, fragment):
    data = {"model_type": "phi3", "vocab_size": 97, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, **changes}
    with pytest.raises(CheckpointError, match="") as caught:
        NativeLlamaConfig.from_dict(data)
    assert fragment in str(caught.value), str(caught.value)


def test_partial_rotary_and_longrope_stay_phi3s():
    """transformers' Llama-family modules rotate whole heads and never switch factors: refused there as before."""
    shape = {"vocab_size": 97, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4}
    with pytest.raises(CheckpointError, match="partial_rotary_factor=0.5; qwen2 models rotate the whole head"):
        NativeLlamaConfig.from_dict({"model_type": "qwen2", **shape, "rope_parameters": {
            "rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}})
    with pytest.raises(CheckpointError, match="rope_type='longrope'; the native llama models compute"):
        NativeLlamaConfig.from_dict({"model_type": "llama", **shape, "rope_parameters": longrope(1.0, 16)})


# ---------------------------------------------------------------------------------------------- plugin


def test_loader_claims_supported_directories_only(checkpoint, tmp_path):
    assert plugin.NativeLlamaLoader.claims(checkpoint)
    for model_type in ("gemma", "gemma2", "gemma3_text", "phi3"):
        edit_config(checkpoint, model_type=model_type)
        assert plugin.NativeLlamaLoader.claims(checkpoint)
    edit_config(checkpoint, model_type="gpt2")
    assert not plugin.NativeLlamaLoader.claims(checkpoint)
    assert not plugin.NativeLlamaLoader.claims(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("[1, 2]")
    assert not plugin.NativeLlamaLoader.claims(tmp_path)


def test_plugin_registers_loader_and_adapter():
    from genplug.models import ModelAdapter
    from genplug.plugin_manager import GenplugPluginManager

    pm = GenplugPluginManager()
    pm.register(plugin, name="native_llama")
    registries = pm.registries
    assert registries.model_loaders["native_llama"].obj is plugin.NativeLlamaLoader
    assert registries.model_adapters["native_llama"].obj is plugin.NativeLlamaAdapterFactory
    model = native_model()
    adapter = pm.hook.genplug_adapt_model(model=model)
    assert isinstance(adapter, plugin.NativeLlamaAdapter) and isinstance(adapter, ModelAdapter)
    assert adapter.vocab_size == 97 and adapter.accepts("position_ids") and adapter.accepts("logits_to_keep")
    assert pm.hook.genplug_adapt_model(model=torch.nn.Linear(2, 2)) is None


def test_loader_plugin_loads(checkpoint):
    model, tokenizer = plugin.NativeLlamaLoader.load(checkpoint, device="cpu", dtype=None)
    assert model.config.model_type == "llama" and tokenizer is not None


def test_entry_point_declared():
    import tomllib

    with open(os.path.join(os.path.dirname(DEFAULT_MODEL_DIR), "..", "..", "pyproject.toml"), "rb") as handle:
        project = tomllib.load(handle)
    assert project["project"]["entry-points"]["genplug"]["native_llama"] == "genplug.plugins.models.llama.plugin"
    assert "genplug.plugins.models.llama" in project["tool"]["setuptools"]["packages"]


def test_public_names_and_core_loading_route_to_the_native_family():
    import genplug
    from genplug.loading import load_model as core_load_model
    from genplug.plugin_manager import GenplugPluginManager, use_plugin_manager
    from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM

    assert genplug.NativeLlamaForCausalLM is NativeLlamaForCausalLM
    assert genplug.CheckpointError is CheckpointError
    pm = GenplugPluginManager()
    pm.register(plugin, name="native_llama")
    with use_plugin_manager(pm):
        model, tokenizer = core_load_model(DEFAULT_MODEL_DIR)
    assert isinstance(model, NativeLlamaForCausalLM) and tokenizer is not None


def test_model_from_pretrained_and_save_pretrained(checkpoint, tmp_path):
    from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM

    model = NativeLlamaForCausalLM.from_pretrained(checkpoint)
    model.save_pretrained(tmp_path)
    again = NativeLlamaForCausalLM.from_pretrained(tmp_path)
    assert again.generation_config.to_dict() == model.generation_config.to_dict()
    input_ids = torch.tensor([[1, 5, 9, 30]])
    with torch.no_grad():
        assert torch.equal(again(input_ids=input_ids).logits, model(input_ids=input_ids).logits)
