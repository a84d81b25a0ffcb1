"""A real install: genplug and the contrib plugins pip-installed into a fresh virtual environment.

The plugin is then checked only from the outside, through the CLI and a Python subprocess, exactly as a
user who ran ``pip install genplug-top-nsigma`` would see it.
"""

import json
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    site = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    # torch and the other dependencies come from the running environment, like --system-site-packages
    Path(site, "outer_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Build from copies: an in-tree build would write genplug.egg-info into the checkout, which other
    # test processes started there would then read instead of the installed metadata.
    sources = home / "src"
    shutil.copytree(ROOT, sources / "genplug", ignore=shutil.ignore_patterns(
        ".git", ".ci-venv", "tests", "bench", "contrib", "*.egg-info", "build", "__pycache__"))
    for plugin in ("genplug-top-nsigma", "genplug-half-cache", "genplug-broken"):
        shutil.copytree(CONTRIB / plugin, sources / plugin, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    str(sources / "genplug"), str(sources / "genplug-top-nsigma"), str(sources / "genplug-half-cache"),
                    str(sources / "genplug-broken")],
                   check=True, capture_output=True, text=True, cwd=home)
    return home


def _run(env_home, args, extra_env=None):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GENPLUG_")}
    environment.update(extra_env or {})
    return subprocess.run(args, capture_output=True, text=True, env=environment, cwd=env_home)


def _plugins(env_home, extra_env=None):
    result = _run(env_home, [str(env_home / "bin" / "genplug"), "plugins", "--json"], extra_env)
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_plugin_is_listed_with_version_and_provisions(env):
    plugins = _plugins(env)
    top = plugins["top_nsigma"]
    assert top["distribution"] == "genplug-top-nsigma" and top["version"] == "0.2.0"
    assert top["status"] == "loaded" and not top["builtin"]
    assert top["provides"]["logits_processors"] == ["top_n_sigma"]
    assert top["provides"]["config_fields"] == ["top_n_sigma"]
    assert plugins["greedy"]["builtin"] and plugins["greedy"]["status"] == "loaded"


def test_broken_plugin_is_reported_without_breaking_the_rest(env):
    plugins = _plugins(env)
    assert plugins["broken"]["status"] == "broken"
    assert "broken on purpose" in plugins["broken"]["error"]
    assert plugins["top_nsigma"]["status"] == "loaded"


def test_blocking_and_autoload(env):
    assert _plugins(env, {"GENPLUG_DISABLE_PLUGINS": "top_nsigma"})["top_nsigma"]["status"] == "blocked"
    plugins = _plugins(env, {"GENPLUG_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert plugins["top_nsigma"]["status"] == "not autoloaded"
    assert plugins["greedy"]["status"] == "loaded"


SCRIPT = """
import sys, json, torch, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
import genplug
from helpers.tiny_lm import TinyCausalLM
model = TinyCausalLM(vocab_size=64, seed=4)
ids = torch.tensor([[5, 6, 7]])
def run(**kw):
    torch.manual_seed(0)
    return genplug.generate(model, ids, do_sample=True, max_new_tokens=30, eos_token_id=None, top_k=0,
                            return_dict_in_generate=True, output_scores=True, **kw)
out = run(**({{"top_n_sigma": 0.5}} if sys.argv[1] == "on" else {{}}))
finite = [int(torch.isfinite(s).sum()) for s in out.scores]
print(json.dumps({{"tokens": out.sequences[0].tolist(), "finite": finite}}))
"""


def test_processor_off_is_bit_identical_and_on_has_effect(env):
    script = SCRIPT.format(tests=str(ROOT / "tests"))
    python = str(env / "bin" / "python")
    off = _run(env, [python, "-c", script, "off"])
    blocked = _run(env, [python, "-c", script, "off"], {"GENPLUG_DISABLE_PLUGINS": "top_nsigma"})
    on = _run(env, [python, "-c", script, "on"])
    assert off.returncode == blocked.returncode == on.returncode == 0, off.stderr + on.stderr
    off, blocked, on = (json.loads(r.stdout) for r in (off, blocked, on))
    assert off == blocked  # installed but not enabled: the same tokens as without the plugin
    assert all(n == 64 for n in off["finite"])
    assert all(n < 64 for n in on["finite"])  # top-nσ removed tokens at every step
    refused = _run(env, [python, "-c", script, "on"], {"GENPLUG_DISABLE_PLUGINS": "top_nsigma"})
    assert refused.returncode != 0 and "top_nsigma" in refused.stderr and "blocked" in refused.stderr


def test_third_party_cache_backend_selected_by_name_through_the_cli(env):
    plugins = _plugins(env)
    assert plugins["half_cache"]["provides"]["cache_backends"] == ["half_precision"]
    result = _run(env, [str(env / "bin" / "genplug"), "generate", "Once upon a time", "--cache", "half_precision",
                        "--max-new-tokens", "8", "--json"])
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["token_ids"]) == 8
    unknown = _run(env, [str(env / "bin" / "genplug"), "generate", "x", "--cache", "half_precison"])
    assert unknown.returncode == 1 and "half_precision" in unknown.stderr  # the known names are listed
