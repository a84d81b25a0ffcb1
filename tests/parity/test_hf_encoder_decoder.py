"""Encoder-decoder transformers models (T5, BART): the encoder runs once, the decoder starts from
``decoder_start_token_id``, cross-attention goes through transformers' ``EncoderDecoderCache``."""

import pytest
import torch

import genplug
from genplug.plugin_manager import get_plugin_manager
from parity_tools import (ENCODER_DECODER, assert_nested_close, assert_same, left_padded, prompt, run_both, tiny_model,
                          token_generated_at)

SCORES = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)


def _padded(name):
    # T5 pads with 0 on the right of the encoder input as its tokenizer does; BART with 1
    pad = tiny_model(name).config.pad_token_id
    ids, mask = left_padded(batch=3, length=7, pads=(0, 0, 0), pad_id=pad)
    ids[1, -2:], mask[1, -2:] = pad, 0
    ids[2, -4:], mask[2, -4:] = pad, 0
    return ids, mask


@pytest.mark.parametrize("name", ENCODER_DECODER)
def test_greedy_with_scores(name):
    ids, mask = _padded(name)
    ours, theirs = run_both(tiny_model(name), input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                            **SCORES)
    assert_same(ours, theirs)
    assert isinstance(ours, genplug.GenerateEncoderDecoderOutput)


@pytest.mark.parametrize("name", ENCODER_DECODER)
def test_sampling_with_a_seed(name):
    ids, mask = _padded(name)
    for seed in (0, 1):
        ours, theirs = run_both(tiny_model(name), seed=seed, input_ids=ids, attention_mask=mask, max_new_tokens=8,
                                do_sample=True, temperature=0.8, top_p=0.9, **SCORES)
        assert_same(ours, theirs)


@pytest.mark.parametrize("name", ENCODER_DECODER)
def test_eos_per_row_and_num_return_sequences(name):
    model = tiny_model(name)
    ids, mask = _padded(name)
    eos = [10, 20, 30, 40, 50, 60, 70, 80]
    ours, theirs = run_both(model, seed=2, input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=True,
                            num_return_sequences=2, eos_token_id=eos, **SCORES)
    assert_same(ours, theirs)


@pytest.mark.parametrize("name", ENCODER_DECODER)
def test_model_defaults_apply(name):
    # BART's generation config sets forced_eos_token_id and decoder_start_token_id=eos; T5 starts from pad
    ids = prompt(batch=2, seed=3)
    ours, theirs = run_both(tiny_model(name), input_ids=ids, max_new_tokens=6)
    assert_same(ours, theirs)


def test_decoder_input_ids_continue_a_given_decoder_prompt():
    model = tiny_model("t5")
    ids = prompt(batch=2, seed=5)
    decoder_ids = torch.tensor([[0, 17, 18], [0, 19, 20]])
    ours, theirs = run_both(model, input_ids=ids, decoder_input_ids=decoder_ids, max_new_tokens=5, do_sample=False)
    assert_same(ours, theirs)
    # without the start token both prepend it
    ours, theirs = run_both(model, input_ids=ids, decoder_input_ids=decoder_ids[:, 1:], max_new_tokens=5, do_sample=False)
    assert_same(ours, theirs)


def test_precomputed_encoder_outputs():
    model = tiny_model("bart")
    ids, mask = _padded("bart")
    encoder_outputs = model.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True)
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, encoder_outputs=encoder_outputs,
                            max_new_tokens=6, do_sample=False)
    assert_same(ours, theirs)


def test_encoder_processors():
    model = tiny_model("t5")
    ids, mask = _padded("t5")
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                            encoder_repetition_penalty=1.6, encoder_no_repeat_ngram_size=2, repetition_penalty=1.2,
                            **SCORES)
    assert_same(ours, theirs)


@pytest.mark.parametrize("name", ENCODER_DECODER)
def test_attentions_and_hidden_states(name):
    ids, mask = _padded(name)
    ours, theirs = run_both(tiny_model(name), input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False,
                            return_dict_in_generate=True, output_attentions=True, output_hidden_states=True)
    assert_same(ours, theirs)
    for field in ("encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
                  "decoder_hidden_states"):
        assert getattr(theirs, field) is not None, field
        assert_nested_close(getattr(ours, field), getattr(theirs, field), field)


@pytest.mark.parametrize("name", ENCODER_DECODER)
def test_caches(name):
    import transformers

    model = tiny_model(name)
    ids, mask = _padded(name)
    # rows stop early on one of many EOS ids, so genplug's loop runs past the stop and crops the cache
    eos = [token_generated_at(model, ids, step=2, row=row, attention_mask=mask) for row in range(3)]
    stop = dict(max_new_tokens=9, do_sample=False, eos_token_id=eos)
    reference = model.generate(input_ids=ids, attention_mask=mask, **stop)
    assert reference.shape[1] < 10
    backends = [{"cache_implementation": name} for name in ("dynamic", "static", "offloaded", "offloaded_static",
                                                             "quantized", "hybrid")
                if name in get_plugin_manager().registries.cache_backends]
    for kwargs in (*backends, {"use_cache": False},
                   {"past_key_values": transformers.EncoderDecoderCache(transformers.DynamicCache(),
                                                                        transformers.DynamicCache())}):
        ours = genplug.generate(model, input_ids=ids, attention_mask=mask, **stop, **kwargs)
        assert_same(ours, reference)
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, cache_implementation="static", **stop)
    assert_same(ours, theirs)


def test_returned_cache_is_a_transformers_encoder_decoder_cache_that_continues_generation():
    import transformers

    model = tiny_model("t5")
    ids = prompt(batch=1, seed=8)
    out = genplug.generate(model, input_ids=ids, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    assert isinstance(out.past_key_values, transformers.EncoderDecoderCache)
    assert out.past_key_values.get_seq_length() == out.sequences.shape[1] - 1
