"""GenerationConfig and the Hugging Face Hub: from_pretrained("org/name"), save_pretrained(push_to_hub=True),
push_to_hub, and genplug.hub's rules. No test reaches the network: huggingface_hub's functions are replaced
by a recording fake (tests/helpers/fake_hub.py), or the real client runs with HF_HUB_OFFLINE=1."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from genplug import hub
from genplug.config import GenerationConfig
from genplug.errors import GenerationConfigError
from helpers.fake_hub import FakeHub, hub_error

pytest.importorskip("huggingface_hub")

SETTINGS = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "eos_token_id": [2, 7]}


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so that "org/name" is not a local path by accident
    fake = FakeHub(tmp_path).install(monkeypatch)
    (fake.repository("org/name") / "generation_config.json").write_text(json.dumps(SETTINGS))
    return fake


# ---------------------------------------------------------------------------------------------- repository ids


@pytest.mark.parametrize("text", ["org/name", "gpt2", "my-org/model_v1.5", "a/b"])
def test_repository_id_shapes(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.looks_like_repo_id(text)


@pytest.mark.parametrize("text", ["/abs/path", "./rel", "../up", "~/model", "a/b/c", "org/-name", "org/name.",
                                  "org--x/name", "org/na..me", "org/name.git", "", "org/name with space",
                                  "C:\\models\\x", "org/café"])
def test_what_is_not_a_repository_id(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not hub.looks_like_repo_id(text)


def test_an_existing_local_path_is_never_a_repository_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not hub.looks_like_repo_id("org/name")


def test_cached_snapshot_follows_refs_and_commit_ids(tmp_path):
    repo = tmp_path / "models--org--name"
    for commit in ("c1", "c2"):
        (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c1\n")
    (repo / "refs" / "dev").write_text("c2")
    assert hub.cached_snapshot("org/name", cache_dir=tmp_path) == repo / "snapshots" / "c1"
    assert hub.cached_snapshot("org/name", "dev", cache_dir=tmp_path) == repo / "snapshots" / "c2"
    assert hub.cached_snapshot("org/name", "c2", cache_dir=tmp_path) == repo / "snapshots" / "c2"
    assert hub.cached_snapshot("org/name", "v9", cache_dir=tmp_path) is None
    assert hub.cached_snapshot("org/other", cache_dir=tmp_path) is None


# ---------------------------------------------------------------------------------------------- from_pretrained


def test_from_pretrained_downloads_the_one_file_with_the_defaults(fake_hub):
    config = GenerationConfig.from_pretrained("org/name")
    assert config == GenerationConfig(**SETTINGS)
    assert fake_hub.calls == [("hf_hub_download", ("org/name", "generation_config.json"), dict(
        subfolder=None, revision="main", cache_dir=None, force_download=False, token=None, local_files_only=False))]


def test_from_pretrained_passes_every_download_option(fake_hub, tmp_path):
    (fake_hub.repository("org/name") / "sub").mkdir()
    (fake_hub.repository("org/name") / "sub" / "other.json").write_text('{"max_new_tokens": 3}')
    config, unused = GenerationConfig.from_pretrained(
        "org/name", "other.json", cache_dir=tmp_path / "cache", force_download=True, local_files_only=True,
        token="hf_secret", revision="v1.2", proxies={"https": "proxy:3128"}, subfolder="sub",
        return_unused_kwargs=True, num_beams=2, foo=1)
    assert (config.max_new_tokens, config.num_beams, unused) == (3, 2, {"foo": 1})
    assert fake_hub.calls == [("hf_hub_download", ("org/name", "other.json"), dict(
        subfolder="sub", revision="v1.2", cache_dir=tmp_path / "cache", force_download=True, token="hf_secret",
        local_files_only=True, proxies={"https": "proxy:3128"}))]


def test_local_paths_never_reach_the_hub(fake_hub, tmp_path):
    local = tmp_path / "org" / "name"  # the same string as the repository id, relative to the working directory
    GenerationConfig(max_new_tokens=5).save_pretrained(local)
    assert GenerationConfig.from_pretrained("org/name", revision="v1", token="t").max_new_tokens == 5
    for missing in (str(tmp_path / "nowhere"), "configs/generation.json", "a/b/c", "./org/other"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            GenerationConfig.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="has no generation config"):
        GenerationConfig.from_pretrained("org/name", "other.json")
    assert fake_hub.calls == []


@pytest.mark.parametrize("error, kwargs, raised, message", [
    ("RepositoryNotFoundError", {}, FileNotFoundError, "no repository 'org/name'"),
    ("GatedRepoError", {}, PermissionError, "'org/name' is a gated Hub repository"),
    ("RevisionNotFoundError", {"revision": "v9"}, FileNotFoundError, "revision 'v9' does not exist in the Hub "
                                                                    "repository 'org/name'"),
    ("RemoteEntryNotFoundError", {"subfolder": "sub", "revision": "v9"}, FileNotFoundError,
     "sub/generation_config.json of the Hub repository 'org/name' \\(revision 'v9'\\) does not exist"),
    ("LocalEntryNotFoundError", {"local_files_only": True}, FileNotFoundError,
     "generation_config.json of the Hub repository 'org/name' \\(revision 'main'\\) is not in the Hugging Face "
     "cache .*local_files_only=True"),
    ("LocalEntryNotFoundError", {}, FileNotFoundError, "is not in the Hugging Face cache .*could not be reached"),
    ("HfHubHTTPError", {}, OSError, "fetching generation_config.json of the Hub repository 'org/name'.*: boom"),
])
def test_hub_errors_become_oserrors_naming_repo_file_and_revision(fake_hub, error, kwargs, raised, message):
    fake_hub.fail_with = hub_error(error, "boom", status=500)
    with pytest.raises(raised, match=message) as caught:
        GenerationConfig.from_pretrained("org/name", **kwargs)
    assert caught.value.__cause__ is fake_hub.fail_with  # the client's own error stays attached


def test_the_real_missing_repository_and_file_are_explained(fake_hub):
    with pytest.raises(FileNotFoundError, match="'org/missing' is not a local path, and the Hugging Face Hub has no"):
        GenerationConfig.from_pretrained("org/missing")
    with pytest.raises(FileNotFoundError, match="other.json of the Hub repository 'org/name'.*does not exist"):
        GenerationConfig.from_pretrained("org/name", "other.json")


def test_offline_mode_is_named_when_the_file_is_not_cached(fake_hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    fake_hub.fail_with = hub_error("LocalEntryNotFoundError")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set"):
        GenerationConfig.from_pretrained("org/name")


def test_unknown_client_errors_pass_through(fake_hub):
    fake_hub.fail_with = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        GenerationConfig.from_pretrained("org/name")
    fake_hub.fail_with = RuntimeError("odd")
    with pytest.raises(RuntimeError, match="odd"):
        GenerationConfig.from_pretrained("org/name")


def test_without_huggingface_hub_a_repository_id_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(FileNotFoundError, match="'org/name' is not a local path.*pip install huggingface_hub"):
        GenerationConfig.from_pretrained("org/name")
    with pytest.raises(ImportError, match="pip install huggingface_hub"):
        GenerationConfig(max_new_tokens=2).push_to_hub("org/name")
    GenerationConfig(max_new_tokens=2).save_pretrained(tmp_path / "local")  # the local paths need no client
    assert GenerationConfig.from_pretrained(tmp_path / "local").max_new_tokens == 2


def test_the_real_client_offline_reads_the_hub_cache(tmp_path):
    """huggingface_hub itself, with HF_HUB_OFFLINE=1, resolves "org/name" from a cache laid out as the Hub's."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--name"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "generation_config.json").write_text(json.dumps(SETTINGS))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    work = tmp_path / "work"
    work.mkdir()
    script = textwrap.dedent(f"""
        import json
        from genplug.config import GenerationConfig
        out = {{"main": GenerationConfig.from_pretrained("org/name").to_diff_dict(),
                "commit": GenerationConfig.from_pretrained("org/name", revision="{commit}").top_p}}
        try:
            GenerationConfig.from_pretrained("org/name", "other.json")
        except FileNotFoundError as exc:
            out["missing"] = str(exc)
        print(json.dumps(out))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: out["main"][k] for k in SETTINGS} == SETTINGS
    assert out["commit"] == 0.9
    assert "other.json of the Hub repository 'org/name'" in out["missing"]
    assert "HF_HUB_OFFLINE is set" in out["missing"]


# ---------------------------------------------------------------------------------------------- uploads


def _transformers_reads(content: str, tmp_path):
    transformers = pytest.importorskip("transformers")
    directory = tmp_path / "downloaded"
    directory.mkdir()
    (directory / "generation_config.json").write_text(content)
    return transformers.GenerationConfig.from_pretrained(directory)


def test_save_pretrained_pushes_the_file_it_wrote(fake_hub, tmp_path):
    config = GenerationConfig(**SETTINGS)
    path = config.save_pretrained(tmp_path / "my-generation", push_to_hub=True, token="hf_secret", private=True,
                                  commit_message="first")
    assert path == str(tmp_path / "my-generation" / "generation_config.json")
    assert fake_hub.names() == ["HfApi", "create_repo", "upload_file"]
    assert fake_hub.calls[0][2] == {"token": "hf_secret"}
    assert fake_hub.calls[1][1:] == (("my-generation",), {"private": True, "exist_ok": True})
    [upload] = fake_hub.uploads
    assert upload == dict(repo_id="me/my-generation", path_in_repo="generation_config.json",
                          content=open(path, encoding="utf-8").read(), commit_message="first",
                          commit_description=None, create_pr=False, revision=None)
    theirs = _transformers_reads(upload["content"], tmp_path)
    assert {k: getattr(theirs, k) for k in SETTINGS} == SETTINGS


def test_save_pretrained_push_options(fake_hub, tmp_path):
    config = GenerationConfig(max_new_tokens=4)
    config.save_pretrained(tmp_path / "dir", "custom.json", True, repo_id="org/name",
                           revision="dev", create_pr=True, commit_description="why")
    assert fake_hub.names() == ["HfApi", "create_repo", "create_branch", "upload_file"]
    assert fake_hub.calls[1][1] == ("org/name",)
    assert fake_hub.calls[2][1:] == (("org/name",), {"branch": "dev", "exist_ok": True})
    [upload] = fake_hub.uploads
    assert (upload["path_in_repo"], upload["revision"], upload["create_pr"], upload["commit_message"],
            upload["commit_description"]) == ("custom.json", "dev", True, "Upload config", "why")
    fake_hub.calls.clear()
    config.save_pretrained(str(tmp_path / "dir2") + os.sep, push_to_hub=True, revision="refs/pr/3")
    assert fake_hub.names() == ["HfApi", "create_repo", "upload_file"]  # a PR ref is not a branch to create
    assert fake_hub.calls[1][1] == ("dir2",)


@pytest.mark.filterwarnings("ignore:these generation flags are set but will be ignored")
def test_push_is_refused_before_anything_is_written_or_sent(fake_hub, tmp_path):
    with pytest.raises(TypeError, match=r"unknown arguments \['privat'\]"):
        GenerationConfig(max_new_tokens=4).save_pretrained(tmp_path / "out", push_to_hub=True, privat=True)
    with pytest.raises(GenerationConfigError):
        GenerationConfig(temperature=0.5).save_pretrained(tmp_path / "out", push_to_hub=True)  # no do_sample
    with pytest.raises(GenerationConfigError):
        GenerationConfig(temperature=0.5).push_to_hub("org/name")
    assert fake_hub.calls == [] and not (tmp_path / "out").exists()


def test_push_to_hub_uploads_what_save_pretrained_writes(fake_hub, tmp_path):
    config = GenerationConfig(**SETTINGS, sequence_bias={(1, 2): -1.5})
    commit = config.push_to_hub("org/name", token="hf_secret", private=False, revision="dev", create_pr=True,
                                commit_description="tuned")
    assert commit == "https://huggingface.co/org/name/commit/0123abcd"
    assert fake_hub.names() == ["HfApi", "create_repo", "create_branch", "upload_file"]
    assert fake_hub.calls[0][2] == {"token": "hf_secret"}
    assert fake_hub.calls[1][1:] == (("org/name",), {"private": False, "exist_ok": True})
    [upload] = fake_hub.uploads
    saved = config.save_pretrained(tmp_path / "local")
    assert upload["content"] == open(saved, encoding="utf-8").read()
    assert (upload["repo_id"], upload["path_in_repo"], upload["commit_message"], upload["revision"],
            upload["create_pr"]) == ("org/name", "generation_config.json", "Upload config", "dev", True)
    theirs = _transformers_reads(upload["content"], tmp_path)
    assert {k: getattr(theirs, k) for k in SETTINGS} == SETTINGS
    assert GenerationConfig.from_pretrained(tmp_path / "downloaded") == config


def test_push_to_hub_then_from_pretrained_round_trips(fake_hub):
    config = GenerationConfig(num_beams=3, length_penalty=0.5, max_new_tokens=12)
    config.push_to_hub("org/round-trip")
    [upload] = fake_hub.uploads
    (fake_hub.repository("org/round-trip") / upload["path_in_repo"]).write_text(upload["content"])
    assert GenerationConfig.from_pretrained("org/round-trip") == config
