"""``GenerationMixin``: gives a model class ``.generate()`` and ``.compute_transition_scores()``.

Mix it into any model that follows the model protocol -- genplug's native models, a custom module,
or a transformers model class, whose own ``generate`` it then replaces.
"""

from __future__ import annotations

import torch


class GenerationMixin:
    """Adds genplug's ``generate`` and ``compute_transition_scores`` as methods."""

    @torch.no_grad()
    def generate(self, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                 prefix_allowed_tokens_fn=None, synced_gpus=None, assistant_model=None, streamer=None,
                 negative_prompt_ids=None, negative_prompt_attention_mask=None, custom_generate=None, **kwargs):
        """See :func:`genplug.generate`; ``self`` is the model."""
        from .generation import generate

        return generate(self, inputs, generation_config, logits_processor, stopping_criteria,
                        prefix_allowed_tokens_fn, synced_gpus, assistant_model, streamer, negative_prompt_ids,
                        negative_prompt_attention_mask, custom_generate, **kwargs)

    def compute_transition_scores(self, sequences, scores, beam_indices=None, normalize_logits=False):
        """See :func:`genplug.compute_transition_scores`; the vocabulary size comes from the model config."""
        from .transition_scores import compute_transition_scores

        config = getattr(self, "config", None)
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        vocab = getattr(text_config, "vocab_size", None)
        return compute_transition_scores(sequences, scores, beam_indices, normalize_logits, vocab_size=vocab)
