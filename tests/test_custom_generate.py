"""custom_generate: callables, local repositories, trust, requirements, per-call hook modules."""

import sys
from pathlib import Path

import pytest
import torch

import genplug
from genplug.errors import GenerationInputError
from helpers.tiny_lm import TinyCausalLM, recompute_greedy

EXAMPLES = Path(__file__).resolve().parents[1] / "contrib" / "custom_generate_examples"


@pytest.fixture(scope="module")
def model():
    return TinyCausalLM(vocab_size=32, seed=2)


def test_callable_gets_prepared_inputs_and_strategy_signature(model):
    seen = {}

    def my_loop(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
                streamer=None, flavour=None, **model_kwargs):
        seen.update(input_ids=input_ids, config=generation_config, flavour=flavour, kwargs=model_kwargs,
                    processors=logits_processor, criteria=stopping_criteria)
        return "done"

    ids = torch.tensor([[4, 5, 6]])
    assert genplug.generate(model, ids, custom_generate=my_loop, max_new_tokens=3, flavour="x") == "done"
    assert seen["flavour"] == "x"
    assert seen["config"].max_length == 6  # max_new_tokens turned into an absolute length
    assert "past_key_values" in seen["kwargs"] and "use_cache" in seen["kwargs"]
    assert isinstance(seen["processors"], genplug.LogitsProcessorList)


def test_local_repository_runs_with_trust(model):
    ids = torch.tensor([[4, 5, 6], [7, 8, 9]])
    out = genplug.generate(model, ids, custom_generate=str(EXAMPLES / "entropy_trace"), trust_remote_code=True,
                           max_new_tokens=5, eos_token_id=None)
    assert torch.equal(out["sequences"], recompute_greedy(model, ids, 5))
    assert out["entropies"].shape == (2, 5) and bool((out["entropies"] >= 0).all())


def test_local_repository_without_trust_is_refused_before_running(model):
    with pytest.raises(GenerationInputError, match="trust_remote_code=True"):
        genplug.generate(model, torch.tensor([[1, 2]]), custom_generate=str(EXAMPLES / "entropy_trace"))


def test_repository_without_generate_py(model, tmp_path):
    with pytest.raises(GenerationInputError, match="no custom_generate/generate.py"):
        genplug.generate(model, torch.tensor([[1, 2]]), custom_generate=str(tmp_path), trust_remote_code=True)


def test_unmet_requirements_are_named(model, tmp_path):
    (tmp_path / "custom_generate").mkdir()
    (tmp_path / "custom_generate" / "generate.py").write_text("def generate(model, **kw):\n    return 1\n")
    (tmp_path / "custom_generate" / "requirements.txt").write_text("torch>=999.0\nno-such-package-xyz\n")
    with pytest.raises(ImportError) as err:
        genplug.generate(model, torch.tensor([[1, 2]]), custom_generate=str(tmp_path), trust_remote_code=True)
    assert "torch>=999.0 (installed:" in str(err.value) and "no-such-package-xyz (not installed)" in str(err.value)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """huggingface_hub replaced by a recording fake serving ``someone/entropy``; an empty local hub cache."""
    pytest.importorskip("huggingface_hub")
    import shutil

    from helpers.fake_hub import FakeHub

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    fake = FakeHub(tmp_path).install(monkeypatch)
    shutil.copytree(EXAMPLES / "entropy_trace", fake.repository("someone/entropy"), dirs_exist_ok=True)
    (fake.repository("someone/entropy") / "README.md").write_text("not part of custom_generate")
    return fake


@pytest.mark.parametrize("trust", [None, False])
def test_hub_id_without_trust_is_refused_before_any_download(model, fake_hub, tmp_path, trust):
    # A cached snapshot without the code does not count: the code would still have to be downloaded.
    (tmp_path / "hub" / "models--someone--entropy" / "snapshots" / "abc123").mkdir(parents=True)
    with pytest.raises(GenerationInputError, match="would be downloaded .* pass trust_remote_code=True"):
        genplug.generate(model, torch.tensor([[1, 2]]), custom_generate="someone/entropy", trust_remote_code=trust)
    assert fake_hub.calls == []


def test_hub_id_with_trust_downloads_the_custom_generate_folder(model, fake_hub):
    ids = torch.tensor([[4, 5, 6]])
    out = genplug.generate(model, ids, custom_generate="someone/entropy", trust_remote_code=True,
                           max_new_tokens=3, eos_token_id=None)
    assert torch.equal(out["sequences"], recompute_greedy(model, ids, 3))
    assert fake_hub.calls == [("snapshot_download", ("someone/entropy",), dict(
        allow_patterns=["custom_generate/*"], revision=None, cache_dir=None, force_download=False, token=None,
        local_files_only=False))]


