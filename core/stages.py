"""The stages logits processors run in, in order.

The default order reproduces transformers' ``_get_logits_processor`` so that sampling with the same
seed draws the same tokens. Processors passed to ``generate(logits_processor=...)`` run in the
``user`` stage: after every built-in processor and before the warpers, as in transformers.
"""

STAGES = (
    "guidance",  # classifier-free guidance (turns scores into log-probs)
    "bias",  # sequence bias, beam diversity
    "penalty",  # repetition penalties, n-gram blocking, bad words
    "length",  # min length / min new tokens
    "constraint",  # prefix-allowed tokens, forced BOS/EOS, inf/nan removal, decay, suppression
    "user",  # logits processors passed by the caller
    "temperature",
    "truncation",  # top-h, top-k, top-p, min-p, typical, epsilon, eta
    "watermark",
    "normalize",  # renormalize_logits: always last
)

STAGE_RANK = {name: rank for rank, name in enumerate(STAGES)}
