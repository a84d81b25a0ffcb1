"""Eta sampling: drop tokens below a cutoff that shrinks as the distribution's entropy grows."""

from __future__ import annotations

import torch

from genplug import hookimpl

from . import enabling
from .chaining import in_place_capable
from .epsilon import kth_highest
from .masking import NEG_INF, MaskingProcessor
from .validation import min_tokens_to_keep as check_min_tokens, number_in


def entropy(scores: torch.FloatTensor) -> torch.FloatTensor:
    """(batch, 1) entropy of softmax(scores), computed as torch.distributions.Categorical does.

    Written out because Categorical's argument validation reads its tensors on the host every step.
    """
    log_probs = scores - scores.logsumexp(dim=-1, keepdim=True)
    probs = torch.softmax(log_probs, dim=-1)
    log_probs = log_probs.clamp(min=torch.finfo(log_probs.dtype).min)  # 0 * -inf would be nan
    return -(log_probs * probs).sum(-1, keepdim=True)


@in_place_capable
class EtaLogitsWarper(MaskingProcessor):
    """Eta sampling (Hewitt et al., 2022): cutoff ``min(eps, sqrt(eps) * exp(-entropy))``; keeps the maximum."""

    history_use = "none"  # see genplug.processing.LogitsProcessor.history_use

    argmax_invariant = True

    def __init__(self, epsilon: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1,
                 device: str = "cpu"):
        epsilon = number_in("eta_cutoff", epsilon, 0.0, 1.0, low_open=True, high_open=True,
                            meaning="the base cutoff of eta sampling",
                            fix="use a value in (0, 1) such as 3e-4, or 0.0 in the config to disable it")
        self.epsilon = torch.tensor(epsilon, device=device)
        # Host floats holding the float32 values transformers computes with: used as scalars, they need
        # no copy to the scores' device.
        as_float32 = torch.tensor(epsilon, dtype=torch.float32)
        self._cutoff, self._sqrt_cutoff = float(as_float32), float(torch.sqrt(as_float32))
        self.min_tokens_to_keep = check_min_tokens(min_tokens_to_keep)
        self.filter_value = filter_value

    def removal_mask(self, input_ids, scores):
        eta = (self._sqrt_cutoff * torch.exp(-entropy(scores))).clamp(max=self._cutoff)
        too_unlikely = scores.softmax(dim=-1) < eta
        return too_unlikely & (scores < kth_highest(scores, self.min_tokens_to_keep))


def build(config, context):
    eta = getattr(config, "eta_cutoff", None)
    if not enabling.sampling(config) or eta is None or not 0.0 < eta < 1.0:
        return None
    return EtaLogitsWarper(eta, min_tokens_to_keep=enabling.warper_min_tokens_to_keep(config, context),
                           device=context.device)


@hookimpl
def genplug_register_logits_processors(register):
    register("eta_cutoff", build, stage="truncation", after=enabling.after(enabling.TRUNCATION_ORDER, "eta_cutoff"),
             fields=("eta_cutoff", "do_sample", "num_beams"),
             description="drops tokens below an entropy-dependent cutoff (sampling only)")
