"""Prompts that are more than token ids: ``inputs_embeds`` (alone or with the ids) and multimodal inputs
(a tiny Llava: ``pixel_values`` turned into the embeddings of the prompt's image tokens).

Both go to the model with the prompt's forward only; later tokens find them in the cache. The cases
check tokens and scores against transformers' generate, and -- where transformers has no answer (no
cache) -- against genplug's cached run, which transformers checks.
"""

from __future__ import annotations

import functools

import pytest
import torch
import transformers

import genplug
from genplug import graph_loop
from genplug.errors import GenerationInputError

from parity_tools import assert_same, left_padded, run_both, tiny_model

IMAGE_TOKEN = 100


def _embedded(name: str, pads=(0, 3)):
    ids, mask = left_padded(batch=2, length=7, pads=pads)
    return ids, mask, tiny_model(name).get_input_embeddings()(ids).detach()


@pytest.mark.parametrize("name", ["llama", "gpt2", "qwen3"])
@pytest.mark.parametrize("mode", [dict(), dict(do_sample=True, top_k=20), dict(num_beams=3, num_return_sequences=2)])
def test_embeddings_alone(name, mode):
    """Only the new tokens come back; the mask covers the embedded positions (llama runs on the native twin)."""
    _, mask, embeds = _embedded(name)
    ours, theirs = run_both(tiny_model(name), seed=5, inputs_embeds=embeds, attention_mask=mask, max_new_tokens=6,
                            pad_token_id=0, return_dict_in_generate=True, output_scores=True, **mode)
    assert ours.sequences.shape[1] == 6
    assert_same(ours, theirs, check=("scores",))


def test_embeddings_with_their_ids_return_the_prompt_too():
    ids, mask, embeds = _embedded("llama")
    ours, theirs = run_both(tiny_model("llama"), input_ids=ids, inputs_embeds=embeds, attention_mask=mask,
                            max_new_tokens=5, pad_token_id=0, repetition_penalty=1.5)
    assert torch.equal(ours[:, :7], ids)
    assert_same(ours, theirs)


def test_whole_sequence_lengths_lose_the_embedded_positions():
    """max_length / min_length count the embedded prompt, as in transformers: 7 embedded + 5 new = 12."""
    _, _, embeds = _embedded("gpt2", pads=(0, 0))
    ours, theirs = run_both(tiny_model("gpt2"), inputs_embeds=embeds, max_length=12, min_length=11, eos_token_id=2,
                            pad_token_id=0)
    assert ours.shape[1] == 5
    assert_same(ours, theirs)


def test_without_a_cache_the_embeddings_are_recomputed_with_the_new_tokens():
    """transformers feeds only the new ids after the first step without a cache; genplug recomputes the
    prompt's embeddings and the new tokens' -- the cached run (checked against transformers above) is the oracle."""
    _, mask, embeds = _embedded("llama")
    model = tiny_model("llama")
    cached = genplug.generate(model, inputs_embeds=embeds, attention_mask=mask, max_new_tokens=6, pad_token_id=0)
    recomputed = genplug.generate(model, inputs_embeds=embeds, attention_mask=mask, max_new_tokens=6, pad_token_id=0,
                                  use_cache=False)
    assert torch.equal(cached, recomputed)


def test_the_static_graph_loop_is_left_for_embedded_prompts(monkeypatch):
    monkeypatch.setattr(graph_loop, "RUN_ON_CPU", True)
    _, mask, embeds = _embedded("llama")
    ours, theirs = run_both(tiny_model("llama"), inputs_embeds=embeds, attention_mask=mask, max_new_tokens=6,
                            pad_token_id=0, cache_implementation="static")
    assert_same(ours, theirs)


@pytest.mark.parametrize("bad, match", [
    (lambda e, ids: dict(inputs_embeds=e[0]), "shape \\(batch, length, hidden_size\\)"),
    (lambda e, ids: dict(inputs_embeds=e, input_ids=ids[:, 1:]), "different tokens"),
    (lambda e, ids: dict(inputs_embeds=e[:1], prompt_lookup_num_tokens=2), "input_ids, not inputs_embeds"),
    (lambda e, ids: dict(inputs_embeds=e, prefill_chunk_size=2), "in one piece"),
])
def test_bad_embedded_prompts_are_refused(bad, match):
    ids, _, embeds = _embedded("gpt2", pads=(0, 0))
    with pytest.raises(GenerationInputError, match=match):
        genplug.generate(tiny_model("gpt2"), max_new_tokens=3, pad_token_id=0, **bad(embeds, ids))