def test_generate_passes_the_calls_hub_options_to_the_download(model, fake_hub, tmp_path):
    """As transformers does: revision, token, cache_dir... given to generate() reach the download."""
    ids = torch.tensor([[4, 5, 6]])
    genplug.generate(model, ids, custom_generate="someone/entropy", trust_remote_code=True, max_new_tokens=2,
                     eos_token_id=None, revision="v3", token="hf_x", cache_dir=str(tmp_path / "c"))
    assert fake_hub.calls[-1][2] == dict(allow_patterns=["custom_generate/*"], revision="v3",
                                         cache_dir=str(tmp_path / "c"), force_download=False, token="hf_x",
                                         local_files_only=False)


def test_hub_download_options_and_requirements(fake_hub, tmp_path):
    from genplug.custom_generate import load_local_repository

    function, hooks = load_local_repository("someone/entropy", True, revision="v2", token="hf_secret",
                                            cache_dir=str(tmp_path / "cache"), local_files_only=True)
    assert callable(function) and hooks is None
    assert fake_hub.calls[-1][2] == dict(allow_patterns=["custom_generate/*"], revision="v2",
                                         cache_dir=str(tmp_path / "cache"), force_download=False,
                                         token="hf_secret", local_files_only=True)
    # requirements.txt comes with the code and is checked before anything runs
    (fake_hub.repository("someone/entropy") / "custom_generate" / "requirements.txt").write_text("no-such-pkg-xyz\n")
    with pytest.raises(ImportError, match="no-such-pkg-xyz"):
        load_local_repository("someone/entropy", True)


def test_hub_repository_without_the_code(model, fake_hub):
    fake_hub.repository("someone/plain")
    with pytest.raises(GenerationInputError, match="has no custom_generate/generate.py"):
        genplug.generate(model, torch.tensor([[1, 2]]), custom_generate="someone/plain", trust_remote_code=True)


@pytest.mark.parametrize("error, message", [
    ("RepositoryNotFoundError", "no repository 'someone/entropy'"),
    ("LocalEntryNotFoundError", r"custom_generate/\* of the Hub repository 'someone/entropy' \(revision 'main'\) "
                                "is not in the Hugging Face cache"),
])
def test_hub_errors_are_explained(model, fake_hub, error, message):
    from helpers.fake_hub import hub_error

    fake_hub.fail_with = hub_error(error)
    with pytest.raises(FileNotFoundError, match=message):
        genplug.generate(model, torch.tensor([[1, 2]]), custom_generate="someone/entropy", trust_remote_code=True)


def test_without_huggingface_hub_an_uncached_hub_id_says_what_to_install(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(FileNotFoundError, match="pip install huggingface_hub"):
        genplug.generate(model, torch.tensor([[1, 2]]), custom_generate="someone/some-recipe", trust_remote_code=True)


def test_not_a_directory_nor_a_hub_id(model, tmp_path):
    with pytest.raises(GenerationInputError, match="neither a local directory nor a Hub repository id"):
        genplug.generate(model, torch.tensor([[1, 2]]), custom_generate=str(tmp_path / "missing"),
                         trust_remote_code=True)


def test_repository_hooks_apply_for_that_call_only(model):
    ids = torch.tensor([[4, 5, 6]])
    plain = genplug.generate(model, ids, max_new_tokens=6, eos_token_id=None)
    banned = int(plain[0, 3])
    out = genplug.generate(model, ids, custom_generate=str(EXAMPLES / "ban_token"), trust_remote_code=True,
                           max_new_tokens=6, eos_token_id=None, banned_token_id=banned)
    assert banned not in out[0, 3:].tolist()
    with pytest.raises(Exception, match="banned_token_id"):
        genplug.generate(model, ids, max_new_tokens=2, banned_token_id=banned)


def test_hub_id_already_in_the_local_cache_runs_offline(model, tmp_path, monkeypatch):
    import shutil

    snapshot = tmp_path / "hub" / "models--someone--entropy" / "snapshots" / "abc123"
    shutil.copytree(EXAMPLES / "entropy_trace", snapshot)
    (tmp_path / "hub" / "models--someone--entropy" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--entropy" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the cache is read without the client
    ids = torch.tensor([[4, 5, 6]])
    out = genplug.generate(model, ids, custom_generate="someone/entropy", trust_remote_code=True,
                           max_new_tokens=3, eos_token_id=None)
    assert torch.equal(out["sequences"], recompute_greedy(model, ids, 3))


def test_modes_transformers_moved_to_the_hub_are_run_from_there(model, tmp_path, monkeypatch):
    """Contrastive search and DoLa left transformers 5's core for hub repositories: genplug says so,
    and with trust_remote_code=True runs the repository (here a stand-in in the local hub cache)."""
    import shutil

    ids = torch.tensor([[4, 5, 6]])
    with pytest.raises(GenerationInputError, match="transformers-community/contrastive-search"):
        genplug.generate(model, ids, penalty_alpha=0.6, top_k=4, max_new_tokens=3)
    repo = tmp_path / "hub" / "models--transformers-community--dola"
    shutil.copytree(EXAMPLES / "entropy_trace", repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    out = genplug.generate(model, ids, dola_layers="low", trust_remote_code=True, max_new_tokens=3, eos_token_id=None)
    assert torch.equal(out["sequences"], recompute_greedy(model, ids, 3))  # the stand-in decodes greedily
