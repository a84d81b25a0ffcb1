"""The SynthID-Text Bayesian detector gives transformers' posteriors, losses and gradients for the same
weights, scores generated text as transformers' detector does, and checkpoints move both ways."""

import types

import pytest
import torch
import transformers

import genplug
from genplug.plugins.processors.synthid import SynthIDTextWatermarkLogitsProcessor
from parity_tools import prompt, tiny_model

SETTINGS = dict(ngram_len=3, keys=[654, 400, 836, 123], sampling_table_size=2**10, sampling_table_seed=7,
                context_history_size=16)
DEPTH = len(SETTINGS["keys"])
ATOL = 1e-6


def seeded_weights(depth, seed):
    """A state dict in transformers' names, with weights far enough from the default initialisation
    (beta = -2.5, delta ~ 0) that every parameter moves the posterior."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "prior": torch.rand(1, generator=generator) * 0.8 + 0.1,
        "likelihood_model_watermarked.beta": torch.randn(1, 1, depth, generator=generator) * 2,
        "likelihood_model_watermarked.delta": torch.randn(1, 1, depth, depth, generator=generator),
    }


def both_detectors(depth=DEPTH, seed=0, base_rate=0.5):
    ours = genplug.BayesianDetectorModel(genplug.BayesianDetectorConfig(watermarking_depth=depth, base_rate=base_rate))
    theirs = transformers.BayesianDetectorModel(
        transformers.BayesianDetectorConfig(watermarking_depth=depth, base_rate=base_rate))
    weights = seeded_weights(depth, seed)
    ours.load_state_dict(weights)
    theirs.load_state_dict(weights)
    return ours, theirs


def random_inputs(batch, length, depth, seed):
    generator = torch.Generator().manual_seed(seed)
    g_values = torch.randint(0, 2, (batch, length, depth), generator=generator)
    mask = torch.rand(batch, length, generator=generator) > 0.25
    labels = torch.randint(0, 2, (batch,), generator=generator).float()
    return g_values, mask, labels


def assert_close(ours, theirs, what):
    torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("batch,length,depth", [(3, 12, 4), (1, 9, 4), (5, 40, 2), (2, 3, 3)])
def test_posterior_loss_and_gradients_match_transformers(batch, length, depth):
    ours, theirs = both_detectors(depth, seed=batch * length)
    g_values, mask, labels = random_inputs(batch, length, depth, seed=depth)
    (our_posterior,) = ours(g_values, mask)
    (their_posterior,) = theirs(g_values, mask)
    assert our_posterior.shape == (batch,)
    assert_close(our_posterior, their_posterior, "posterior")

    our_out = ours(g_values, mask, labels=labels, loss_batch_weight=0.3, return_dict=True)
    their_out = theirs(g_values, mask, labels=labels, loss_batch_weight=0.3, return_dict=True)
    assert_close(our_out.posterior_probabilities, their_out.posterior_probabilities, "posterior with labels")
    assert_close(our_out.loss, their_out.loss, "loss")
    our_out.loss.backward()
    their_out.loss.backward()
    for (name, ours_p), (their_name, theirs_p) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == their_name
        torch.testing.assert_close(ours_p.grad, theirs_p.grad, rtol=1e-5, atol=ATOL, msg=lambda m: f"{name}: {m}")


def test_training_steps_move_the_weights_as_in_transformers():
    """The loop of transformers' example script (Adam on ``detector(...)[1]``) from the same weights."""
    ours, theirs = both_detectors(seed=2)
    g_values, mask, labels = random_inputs(8, 10, DEPTH, seed=2)
    for model in (ours, theirs):
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for start in range(0, 8, 4):
            optimizer.zero_grad()
            loss = model(g_values=g_values[start:start + 4], mask=mask[start:start + 4],
                         labels=labels[start:start + 4], loss_batch_weight=0.5)[1]
            loss.backward()
            optimizer.step()
    for (name, mine), (their_name, reference) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == their_name
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert not torch.equal(ours.prior, seeded_weights(DEPTH, 2)["prior"])  # the steps did move it


def test_tuple_order_is_transformers():
    ours, theirs = both_detectors()
    g_values, mask, labels = random_inputs(2, 6, DEPTH, seed=1)
    our_tuple, their_tuple = ours(g_values, mask, labels=labels), theirs(g_values, mask, labels=labels)
    assert len(our_tuple) == len(their_tuple) == 2
    for mine, reference, what in zip(our_tuple, their_tuple, ("posterior", "loss")):
        assert mine.shape == reference.shape, what
        assert_close(mine, reference, what)


def test_rows_of_one_token_match_transformers_row_by_row():
    """Deliberate difference: transformers squeezes every singleton dimension of the latent logits, so a
    batch of one-token rows is scored against each other's g-values (and depth 1 fails outright);
    genplug scores every row alone, as transformers does for a batch of one."""
    ours, theirs = both_detectors(seed=3)
    g_values, mask, _ = random_inputs(4, 1, DEPTH, seed=3)
    mask[:] = True
    row_by_row = torch.cat([theirs(g_values[i:i + 1], mask[i:i + 1])[0] for i in range(4)])
    assert_close(ours(g_values, mask)[0], row_by_row, "posterior")