# ------------------------------------------------------------------------------------------ multimodal


@functools.lru_cache(maxsize=None)
def llava():
    torch.manual_seed(0)
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                           image_size=16, patch_size=8, projection_dim=32)
    text = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=128)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                                      vision_feature_layer=-1, vision_feature_select_strategy="default")
    return transformers.LlavaForConditionalGeneration(config).eval()


def _image_prompt():
    """Two rows: 4 image tokens (a 16x16 image in 8x8 patches) then text, the second row left-padded."""
    text = torch.randint(4, 90, (2, 5), generator=torch.Generator().manual_seed(1))
    ids = torch.cat([torch.zeros(2, 2, dtype=torch.long), torch.full((2, 4), IMAGE_TOKEN), text], dim=1)
    mask = torch.ones_like(ids)
    ids[0, :2] = torch.tensor([7, 8])  # row 0 unpadded
    mask[1, :2] = 0
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    return ids, mask, pixels


@pytest.mark.parametrize("mode", [dict(), dict(do_sample=True, top_k=20), dict(num_beams=2, num_return_sequences=2)])
def test_pixel_values_go_with_the_prompt_only(mode):
    ids, mask, pixels = _image_prompt()
    ours, theirs = run_both(llava(), seed=4, input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=6,
                            pad_token_id=0, return_dict_in_generate=True, output_scores=True, **mode)
    assert_same(ours, theirs, check=("scores",))


def test_the_image_changes_the_text():
    """The pixel values reach the model: another image gives other scores for the first new token."""
    ids, mask, pixels = _image_prompt()
    first = genplug.generate(llava(), ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=1,
                             return_dict_in_generate=True, output_scores=True, pad_token_id=0).scores[0]
    other = genplug.generate(llava(), ids, attention_mask=mask, pixel_values=-pixels, max_new_tokens=1,
                             return_dict_in_generate=True, output_scores=True, pad_token_id=0).scores[0]
    assert not torch.allclose(first, other)


def test_image_prompts_are_not_chunked():
    ids, mask, pixels = _image_prompt()
    with pytest.raises(GenerationInputError, match="in one piece"):
        genplug.generate(llava(), ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=2, pad_token_id=0,
                         prefill_chunk_size=4)


@functools.lru_cache(maxsize=None)
def qwen2_vl(version: str):
    """A tiny Qwen2-VL / Qwen2.5-VL: 3-D rotary positions (time, height, width) for image tokens."""
    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                vocab_size=160, rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 1e4})
    tokens = dict(image_token_id=150, video_token_id=151, vision_start_token_id=152)
    if version == "2":
        vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=4, patch_size=2, spatial_merge_size=1,
                      temporal_patch_size=1, in_channels=3)
        return transformers.Qwen2VLForConditionalGeneration(
            transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **tokens)).eval()
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=2, spatial_merge_size=1,
                  temporal_patch_size=1, in_channels=3, out_hidden_size=32, fullatt_block_indexes=[0], window_size=4)
    return transformers.Qwen2_5_VLForConditionalGeneration(
        transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)).eval()


@pytest.mark.parametrize("version", ["2", "2.5"])
@pytest.mark.parametrize("mode", [dict(), dict(do_sample=True, top_k=20), dict(num_beams=2, num_return_sequences=2)])
def test_vision_rotary_positions_and_grouped_pixels(version, mode):
    """The model's own 3-D prompt positions, continued one per new token; pixel patches (not one row per
    sample) encoded before the prefill and repeated per sample for beams -- as transformers' generate does."""
    grid = torch.tensor([[1, 2, 2], [1, 4, 2]])  # two images of 4 and 8 patches
    pixels = torch.randn(int(grid.prod(-1).sum()), 12, generator=torch.Generator().manual_seed(3))
    text = torch.randint(4, 140, (2, 5), generator=torch.Generator().manual_seed(1))
    first = torch.cat([torch.tensor([7, 8, 9, 10, 152]), torch.full((4,), 150), text[0]])
    second = torch.cat([torch.tensor([152]), torch.full((8,), 150), text[1]])
    ids = torch.stack([first, second])
    mask = torch.ones_like(ids)
    ours, theirs = run_both(qwen2_vl(version), seed=4, input_ids=ids, attention_mask=mask, pixel_values=pixels,
                            image_grid_thw=grid, mm_token_type_ids=(ids == 150).long(), max_new_tokens=6,
                            pad_token_id=0, return_dict_in_generate=True, output_scores=True, **mode)
    assert_same(ours, theirs, check=("scores",))


