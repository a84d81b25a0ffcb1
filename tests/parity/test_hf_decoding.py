"""Greedy search and sampling on decoder-only transformers models: genplug == transformers' generate."""

import pytest
import torch

import genplug

from parity_tools import DECODER_ONLY, assert_same, left_padded, prompt, run_both, tiny_model, token_generated_at


@pytest.mark.parametrize("name", DECODER_ONLY)
def test_greedy(name):
    model = tiny_model(name)
    ours, theirs = run_both(model, input_ids=prompt(), max_new_tokens=10, do_sample=False)
    assert_same(ours, theirs)


@pytest.mark.parametrize("name", DECODER_ONLY)
def test_sampling_with_a_seed(name):
    model = tiny_model(name)
    for seed in (0, 1):
        ours, theirs = run_both(model, seed=seed, input_ids=prompt(seed=seed), max_new_tokens=10, do_sample=True)
        assert_same(ours, theirs)


@pytest.mark.parametrize("name", ["llama", "gpt2", "gemma2", "mistral"])
def test_left_padded_batch_stops_each_row_at_its_eos(name):
    model = tiny_model(name)
    ids, mask = left_padded()
    eos = token_generated_at(model, ids, step=2, row=1, attention_mask=mask)  # row 1 stops early, others later
    ours, theirs = run_both(model, input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                            eos_token_id=eos, pad_token_id=0, return_dict_in_generate=True, output_scores=True)
    assert_same(ours, theirs)
    assert (ours.sequences[1, ids.shape[1]:] == eos).any(), "the case must make a row stop"


def test_left_padded_sampling_with_eos():
    model = tiny_model("llama")
    ids, mask = left_padded(batch=3, pads=(3, 0, 1))
    for seed in range(3):
        ours, theirs = run_both(model, seed=seed, input_ids=ids, attention_mask=mask, max_new_tokens=12,
                                do_sample=True, top_k=0, eos_token_id=[5, 9, 17, 33], pad_token_id=0)
        assert_same(ours, theirs)


def test_several_eos_ids_and_pad_defaulting_to_the_first():
    model = tiny_model("qwen2")
    ids = prompt(batch=3, seed=4)
    first = token_generated_at(model, ids, step=1, row=0)
    second = token_generated_at(model, ids, step=3, row=2)
    # no pad_token_id: both libraries pad finished rows with eos_token_id[0]
    ours, theirs = run_both(model, input_ids=ids, max_new_tokens=8, do_sample=False, eos_token_id=[second, first])
    assert_same(ours, theirs)


def test_num_return_sequences():
    model = tiny_model("llama")
    ids, mask = left_padded(batch=2, pads=(2, 0))
    ours, theirs = run_both(model, seed=3, input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=True,
                            num_return_sequences=3, return_dict_in_generate=True, output_scores=True)
    assert ours.sequences.shape[0] == 6
    assert_same(ours, theirs)


def test_num_return_sequences_with_greedy_search_is_refused_by_both():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(prompt(), max_new_tokens=3, num_return_sequences=2)
    with pytest.raises(ValueError, match="num_return_sequences"):
        genplug.generate(model, prompt(), max_new_tokens=3, num_return_sequences=2)


def test_prompt_length_one_and_no_prompt():
    model = tiny_model("gpt2")
    ours, theirs = run_both(model, input_ids=torch.tensor([[7]]), max_new_tokens=5, do_sample=False)
    assert_same(ours, theirs)
    # no input at all: both start from bos_token_id
    ours, theirs = run_both(model, max_new_tokens=5, do_sample=False, bos_token_id=1)
    assert_same(ours, theirs)


# ------------------------------------------------------------------------------------------- lengths


def test_max_new_tokens_and_max_length():
    model = tiny_model("llama")
    ids = prompt()
    for kwargs in ({"max_new_tokens": 3}, {"max_length": 9}, {"max_length": 9, "max_new_tokens": 4}, {}):
        ours, theirs = run_both(model, input_ids=ids, do_sample=False, **kwargs)
        assert_same(ours, theirs)


