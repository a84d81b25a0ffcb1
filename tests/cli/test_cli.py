"""The CLI in a subprocess (plugins, explain, config validate); the explain reports asked for many times over
in this process, through the same ``main`` the entry point calls."""

import json
import subprocess
import sys

from genplug.cli.main import main


def genplug(*args, env=None):
    return subprocess.run([sys.executable, "-m", "genplug", *args], capture_output=True, text=True, env=env)


def explain_json(capsys, *sets):
    """``genplug explain --set S ... --json`` in this process: its JSON report."""
    capsys.readouterr()
    assert main(["explain", *[a for s in sets for a in ("--set", s)], "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_plugins_json_lists_builtins():
    result = genplug("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["greedy"]["provides"]["strategies"] == ["greedy_search"]
    assert plugins["greedy"]["distribution"] == "genplug" and plugins["greedy"]["builtin"]


def test_plugins_table():
    result = genplug("plugins")
    assert result.returncode == 0 and "greedy" in result.stdout and "loaded" in result.stdout


def test_explain_json_names_strategy_and_chooser():
    result = genplug("explain", "--set", "num_beams=1", "--set", "do_sample=true", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["strategy"] == "sample"
    assert report["chosen_by"].startswith("mode_rules (genplug")


def test_explain_unknown_field_fails_with_suggestion():
    result = genplug("explain", "--set", "temprature=0.5")
    assert result.returncode == 1
    assert "temperature" in result.stderr


def test_config_validate(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"do_sample": True, "temperature": 0.7, "max_new_tokens": 10}))
    assert genplug("config", "validate", str(good)).returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"top_p": 1.5, "do_sample": True}))
    result = genplug("config", "validate", str(bad))
    assert result.returncode == 1 and "top_p" in result.stdout
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    result = genplug("config", "validate", str(corrupt))
    assert result.returncode == 1 and "corrupt.json" in result.stdout


def test_unknown_command_exits_2():
    assert genplug("frobnicate").returncode == 2


def test_explain_says_whether_the_cuda_graph_loop_takes_the_call(capsys):
    def graph(*sets):
        return explain_json(capsys, *sets)["cuda_graph_decode"]

    assert graph("cache_implementation=static", "do_sample=true", "min_new_tokens=4", "eos_token_id=2") == \
        {"possible": True, "reason": None}
    assert "not static" in graph("do_sample=true")["reason"]
    assert graph("cache_implementation=static", "no_repeat_ngram_size=2")["possible"]  # at_prefix over the buffer
    assert "Watermark" in graph("cache_implementation=static", 'watermarking_config={"greenlist_ratio": 0.25}')["reason"]
    assert "beam_search" in graph("cache_implementation=static", "num_beams=2")["reason"]


def test_explain_says_whether_the_eager_loop_replays_its_forward_from_a_graph(capsys):
    def report(*sets):
        return explain_json(capsys, *sets)

    timed = report("cache_implementation=static", "max_time=30")  # a criterion checked on the host
    assert not timed["cuda_graph_decode"]["possible"] and timed["cuda_graph_forward"] == {"possible": True, "reason": None}
    whole = report("cache_implementation=static")["cuda_graph_forward"]
    assert not whole["possible"] and "whole step" in whole["reason"]
    assert "disable_compile" in report("cache_implementation=static", "max_time=30",
                                       "disable_compile=true")["cuda_graph_forward"]["reason"]
    hidden = report("cache_implementation=static", "return_dict_in_generate=true", "output_hidden_states=true")
    assert "hidden states" in hidden["cuda_graph_forward"]["reason"]
    assert "not static" in report("max_time=30")["cuda_graph_forward"]["reason"]
    assert report("cache_implementation=static", "num_beams=2")["cuda_graph_forward"]["possible"]  # beam search too
    assert report("cache_implementation=static", "num_beams=4", "num_beam_groups=2",
                  "diversity_penalty=0.5")["cuda_graph_forward"]["possible"]
    assert "own forwards" in report("cache_implementation=static", "prompt_lookup_num_tokens=3")[
        "cuda_graph_forward"]["reason"]
    text = genplug("explain", "--set", "cache_implementation=static", "--set", "max_time=30")
    assert "CUDA-graph forward" in text.stdout and "replays the model's forward" in text.stdout
