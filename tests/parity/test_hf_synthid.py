"""SynthID-Text watermarking gives transformers' tokens and scores, and its detector-side helpers
(g-values, repeated-context mask, EOS mask) transformers' values."""

import pytest
import torch
import transformers

import genplug
from genplug.plugins.processors.synthid import SynthIDTextWatermarkLogitsProcessor
from parity_tools import assert_same, left_padded, run_both, tiny_model

SETTINGS = dict(ngram_len=3, keys=[654, 400, 836, 123], sampling_table_size=2**10, sampling_table_seed=7,
                context_history_size=16)


@pytest.mark.parametrize("extra", [dict(), dict(skip_first_ngram_calls=True), dict(debug_mode=True),
                                   dict(ngram_len=1)], ids=["default", "skip first", "debug", "unigram"])
def test_watermarked_sampling_matches_transformers(extra):
    model = tiny_model("llama")
    ids, mask = left_padded()
    ours, theirs = run_both(model, seed=0, input_ids=ids, attention_mask=mask, max_new_tokens=12, pad_token_id=0,
                            do_sample=True, top_k=40,
                            watermarking_config=transformers.SynthIDTextWatermarkingConfig(**{**SETTINGS, **extra}),
                            return_dict_in_generate=True, output_scores=True)
    assert_same(ours, theirs, check=("scores",))


def test_the_watermark_changes_what_is_sampled():
    model = tiny_model("llama")
    ids, mask = left_padded()
    common = dict(attention_mask=mask, max_new_tokens=12, pad_token_id=0, do_sample=True)
    torch.manual_seed(0)
    marked = genplug.generate(model, ids, watermarking_config=SETTINGS, **common)
    torch.manual_seed(0)
    plain = genplug.generate(model, ids, **common)
    assert not torch.equal(marked, plain)


def test_detector_helpers_match_transformers():
    ours = SynthIDTextWatermarkLogitsProcessor(device="cpu", **SETTINGS)
    theirs = transformers.SynthIDTextWatermarkLogitsProcessor(device="cpu", **SETTINGS)
    ids = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(1))
    ids[1, 5:9] = ids[1, 10:14]  # a repeated context
    ids[2, 12] = 7  # an EOS in the middle of a row
    assert torch.equal(ours.compute_g_values(ids), theirs.compute_g_values(ids))
    assert torch.equal(ours.compute_context_repetition_mask(ids), theirs.compute_context_repetition_mask(ids))
    assert torch.equal(ours.compute_eos_token_mask(ids, 7), theirs.compute_eos_token_mask(ids, 7))
    assert ours.expected_mean_g_value(128) == theirs.expected_mean_g_value(128)
    assert not ours.compute_context_repetition_mask(ids)[1].all()  # the repeat is found