def test_position_ids_given_with_the_prompt_are_continued():
    """transformers takes the caller's positions for the prompt and adds one per new token; so does genplug
    (and leaves the CUDA-graph loop, whose positions follow the mask)."""
    ids, mask = left_padded(batch=2, length=7, pads=(0, 0))
    positions = torch.tensor([0, 1, 2, 3, 20, 21, 22]).expand(2, -1)  # a gap: rotary positions are relative
    ours, theirs = run_both(tiny_model("llama"), input_ids=ids, position_ids=positions, max_new_tokens=5,
                            return_dict_in_generate=True, output_scores=True)
    assert_same(ours, theirs, check=("scores",))
    plain = genplug.generate(tiny_model("llama"), ids, max_new_tokens=5, return_dict_in_generate=True,
                             output_scores=True)
    assert not torch.allclose(plain.scores[0], ours.scores[0])


@pytest.mark.parametrize("name", ["t5", "bart"])
@pytest.mark.parametrize("mode", [dict(), dict(do_sample=True, top_k=20), dict(num_beams=2)])
def test_encoder_inputs_as_embeddings(name, mode):
    """An encoder-decoder model's encoder takes the embeddings; the decoder starts from its start token."""
    ids, mask = left_padded(batch=2, length=7, pads=(0, 2))
    embeds = tiny_model(name).get_input_embeddings()(ids).detach()
    ours, theirs = run_both(tiny_model(name), seed=6, inputs_embeds=embeds, attention_mask=mask, max_new_tokens=5,
                            return_dict_in_generate=True, output_scores=True, **mode)
    assert_same(ours, theirs, check=("scores",))


@functools.lru_cache(maxsize=None)
def gemma_vision(kind: str):
    """A tiny Gemma 3 VLM or PaliGemma (SigLIP vision tower); both read token_type_ids (images attend
    bidirectionally) and build their own masks for static caches."""
    torch.manual_seed(0)
    siglip = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=4, image_size=16, patch_size=4).to_dict()
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, head_dim=8,
                vocab_size=300)
    if kind == "gemma3":
        config = transformers.Gemma3Config(text_config=dict(text, num_key_value_heads=2, sliding_window=8),
                                           vision_config=siglip, mm_tokens_per_image=4, image_token_index=290,
                                           boi_token_index=291, eoi_token_index=292)
        return transformers.Gemma3ForConditionalGeneration(config).eval()
    config = transformers.PaliGemmaConfig(text_config=dict(text, num_key_value_heads=1),
                                          vision_config=dict(siglip, projection_dim=32), image_token_index=290,
                                          projection_dim=32)
    return transformers.PaliGemmaForConditionalGeneration(config).eval()


@pytest.mark.parametrize("kind", ["gemma3", "paligemma"])
@pytest.mark.parametrize("mode", [dict(), dict(num_beams=2), dict(cache_implementation="static")])
def test_token_type_ids_follow_the_tokens(kind, mode):
    text = torch.randint(4, 280, (2, 5), generator=torch.Generator().manual_seed(1))
    if kind == "gemma3":  # <boi> 4 image tokens <eoi> text, the second row left-padded
        ids = torch.cat([torch.tensor([[2, 7], [0, 2]]), torch.full((2, 1), 291), torch.full((2, 4), 290),
                         torch.full((2, 1), 292), text], dim=1)
        mask = torch.ones_like(ids)
        mask[1, 0] = 0
    else:  # 16 image tokens, then the prefix
        ids = torch.cat([torch.full((2, 16), 290), torch.tensor([[2, 7], [2, 8]]), text], dim=1)
        mask = torch.ones_like(ids)
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    ours, theirs = run_both(gemma_vision(kind), input_ids=ids, attention_mask=mask, pixel_values=pixels,
                            token_type_ids=(ids == 290).long(), max_new_tokens=6, min_new_tokens=6,
                            return_dict_in_generate=True, output_scores=True, **mode)
    assert_same(ours, theirs, check=() if "num_beams" in mode else ("scores",))
