"""Diverse (group) and constrained beam search: genplug == transformers 4.56.2.

transformers 5 no longer has these modes, so their output under 4.56.2 is recorded by
``scripts/beam_v456_oracle.py`` (run in a virtual environment with transformers 4.56.2) into
``fixtures/beam_v456.json``. The models are rebuilt here from the same configs and seeded weights (the
fixture's weight checksum proves it) and genplug must give the same sequences token for token and the
same ``sequences_scores`` within 1e-5. The slow test re-records two cases live.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import genplug

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "beam_v456.json"
ATOL = 1e-5


def _load_oracle():
    spec = importlib.util.spec_from_file_location("beam_v456_oracle", ROOT / "scripts" / "beam_v456_oracle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


oracle = _load_oracle()
RECORDED = json.loads(FIXTURE.read_text())["cases"]

# genplug fixes a 4.56 bug this case runs into (DisjunctiveConstraint.copy(stateful=True) shared its
# progress with the original); see test_shared_prefix_case_differs_only_by_the_fixed_copy_bug.
FIXED_4_56_BUGS = {"constrained_disjunctive_shared_prefix"}


@functools.lru_cache(maxsize=None)
def _model(name):
    return oracle.build_model(name)


def run_genplug(entry, **overrides):
    model = _model(entry["model"])
    assert oracle.checksum(model) == pytest.approx(entry["checksum"], abs=1e-9), "not the model 4.56 ran"
    input_ids, attention_mask = oracle.prompt(**entry["prompt"])
    kwargs = oracle.call_kwargs(entry["kwargs"], genplug.PhrasalConstraint, genplug.DisjunctiveConstraint)
    kwargs.update(overrides)
    extra = {} if attention_mask is None else {"attention_mask": attention_mask}
    return genplug.generate(model, input_ids, **extra, **kwargs, return_dict_in_generate=True, output_scores=True)


def assert_matches(ours, recorded):
    expected = torch.tensor(recorded["sequences"])
    assert ours.sequences.shape == expected.shape and torch.equal(ours.sequences, expected), (
        f"sequences differ:\ngenplug {ours.sequences.tolist()}\n4.56    {expected.tolist()}")
    torch.testing.assert_close(ours.sequences_scores, torch.tensor(recorded["sequences_scores"]), atol=ATOL, rtol=0)


def test_fixture_covers_every_case_of_the_oracle():
    assert set(RECORDED) == {case["id"] for case in oracle.CASES}, "re-run scripts/beam_v456_oracle.py"
    for case in oracle.CASES:
        recorded = dict(RECORDED[case["id"]]["kwargs"])
        if "eos_from_greedy_step" in case:
            recorded.pop("eos_token_id")
        assert recorded == case["kwargs"], f"{case['id']}: the oracle's case changed; re-run the oracle script"


@pytest.mark.parametrize("case_id", [c["id"] for c in oracle.CASES if c["id"] not in FIXED_4_56_BUGS])
def test_matches_transformers_4_56(case_id):
    assert_matches(run_genplug(RECORDED[case_id]), RECORDED[case_id])


def test_the_cases_exercise_what_they_claim():
    """Guards against fixtures that would pass whatever the diversity penalty or EOS handling did."""
    basic = RECORDED["group_basic"]
    without_penalty = run_genplug(basic, diversity_penalty=1e-6)
    assert not torch.equal(without_penalty.sequences, torch.tensor(basic["sequences"]))
    eos_cases = [k for k, v in RECORDED.items()
                 if v["kwargs"].get("eos_token_id") is not None
                 and v["kwargs"]["eos_token_id"] in sum((row[1:] for row in v["sequences"]), [])]
    assert len(eos_cases) >= 4, eos_cases


def _contains(sequence, word):
    options = word if isinstance(word[0], list) else [word]
    return any(sequence[i:i + len(o)] == o for o in options for i in range(len(sequence)))


def test_shared_prefix_case_differs_only_by_the_fixed_copy_bug(monkeypatch):
    entry = RECORDED["constrained_disjunctive_shared_prefix"]
    word = entry["kwargs"]["force_words_ids"][0]
    ours = run_genplug(entry)
    assert all(_contains(row, word) for row in ours.sequences.tolist())
    assert not all(_contains(row, word) for row in entry["sequences"]), "4.56 misses the constraint here"
    assert ours.sequences_scores.max() > max(entry["sequences_scores"])

    # Re-introduce 4.56's aliasing copy: the output becomes 4.56's exactly.
    def aliasing_copy(self, stateful=False):
        twin = genplug.DisjunctiveConstraint(self.token_ids)
        if stateful:
            twin.current_seq, twin.completed = self.current_seq, self.completed
        return twin

    monkeypatch.setattr(genplug.DisjunctiveConstraint, "copy", aliasing_copy)
    assert_matches(run_genplug(entry), entry)


# ------------------------------------------------------------------------------------- live re-check


def _venv_home() -> pathlib.Path:
    override = os.environ.get("GENPLUG_TF456_VENV")
    if override:
        return pathlib.Path(override)
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    return cache / "genplug" / "transformers-4.56.2-venv"


def _venv_python(home: pathlib.Path) -> pathlib.Path:
    return home / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _make_venv(home: pathlib.Path) -> pathlib.Path:
    """A virtual environment with transformers 4.56.2 and no access to this one's transformers.

    When this environment runs torch 2.13.0, the new one borrows it through a .pth file pointing at
    links to the torch package only (unpacking a second copy takes minutes on a small machine);
    otherwise torch 2.13.0 is pip-installed.
    """
    python = _venv_python(home)
    if (home / "ready").exists():
        return python
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], capture_output=True, text=True,
                          timeout=120)
    if made.returncode != 0:
        pytest.skip(f"could not create a virtual environment: {made.stderr.strip()[-300:]}")
    site = pathlib.Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                       check=True, capture_output=True, text=True).stdout.strip())
    packages = ["transformers==4.56.2"]
    if torch.__version__.split("+")[0] == "2.13.0":
        import importlib.metadata as metadata

        shared, source = home / "shared-torch", pathlib.Path(torch.__file__).parent.parent
        shared.mkdir()
        info = f"torch-{metadata.version('torch')}.dist-info"
        for name in ("torch", "torchgen", "functorch", info):
            if (source / name).exists():
                (shared / name).symlink_to(source / name)
        (site / "genplug-shared-torch.pth").write_text(f"{shared}\n")
        packages += [r.split(";")[0] for r in metadata.requires("torch") or ()
                     if "extra ==" not in r and not r.startswith("setuptools")]
    else:
        packages.append("torch==2.13.0")
    try:
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], capture_output=True,
                              text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip("pip took over 4 minutes to install transformers==4.56.2; is PyPI reachable?")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"pip could not install transformers==4.56.2 (offline?): {last}")
    (home / "ready").write_text("transformers==4.56.2\n")
    return python


@pytest.mark.slow
def test_live_against_transformers_4_56(tmp_path):
    python = _make_venv(_venv_home())
    out = tmp_path / "live.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([str(python), str(ROOT / "scripts" / "beam_v456_oracle.py"), "--out", str(out),
                          "--cases", ",".join(oracle.LIVE_CASES)], capture_output=True, text=True, timeout=300,
                         env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    live = json.loads(out.read_text())
    assert live["transformers"] == "4.56.2"
    for case_id in oracle.LIVE_CASES:
        entry = live["cases"][case_id]
        assert entry["sequences"] == RECORDED[case_id]["sequences"], f"{case_id}: the fixture is stale"
        assert_matches(run_genplug(entry), entry)
