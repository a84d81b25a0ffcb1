"""Greedy decoding that also reports the entropy of each step's distribution."""

import torch

import genplug


def entropy_greedy(model, input_ids, logits_processor, stopping_criteria, generation_config,
                   synced_gpus=False, streamer=None, **model_kwargs):
    """A decoding loop with the strategy signature; genplug has prepared everything it receives."""
    cache = model_kwargs.get("past_key_values")
    mask = model_kwargs.get("attention_mask")
    entropies = []
    step_input = input_ids
    for _ in range(generation_config.max_length - input_ids.shape[1]):
        out = model(input_ids=step_input, attention_mask=mask, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        scores = logits_processor(input_ids, out.logits[:, -1].float())
        probs = scores.softmax(-1)
        entropies.append(-(probs * probs.clamp_min(1e-12).log()).sum(-1))
        next_token = scores.argmax(-1, keepdim=True)
        input_ids = torch.cat([input_ids, next_token], -1)
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], -1)
        step_input = next_token
        if bool(stopping_criteria(input_ids, scores).all()):
            break
    return {"sequences": input_ids, "entropies": torch.stack(entropies, 1)}


def generate(model, inputs=None, **kwargs):
    return genplug.generate(model, inputs, custom_generate=entropy_greedy, **kwargs)
