"""`genplug generate` in a subprocess, on the embedded default model."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def genplug(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "genplug", "generate", *args], capture_output=True, text=True,
                          input=stdin, timeout=300)


def test_streams_text_from_the_default_model():
    result = genplug("Once upon a time", "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time") and len(result.stdout.split()) > 6


def test_json_fields_and_stdin():
    result = genplug("--json", "--max-new-tokens", "6", stdin="The dog")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["prompt"] == "The dog" and len(row["token_ids"]) == len(row["scores"]) <= 6
    assert all(s <= 0 for s in row["scores"])  # log-probabilities
    assert {"prefill_tokens_per_s", "decode_tokens_per_s", "seconds"} <= set(row["timing"])


def test_batch_file_with_sampling_and_set(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Tom went\nThe sun\nA bird\n")
    result = genplug("--file", str(prompts), "--json", "--max-new-tokens", "5", "--batch-size", "2", "--do-sample",
                     "--seed", "3", "--set", "top_p=0.9")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["prompt"] for r in rows] == ["Tom went", "The sun", "A bird"]


@pytest.mark.parametrize("args, message", [
    (["x", "--model", "/no/such/dir"], "does not exist"),
    (["x", "--set", "temprature=0.5"], "temperature"),
    (["x", "--top-p", "1.5"], "top_p"),
])
def test_bad_input_exits_1_with_the_reason(args, message):
    result = genplug(*args)
    assert result.returncode == 1 and message in result.stderr


def test_unknown_flag_exits_2():
    assert genplug("x", "--frobnicate").returncode == 2


def test_corrupt_safetensors(tmp_path):
    import shutil

    import genplug as package

    broken = tmp_path / "model"
    shutil.copytree(package.default_model_path(), broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    result = genplug("x", "--model", str(broken))
    assert result.returncode == 1 and "model.safetensors" in result.stderr


def test_prompt_longer_than_the_context():
    result = genplug("--max-new-tokens", "2", stdin="the cat sat " * 400)
    assert result.returncode == 1 and "context" in result.stderr
