"""Green-list watermarking gives transformers' tokens and scores (greedy and seeded sampling, both
seeding schemes, wider contexts, padded batches), and refuses settings transformers refuses."""

import pytest
import torch
import transformers

import genplug
from genplug.errors import GenerationConfigError
from genplug.plugins.processors.watermark import WatermarkLogitsProcessor
from parity_tools import assert_same, left_padded, run_both, tiny_model

SCORES = dict(return_dict_in_generate=True, output_scores=True)


@pytest.mark.parametrize("scheme", ["lefthash", "selfhash"])
@pytest.mark.parametrize("context_width", [1, 3])
@pytest.mark.parametrize("sampling", [False, True], ids=["greedy", "sampling"])
def test_watermarked_generation_matches_transformers(scheme, context_width, sampling):
    model = tiny_model("llama")
    ids, mask = left_padded()
    settings = dict(greenlist_ratio=0.3, bias=3.0, hashing_key=12345, seeding_scheme=scheme,
                    context_width=context_width)
    extra = dict(do_sample=True, top_k=30) if sampling else {}
    ours, theirs = run_both(model, seed=0 if sampling else None, input_ids=ids, attention_mask=mask,
                            max_new_tokens=8, pad_token_id=0, watermarking_config=settings, **extra, **SCORES)
    assert_same(ours, theirs, check=("scores",))
    plain = genplug.generate(model, ids, attention_mask=mask, max_new_tokens=8, pad_token_id=0)
    assert not torch.equal(ours.sequences, plain) or scheme == "selfhash"  # the bias changed the greedy choice


def test_the_transformers_config_object_is_taken():
    model = tiny_model("llama")
    ids, mask = left_padded()
    config = transformers.WatermarkingConfig(greenlist_ratio=0.5, bias=5.0)
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0,
                            watermarking_config=config)
    assert torch.equal(ours, theirs)


def test_the_green_list_is_transformers_green_list():
    theirs = transformers.WatermarkLogitsProcessor(vocab_size=500, device="cpu", greenlist_ratio=0.2,
                                                   seeding_scheme="selfhash", context_width=2)
    ours = WatermarkLogitsProcessor(500, "cpu", greenlist_ratio=0.2, seeding_scheme="selfhash", context_width=2)
    for context in ([5, 7], [499, 3, 1], [123456, 42]):
        context = torch.tensor(context)
        assert torch.equal(ours.greenlist(context), theirs._get_greenlist_ids(context))


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_a_ratio_with_no_red_or_no_green_token_is_refused(ratio):
    model = tiny_model("llama")
    with pytest.raises(GenerationConfigError, match="greenlist_ratio"):
        genplug.generate(model, left_padded()[0], max_new_tokens=2, watermarking_config={"greenlist_ratio": ratio})
    with pytest.raises(ValueError):
        transformers.WatermarkLogitsProcessor(vocab_size=10, device="cpu", greenlist_ratio=ratio)


@pytest.mark.parametrize("scheme", ["lefthash", "selfhash"])
@pytest.mark.parametrize("ignore_repeated_ngrams", [False, True])
def test_the_detector_gives_transformers_scores(scheme, ignore_repeated_ngrams):
    model = tiny_model("llama")
    ids, mask = left_padded(pads=(0, 0, 0))
    settings = dict(greenlist_ratio=0.25, bias=6.0, seeding_scheme=scheme, context_width=2)
    common = dict(attention_mask=mask, max_new_tokens=30, min_new_tokens=30, do_sample=True, top_k=0)
    marked = genplug.generate(model, ids, watermarking_config=settings, **common)
    plain = genplug.generate(model, ids, **common)
    texts = torch.cat((marked, plain))
    ours = genplug.WatermarkDetector(model.config, "cpu", settings, ignore_repeated_ngrams=ignore_repeated_ngrams)
    theirs = transformers.WatermarkDetector(model.config, "cpu", transformers.WatermarkingConfig(**settings),
                                            ignore_repeated_ngrams=ignore_repeated_ngrams)
    mine, reference = ours(texts, return_dict=True), theirs(texts, return_dict=True)
    for field in ("num_tokens_scored", "num_green_tokens", "green_fraction", "z_score", "p_value", "confidence"):
        torch.testing.assert_close(getattr(mine, field), torch.as_tensor(getattr(reference, field)), rtol=1e-12,
                                   atol=1e-12, msg=field)
    assert mine.prediction.tolist() == list(reference.prediction)
    assert mine.z_score[:3].min() > mine.z_score[3:].max()  # the marked texts score higher
    with pytest.raises(ValueError, match="BOS"):
        bos = model.config.bos_token_id
        ours(torch.tensor([[bos, 5, 6, 7], [4, 5, 6, 7]]))