# ---------------------------------------------------------------------------------------------- end to end


def sample(model, ids, steps, processor=None):
    """Plain multinomial sampling, through ``processor`` when given (kept apart from generate() so that
    these tests exercise only the detector)."""
    with torch.no_grad():
        for _ in range(steps):
            scores = model(input_ids=ids).logits[:, -1].float()
            if processor is not None:
                scores = processor(ids, scores)
            ids = torch.cat([ids, torch.multinomial(torch.softmax(scores, dim=-1), 1)], dim=1)
    return ids


@pytest.fixture(scope="module")
def generated():
    """Rows 0-2 sampled with the SynthID watermark, rows 3-5 without, from the same tiny model."""
    model = tiny_model("llama")
    ids = prompt(3, 5, seed=4)
    torch.manual_seed(0)
    marked = sample(model, ids, 24, SynthIDTextWatermarkLogitsProcessor(device="cpu", **SETTINGS))
    plain = sample(model, ids, 24)
    return torch.cat([marked, plain])


def test_detector_matches_transformers_on_generated_text(generated):
    ids = generated.clone()
    ids[1, 10:12] = ids[1, 20:22]  # a repeated context
    tokenizer = types.SimpleNamespace(eos_token_id=int(ids[2, 14]), pad_token_id=0)  # an EOS inside row 2
    ours, theirs = both_detectors(seed=7)
    our_detector = genplug.SynthIDTextWatermarkDetector(
        ours, SynthIDTextWatermarkLogitsProcessor(device="cpu", **SETTINGS), tokenizer)
    their_detector = transformers.SynthIDTextWatermarkDetector(
        theirs, transformers.SynthIDTextWatermarkLogitsProcessor(device="cpu", **SETTINGS), tokenizer)
    (our_posterior,) = our_detector(ids)
    (their_posterior,) = their_detector(ids)
    assert our_posterior.shape == (6,)
    assert_close(our_posterior, their_posterior, "posterior")


def test_a_detector_that_expects_the_watermark_finds_it(generated):
    """With every layer's match taken to have two distinct tokens (beta large, delta 0), a watermarked
    g-value is 1 with probability 3/4: the watermarked rows must score above the plain ones, and the
    same holds with transformers' detector."""
    ours, theirs = both_detectors()
    with torch.no_grad():
        for model in (ours, theirs):
            model.likelihood_model_watermarked.beta.fill_(5.0)
            model.likelihood_model_watermarked.delta.zero_()
            model.prior.fill_(0.5)
    tokenizer = types.SimpleNamespace(eos_token_id=10**6, pad_token_id=0)  # no EOS in the rows
    (scores,) = genplug.SynthIDTextWatermarkDetector(
        ours, SynthIDTextWatermarkLogitsProcessor(device="cpu", **SETTINGS), tokenizer)(generated)
    (their_scores,) = transformers.SynthIDTextWatermarkDetector(
        theirs, transformers.SynthIDTextWatermarkLogitsProcessor(device="cpu", **SETTINGS), tokenizer)(generated)
    assert_close(scores, their_scores, "posterior")
    assert scores[:3].min() > 0.9 and scores[3:].max() < 0.1, scores


# ---------------------------------------------------------------------------------------------- checkpoints


def _same_detector(loaded, original, source):
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), f"{name} after loading a {source} checkpoint"
    assert loaded.config.watermarking_depth == original.config.watermarking_depth
    assert loaded.config.base_rate == original.config.base_rate
    assert loaded.config.model_name == "tiny/llama"
    assert loaded.config.watermarking_config == SETTINGS
    g_values, mask, _ = random_inputs(3, 10, DEPTH, seed=5)
    assert_close(loaded(g_values, mask)[0], original(g_values, mask)[0], f"posterior of a {source} checkpoint")


def test_a_genplug_checkpoint_loads_in_transformers(tmp_path):
    ours, _ = both_detectors(seed=11, base_rate=0.25)
    ours.config.set_detector_information("tiny/llama", dict(SETTINGS))
    ours.save_pretrained(tmp_path)
    _same_detector(transformers.BayesianDetectorModel.from_pretrained(tmp_path), ours, "genplug")


def test_a_transformers_checkpoint_loads_in_genplug(tmp_path):
    _, theirs = both_detectors(seed=12, base_rate=0.75)
    theirs.config.set_detector_information("tiny/llama", dict(SETTINGS))
    theirs.save_pretrained(tmp_path)
    loaded = genplug.BayesianDetectorModel.from_pretrained(tmp_path)
    _same_detector(loaded, theirs, "transformers")
    # and the recorded settings build genplug's processor, as transformers' docs build theirs
    genplug.SynthIDTextWatermarkDetector(
        loaded, SynthIDTextWatermarkLogitsProcessor(**loaded.config.watermarking_config, device="cpu"),
        types.SimpleNamespace(eos_token_id=0))
