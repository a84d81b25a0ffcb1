"""The embedded default model: loads everywhere, agrees with transformers, writes grammar-only stories, reproduces."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from genplug.plugins.models.llama.loader import default_model_path, load_default_model
from native_llama_fixtures import DEFAULT_MODEL_DIR, REPO

PROMPTS = ["Once upon a time, there was a little", "One day, Mia went to the", "There once was a shy frog named"]


def story_grammar():
    spec = importlib.util.spec_from_file_location("story_grammar", os.path.join(REPO, "scripts", "story_grammar.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def default_model():
    return load_default_model()


def greedy(model, input_ids, max_new_tokens, eos_token_id):
    """Plain greedy decoding with the model's cache: one token per step, stop at EOS."""
    cache, step_input, sequence = None, input_ids, input_ids
    with torch.no_grad():
        for _ in range(max_new_tokens):
            out = model(input_ids=step_input, past_key_values=cache, logits_to_keep=1)
            cache, step_input = out.past_key_values, out.logits[:, -1:].argmax(-1)
            sequence = torch.cat([sequence, step_input], dim=-1)
            if step_input.item() == eos_token_id:
                break
    return sequence


def test_shipped_in_the_package_and_small():
    assert os.path.samefile(default_model_path(), DEFAULT_MODEL_DIR)
    names = set(os.listdir(DEFAULT_MODEL_DIR))
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json", "training_log.json"} <= names
    assert sum(os.path.getsize(os.path.join(DEFAULT_MODEL_DIR, n)) for n in names) <= 20 * 2**20
    with open(os.path.join(DEFAULT_MODEL_DIR, "config.json")) as handle:
        config = json.load(handle)
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]


def test_special_tokens_and_generation_config(default_model):
    model, tokenizer = default_model
    assert tokenizer.bos_token_id is not None and tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert tokenizer.encode("Once")[0] == tokenizer.bos_token_id
    assert model.generation_config is not None
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


@pytest.mark.parity
def test_same_logits_and_tokens_in_transformers(default_model):
    transformers = pytest.importorskip("transformers")
    model, tokenizer = default_model
    reference = transformers.AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR, dtype=torch.float32).eval()
    reference_tokenizer = transformers.AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    batch = tokenizer(PROMPTS, return_tensors="pt")
    expected = reference_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert torch.equal(batch.input_ids, expected["input_ids"])
    assert torch.equal(batch.attention_mask, expected["attention_mask"])
    with torch.no_grad():
        ours = model(input_ids=batch.input_ids[:1]).logits
        theirs = reference(input_ids=batch.input_ids[:1]).logits
    assert ours.sub(theirs).abs().max() <= 1e-4

    prompt = torch.tensor([tokenizer.encode(PROMPTS[0])])
    ours = greedy(model, prompt, 40, eos_token_id=None)
    theirs = reference.generate(prompt, do_sample=False, max_new_tokens=40, min_new_tokens=40)
    assert torch.equal(ours, theirs)
    assert tokenizer.decode(ours[0]) == reference_tokenizer.decode(theirs[0])


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_story_is_deterministic_and_uses_grammar_words(default_model, prompt):
    model, tokenizer = default_model
    input_ids = torch.tensor([tokenizer.encode(prompt)])
    first = greedy(model, input_ids, 160, tokenizer.eos_token_id)
    assert torch.equal(first, greedy(model, input_ids, 160, tokenizer.eos_token_id))
    assert first[0, -1].item() == tokenizer.eos_token_id, "the story should end with the EOS token"
    text = tokenizer.decode(first[0], skip_special_tokens=True)
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", text)}
    assert len(words) > 20 and words <= story_grammar().vocabulary(), sorted(words - story_grammar().vocabulary())
    assert text.count(".") >= 5


@pytest.mark.slow
def test_training_script_reproduces_tokenizer_and_first_steps(tmp_path):
    """Re-running the shipped configuration gives the same tokenizer.json bytes and the same first losses."""
    with open(os.path.join(DEFAULT_MODEL_DIR, "training_log.json")) as handle:
        shipped = json.load(handle)
    steps = 20
    command = [sys.executable, os.path.join(REPO, "scripts", "train_default_model.py"), "--out", str(tmp_path),
               "--stop-after", str(steps), "--threads", "1"]
    for option in ("seed", "steps", "stories", "batch_size", "seq_len", "lr", "warmup"):
        command += ["--" + option.replace("_", "-"), str(shipped[option])]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    with open(os.path.join(DEFAULT_MODEL_DIR, "tokenizer.json"), "rb") as a, open(tmp_path / "tokenizer.json", "rb") as b:
        assert a.read() == b.read()
    with open(tmp_path / "training_log.json") as handle:
        rerun = json.load(handle)["loss"]
    assert len(rerun) == steps
    for step in range(1, steps + 1):
        assert rerun[str(step)] == pytest.approx(shipped["loss"][str(step)], abs=2e-3, rel=1e-3), step


def test_genplug_generate_drives_the_native_model(default_model):
    """genplug.generate on a left-padded batch gives each row's plain greedy continuation."""
    import genplug

    model, tokenizer = default_model
    batch = tokenizer(PROMPTS[:2], return_tensors="pt")
    sequences = genplug.generate(model, **batch, max_new_tokens=30, min_new_tokens=30)
    for row, prompt in zip(sequences, PROMPTS[:2]):
        expected = greedy(model, torch.tensor([tokenizer.encode(prompt)]), 30, eos_token_id=None)[0]
        assert row[-len(expected):].tolist() == expected.tolist()
