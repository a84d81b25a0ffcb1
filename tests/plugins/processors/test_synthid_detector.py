"""The SynthID-Text Bayesian detector: Bayes' rule checked by hand, its invariants (hypothesis),
checkpoints, and its refusals of bad input. Parity with transformers: tests/parity/test_hf_synthid_detector.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genplug
from genplug.plugins.processors import synthid_detector
from genplug.plugins.processors.synthid import SynthIDTextWatermarkLogitsProcessor
from genplug.plugins.processors.synthid_detector import (
    BayesianDetectorConfig,
    BayesianDetectorModel,
    BayesianWatermarkDetectorModelOutput,
    SynthIDTextWatermarkDetector,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WATERMARK = dict(ngram_len=3, keys=[654, 400, 836], sampling_table_size=2**10, sampling_table_seed=7,
                 context_history_size=16)
EOS = 99  # outside the range random_ids draws from, so it appears only where a test puts it


def detector(depth=3, base_rate=0.5, seed=0, dtype=torch.float64, delta_scale=1.0):
    """A detector with seeded weights large enough to matter (the default initialisation is near zero)."""
    model = BayesianDetectorModel(BayesianDetectorConfig(watermarking_depth=depth, base_rate=base_rate))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.likelihood_model_watermarked.beta.copy_(torch.randn(1, 1, depth, generator=generator) * 2)
        model.likelihood_model_watermarked.delta.copy_(torch.randn(1, 1, depth, depth, generator=generator) * 2
                                                       * delta_scale)
    return model.to(dtype)


def random_inputs(batch, length, depth, seed):
    generator = torch.Generator().manual_seed(seed)
    g_values = torch.randint(0, 2, (batch, length, depth), generator=generator)
    mask = torch.rand(batch, length, generator=generator) > 0.3
    return g_values, mask


def random_ids(batch, length, seed):
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(seed))


def posterior(model, g_values, mask):
    return model(g_values, mask)[0]


def bayes_by_hand(model, g_values, mask):
    """P(watermarked | g) from the paper's model, in float64 Python: at layer k the match had two
    different tokens with probability sigmoid(beta_k + sum_{l<k} delta_kl g_l); then the winner's g is 1
    with probability 3/4, otherwise it is a fair coin; unwatermarked g-values are fair coins."""
    beta = model.likelihood_model_watermarked.beta.detach().double()[0, 0].tolist()
    delta = model.likelihood_model_watermarked.delta.detach().double()[0, 0].tolist()
    prior = min(max(float(model.prior.detach()), 1e-5), 1 - 1e-5)
    depth = len(beta)
    answers = []
    for row, row_mask in zip(g_values.tolist(), mask.tolist()):
        surprisal = math.log(prior / (1 - prior))
        for g, scored in zip(row, row_mask):
            if not scored:
                continue
            for k in range(depth):
                two_distinct = 1 / (1 + math.exp(-(beta[k] + sum(delta[k][l] * g[l] for l in range(k)))))
                watermarked = two_distinct * (0.75 if g[k] else 0.25) + (1 - two_distinct) * 0.5
                surprisal += math.log(watermarked / 0.5)
        answers.append(1 / (1 + math.exp(-surprisal)))
    return torch.tensor(answers, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- the posterior


@pytest.mark.parametrize("batch,length,depth,base_rate", [
    (3, 7, 4, 0.3), (1, 5, 3, 0.3), (4, 1, 3, 0.3), (2, 6, 1, 0.3), (1, 1, 1, 0.3), (2, 3, 2, 0.0), (2, 3, 2, 1.0),
])
def test_posterior_is_bayes_rule_computed_by_hand(batch, length, depth, base_rate):
    model = detector(depth, base_rate=base_rate, seed=depth)
    g_values, mask = random_inputs(batch, length, depth, seed=length)
    torch.testing.assert_close(posterior(model, g_values, mask), bayes_by_hand(model, g_values, mask),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("saturated", [False, True])
def test_loss_is_cross_entropy_plus_the_delta_penalty(saturated):
    model = detector(4, seed=1)
    g_values, mask = random_inputs(5, 8, 4, seed=2)
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    if saturated:  # confidently wrong rows: the clamp of the posterior bounds their loss
        with torch.no_grad():
            model.likelihood_model_watermarked.beta.fill_(10.0)
        g_values, mask = torch.ones(5, 60, 4, dtype=torch.long), torch.ones(5, 60, dtype=torch.bool)
        assert bool((posterior(model, g_values, mask) == 1).all())
    probs, loss = model(g_values, mask, labels=labels, loss_batch_weight=0.25)
    p = bayes_by_hand(model, g_values, mask).clamp(1e-5, 1 - 1e-5)
    cross_entropy = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    penalty = 0.25 * float((model.likelihood_model_watermarked.delta.detach() ** 2).sum())
    assert loss.shape == ()
    assert loss.item() == pytest.approx(float(cross_entropy) + penalty, abs=1e-10)
    loss.backward()  # trainable: every parameter gets a gradient
    assert all(p.grad is not None for p in model.parameters())


def test_return_dict_carries_the_same_values():
    model = detector(3)
    g_values, mask = random_inputs(2, 5, 3, seed=0)
    labels = torch.tensor([1.0, 0.0])
    out = model(g_values, mask, labels=labels, return_dict=True)
    assert isinstance(out, BayesianWatermarkDetectorModelOutput)
    probs, loss = model(g_values, mask, labels=labels)
    assert torch.equal(out.posterior_probabilities, probs) and torch.equal(out.loss, loss)
    assert model(g_values, mask, return_dict=True).loss is None
    assert len(model(g_values, mask)) == 1


shapes = st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 4), st.integers(0, 2**16))


@SETTINGS
@given(shapes, st.floats(0, 1))
def test_posterior_is_a_probability(shape, base_rate):
    batch, length, depth, seed = shape
    model = detector(depth, base_rate=base_rate, seed=seed, dtype=torch.float32)
    probs = posterior(model, *random_inputs(batch, length, depth, seed))
    assert probs.shape == (batch,)
    assert bool(((probs >= 0) & (probs <= 1)).all())


@SETTINGS
@given(shapes, st.floats(0, 1), st.floats(0, 1))
def test_a_higher_prior_never_lowers_the_posterior(shape, rate_a, rate_b):
    batch, length, depth, seed = shape
    low, high = sorted((rate_a, rate_b))
    g_values, mask = random_inputs(batch, length, depth, seed)
    below = posterior(detector(depth, base_rate=low, seed=seed), g_values, mask)
    above = posterior(detector(depth, base_rate=high, seed=seed), g_values, mask)
    assert bool((above >= below).all())


@SETTINGS
@given(shapes)
def test_unscored_tokens_do_not_count(shape):
    batch, length, depth, seed = shape
    model = detector(depth, base_rate=0.4, seed=seed)
    g_values, mask = random_inputs(batch, length, depth, seed)
    flipped = torch.where(mask[..., None], g_values, 1 - g_values)
    assert torch.equal(posterior(model, flipped, mask), posterior(model, g_values, mask))
    nothing = posterior(model, g_values, torch.zeros_like(mask))
    torch.testing.assert_close(nothing, torch.full((batch,), 0.4, dtype=torch.float64))  # the prior alone


@SETTINGS
@given(shapes)
def test_rows_are_scored_independently(shape):
    batch, length, depth, seed = shape
    model = detector(depth, seed=seed)
    g_values, mask = random_inputs(batch, length, depth, seed)
    alone = torch.cat([posterior(model, g_values[i:i + 1], mask[i:i + 1]) for i in range(batch)])
    torch.testing.assert_close(posterior(model, g_values, mask), alone, rtol=0, atol=1e-12)


@SETTINGS
@given(shapes, st.data())
def test_without_interactions_a_one_is_evidence_for_the_watermark(shape, data):
    """With delta = 0 each layer's g is 1 with probability >= 1/2 under the watermark, so turning a
    scored 0 into a 1 can only raise the posterior."""
    batch, length, depth, seed = shape
    model = detector(depth, seed=seed, delta_scale=0.0)
    g_values, _ = random_inputs(batch, length, depth, seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    index = (data.draw(st.integers(0, batch - 1)), data.draw(st.integers(0, length - 1)),
             data.draw(st.integers(0, depth - 1)))
    zero, one = g_values.clone(), g_values.clone()
    zero[index], one[index] = 0, 1
    assert bool((posterior(model, one, mask) >= posterior(model, zero, mask)).all())


# ---------------------------------------------------------------------------------------------- the detector


def test_detector_scores_what_the_module_scores_on_the_processors_masks():
    processor = SynthIDTextWatermarkLogitsProcessor(device="cpu", **WATERMARK)
    model = detector(3)
    ids = random_ids(2, 12, seed=3)
    ids[0, 6:8] = ids[0, 1:3]  # the context of the token at 3 comes back before the token at 8
    ids[1, 8] = EOS
    (probs,) = SynthIDTextWatermarkDetector(model, processor, types.SimpleNamespace(eos_token_id=EOS))(ids)
    fresh_context = processor.compute_context_repetition_mask(ids)
    assert not fresh_context[0, 8 - 2]
    mask = fresh_context & (ids[:, 2:] != EOS).cumprod(dim=1).bool()
    assert torch.equal(probs, posterior(model, processor.compute_g_values(ids), mask))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.integers(0, 2**16))
def test_tokens_after_the_first_eos_do_not_count(eos_at, seed):
    processor = SynthIDTextWatermarkLogitsProcessor(device="cpu", **WATERMARK)
    scorer = SynthIDTextWatermarkDetector(detector(3, seed=seed), processor, types.SimpleNamespace(eos_token_id=EOS))
    ids = random_ids(2, 14, seed)
    ids[:, eos_at] = EOS
    changed = ids.clone()
    changed[:, eos_at + 1:] = random_ids(2, 14, seed + 1)[:, eos_at + 1:]
    assert torch.equal(scorer(ids)[0], scorer(changed)[0])


def test_public_names_are_lazy_exports():
    for name in ("BayesianDetectorConfig", "BayesianDetectorModel", "BayesianDetectorWatermarkedLikelihood",
                 "BayesianWatermarkDetectorModelOutput", "SynthIDTextWatermarkDetector"):
        assert getattr(genplug, name) is getattr(synthid_detector, name)


def test_detection_works_without_transformers():
    code = (
        "import sys, types; sys.modules['transformers'] = None\n"
        "import torch, genplug\n"
        "from genplug.plugins.processors.synthid import SynthIDTextWatermarkLogitsProcessor\n"
        "model = genplug.BayesianDetectorModel(genplug.BayesianDetectorConfig(watermarking_depth=2))\n"
        "processor = SynthIDTextWatermarkLogitsProcessor(3, [1, 2], 64, 0, 8, 'cpu')\n"
        "detect = genplug.SynthIDTextWatermarkDetector(model, processor, types.SimpleNamespace(eos_token_id=0))\n"
        "print(detect(torch.arange(1, 11).reshape(2, 5))[0].shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch.Size([2])"


# ---------------------------------------------------------------------------------------------- checkpoints


def test_a_saved_detector_loads_back(tmp_path):
    model = detector(3, base_rate=0.2, seed=5)
    model.config.set_detector_information("some/model", dict(WATERMARK))
    model.config.extra["note"] = "kept"
    model.save_pretrained(tmp_path)
    loaded = BayesianDetectorModel.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.prior.dtype == torch.float64  # the checkpoint's dtype
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert (loaded.config.model_name, loaded.config.watermarking_config) == ("some/model", WATERMARK)
    assert loaded.config.base_rate == 0.2 and loaded.config.extra["note"] == "kept"
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == ["BayesianDetectorModel"] and written["watermarking_depth"] == 3
    # the recorded watermarking settings rebuild the processor the detector was trained for
    processor = SynthIDTextWatermarkLogitsProcessor(device="cpu", **loaded.config.watermarking_config)
    SynthIDTextWatermarkDetector(loaded, processor, types.SimpleNamespace(eos_token_id=EOS))


def test_a_settings_object_is_written_as_a_dict(tmp_path):
    config = BayesianDetectorConfig(watermarking_depth=3)
    config.set_detector_information("m", genplug.SynthIDTextWatermarkingConfig(**WATERMARK))
    config.save_pretrained(tmp_path)
    settings_written = BayesianDetectorConfig.from_pretrained(tmp_path).watermarking_config
    assert {key: settings_written[key] for key in WATERMARK} == WATERMARK


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("depth,base_rate,match", [
    (None, 0.5, "watermarking_depth=None"), (0, 0.5, "watermarking_depth=0"), (2.0, 0.5, "watermarking_depth=2.0"),
    (3, 1.5, "base_rate=1.5"), (3, "0.5", "base_rate='0.5'"),
])
def test_bad_config_is_refused(depth, base_rate, match):
    with pytest.raises(ValueError, match=match):
        BayesianDetectorModel(BayesianDetectorConfig(watermarking_depth=depth, base_rate=base_rate))


@pytest.mark.parametrize("case,match", [
    ("2-D g-values", r"g_values has shape \(2, 5\), expected \(batch, length, 3\)"),
    ("wrong depth", r"g_values has shape \(2, 5, 4\)"),
    ("mask shape", r"mask has shape \(2, 4\), expected \(2, 5\)"),
    ("non-binary", "values other than 0 and 1"),
    ("labels shape", r"labels has shape \(2, 1\), expected \(2,\)"),
])
def test_bad_tensors_are_refused(case, match):
    model = detector(3)
    g_values, mask = random_inputs(2, 5, 3, seed=0)
    labels = None
    if case == "2-D g-values":
        g_values = g_values[..., 0]
    elif case == "wrong depth":
        g_values = torch.cat([g_values, g_values[..., :1]], dim=-1)
    elif case == "mask shape":
        mask = mask[:, :4]
    elif case == "non-binary":
        g_values = g_values * 2
    elif case == "labels shape":
        labels = torch.ones(2, 1)
    with pytest.raises(ValueError, match=match):
        model(g_values, mask, labels=labels)


def test_detector_refuses_a_processor_with_another_number_of_keys():
    processor = SynthIDTextWatermarkLogitsProcessor(device="cpu", **WATERMARK)
    with pytest.raises(ValueError, match="watermarking_depth=4 but the logits processor has 3 keys"):
        SynthIDTextWatermarkDetector(detector(4), processor, types.SimpleNamespace(eos_token_id=EOS))


def test_detector_needs_an_eos_token_id():
    processor = SynthIDTextWatermarkLogitsProcessor(device="cpu", **WATERMARK)
    with pytest.raises(ValueError, match="has no eos_token_id"):
        SynthIDTextWatermarkDetector(detector(3), processor, types.SimpleNamespace(pad_token_id=0))


@pytest.mark.parametrize("ids,match", [
    (torch.arange(10), r"shape \(10,\)"),
    (torch.zeros(1, 2, 5, dtype=torch.long), r"shape \(1, 2, 5\)"),
    (torch.zeros(2, 6), "dtype torch.float32"),
    ([[1, 2, 3, 4]], "tokenized_outputs has list"),
    (torch.ones(2, 6, dtype=torch.bool), "dtype torch.bool"),
    (torch.ones(2, 2, dtype=torch.long), "2 tokens per row, fewer than ngram_len=3"),
])
def test_detector_refuses_bad_token_ids(ids, match):
    processor = SynthIDTextWatermarkLogitsProcessor(device="cpu", **WATERMARK)
    scorer = SynthIDTextWatermarkDetector(detector(3), processor, types.SimpleNamespace(eos_token_id=EOS))
    with pytest.raises(ValueError, match=match):
        scorer(ids)


def test_a_detector_loads_from_a_hub_repository_id(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    from helpers.fake_hub import FakeHub

    monkeypatch.chdir(tmp_path)  # "org/detector" is not a local path
    hub = FakeHub(tmp_path).install(monkeypatch)
    saved = detector(3)
    saved.save_pretrained(hub.repository("org/detector"))
    loaded = BayesianDetectorModel.from_pretrained("org/detector")
    assert hub.calls[-1][0] == "snapshot_download"
    assert hub.calls[-1][2]["allow_patterns"] == ["config.json", "model.safetensors"]
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    with pytest.raises(FileNotFoundError, match="no repository 'org/missing'"):
        BayesianDetectorModel.from_pretrained("org/missing")


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local directory"):
        BayesianDetectorModel.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        BayesianDetectorModel.from_pretrained(tmp_path)
    detector(3).save_pretrained(tmp_path / "three")
    (tmp_path / "three" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        BayesianDetectorModel.from_pretrained(tmp_path / "three")
    detector(3).save_pretrained(tmp_path / "three")
    config = json.loads((tmp_path / "three" / "config.json").read_text())
    (tmp_path / "three" / "config.json").write_text(json.dumps({**config, "watermarking_depth": 4}))
    with pytest.raises(ValueError, match="watermarking_depth=4.*come from different detectors"):
        BayesianDetectorModel.from_pretrained(tmp_path / "three")
    (tmp_path / "three" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        BayesianDetectorModel.from_pretrained(tmp_path / "three")