def test_default_max_length_is_capped_by_max_position_embeddings():
    model = tiny_model("gpt2")  # n_positions=64: 20 new tokens after a 50-token prompt would pass it
    ids = prompt(batch=1, length=50)
    ours, theirs = run_both(model, input_ids=ids, do_sample=False)
    assert_same(ours, theirs)


@pytest.mark.parametrize("field", ["min_new_tokens", "min_length"])
def test_min_lengths_hold_back_eos(field):
    model = tiny_model("llama")
    ids = prompt(batch=2)
    eos = token_generated_at(model, ids, step=1, row=0)
    value = 6 if field == "min_new_tokens" else ids.shape[1] + 6
    ours, theirs = run_both(model, input_ids=ids, max_new_tokens=10, do_sample=False, eos_token_id=eos, pad_token_id=0,
                            return_dict_in_generate=True, output_scores=True, **{field: value})
    assert_same(ours, theirs)
    assert not (ours.sequences[:, ids.shape[1]:ids.shape[1] + 6] == eos).any()


def test_min_new_tokens_with_sampling():
    model = tiny_model("gpt_neox")
    ids = prompt(batch=3)
    ours, theirs = run_both(model, seed=11, input_ids=ids, max_new_tokens=12, min_new_tokens=5, do_sample=True,
                            top_k=8, eos_token_id=[10, 20, 30, 40, 50, 60], pad_token_id=0)
    assert_same(ours, theirs)


# ----------------------------------------------------------------------------------- model defaults


def test_the_models_generation_config_supplies_the_defaults():
    model = tiny_model("gpt_neox")
    ids = prompt(batch=2, seed=9)
    saved = model.generation_config
    model.generation_config = transformers_generation_config(
        do_sample=True, top_k=5, temperature=0.7, max_new_tokens=7, eos_token_id=12, pad_token_id=0,
        repetition_penalty=1.5,
    )
    try:
        ours, theirs = run_both(model, seed=5, input_ids=ids)
        assert_same(ours, theirs)
        # a call argument beats the model's default
        ours, theirs = run_both(model, seed=5, input_ids=ids, do_sample=False, max_new_tokens=4)
        assert_same(ours, theirs)
    finally:
        model.generation_config = saved


def transformers_generation_config(**fields):
    import transformers

    return transformers.GenerationConfig(**fields)


@pytest.mark.parametrize("options", [dict(), dict(do_sample=True, top_k=10), dict(num_beams=3)],
                         ids=["greedy", "sampling", "beam search"])
@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_chunked_prefill_matches_transformers(options, chunk):
    """prefill_chunk_size feeds the prompt through the cache in pieces: same tokens and scores."""
    model = tiny_model("llama_sdpa")
    ids = prompt(batch=1, length=11)
    ours, theirs = run_both(model, seed=0, input_ids=ids, max_new_tokens=6, prefill_chunk_size=chunk,
                            return_dict_in_generate=True, output_scores=True, **options)
    check = ("scores", "sequences_scores") if options.get("num_beams") else ("scores",)
    assert_same(ours, theirs, check=check)
    plain = genplug.generate(model, ids, max_new_tokens=6, **({} if options.get("do_sample") else options))
    if not options.get("do_sample"):
        assert torch.equal(ours.sequences, plain)


def test_chunked_prefill_feeds_the_prompt_in_pieces():
    import copy

    model = copy.deepcopy(tiny_model("llama_sdpa"))  # a hook keeps the shared model's twin off
    fed = []
    model.register_forward_pre_hook(lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape[1]),
                                    with_kwargs=True)
    genplug.generate(model, prompt(batch=1, length=11), max_new_tokens=3, prefill_chunk_size=5)
    assert fed == [5, 5, 1, 1, 1]
