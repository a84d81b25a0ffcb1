"""Top-nσ sampling as a genplug plugin: one config field, one logits warper."""

import genplug
from genplug.config.fields import ConfigField

__version__ = "0.2.0"


class TopNSigmaLogitsWarper(genplug.LogitsProcessor):
    """Keep the tokens whose logit is at least ``max - n * std`` of the row's logits.

    Scores already at -inf (masked by earlier processors) are left out of the statistics.
    """

    compile_safe = True
    argmax_invariant = True  # the best token is always kept

    def __init__(self, n: float, filter_value: float = -float("inf")):
        self.n = float(n)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        import torch

        finite = torch.isfinite(scores)
        count = finite.sum(-1, keepdim=True).clamp_min(1)
        values = torch.where(finite, scores, torch.zeros_like(scores))
        mean = values.sum(-1, keepdim=True) / count
        var = (torch.where(finite, scores - mean, torch.zeros_like(scores)) ** 2).sum(-1, keepdim=True) / count
        threshold = scores.max(-1, keepdim=True).values - self.n * var.sqrt()
        return scores.masked_fill(scores < threshold, self.filter_value)


def _check_n(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"must be a number > 0 (standard deviations below the best logit to keep), got {value!r}")


def build_top_n_sigma(config, context):
    n = getattr(config, "top_n_sigma", None)
    if not config.do_sample or n is None:
        return None
    return TopNSigmaLogitsWarper(n)


@genplug.hookimpl
def genplug_register_config_fields(register):
    register(ConfigField("top_n_sigma", default=None, validator=_check_n,
                         help="sampling keeps tokens within n standard deviations of the best logit"))


@genplug.hookimpl
def genplug_register_logits_processors(register):
    register("top_n_sigma", build_top_n_sigma, stage="truncation", after=("top_k",), fields=("top_n_sigma",),
             description="top-nσ truncation (sampling only)")
