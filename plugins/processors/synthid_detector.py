"""Detecting the SynthID-Text watermark: the Bayesian detector of Dathathri et al. (Nature, 2024).

A token's g-values (one bit per tournament layer, see :mod:`.synthid`) are fair coin flips in text the
watermark did not touch. In watermarked text a layer's bit is 1 more often, by how much depending on
whether the layer's match had two different candidate tokens; the detector learns that probability per
layer, as a logistic function of the bits of the layers before it. With the likelihoods of both
hypotheses, Bayes' rule over every scored token and layer gives P(watermarked | g-values).

The classes keep transformers' names, parameter names and checkpoint layout (``config.json`` plus
``model.safetensors``), so a detector trained with transformers' SynthID example script loads here and
one saved here loads in transformers. A Hub repository id is downloaded (``genplug.hub``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from .validation import is_int, is_number

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Clamps transformers applies, kept so that trained checkpoints score the same in both libraries.
PRIOR_MARGIN = 1e-5
LOSS_MARGIN = 1e-5


class BayesianDetectorConfig:
    """Settings of a :class:`BayesianDetectorModel` and what it was trained for.

    ``watermarking_depth`` is the number of tournament layers (the number of watermarking keys);
    ``base_rate`` the prior probability that a text is watermarked. ``model_name`` and
    ``watermarking_config`` (the processor's keyword arguments: ngram_len, keys, ...) record which model
    and keys the detector was trained on; they travel in ``config.json``. Other keys found in a
    ``config.json`` are kept and written back.
    """

    def __init__(self, watermarking_depth: Optional[int] = None, base_rate: float = 0.5, **kwargs: Any):
        self.watermarking_depth = watermarking_depth
        self.base_rate = base_rate
        self.model_name = kwargs.pop("model_name", None)
        self.watermarking_config = kwargs.pop("watermarking_config", None)
        self.extra: Dict[str, Any] = kwargs

    def set_detector_information(self, model_name: Optional[str], watermarking_config: Any) -> None:
        self.model_name = model_name
        self.watermarking_config = watermarking_config

    def validate(self) -> None:
        depth = self.watermarking_depth
        if not is_int(depth) or depth < 1:
            raise ValueError(
                f"watermarking_depth={depth!r} is not a positive int: it is the number of tournament layers, "
                "i.e. the number of keys of the SynthID-Text watermarking config; set it to len(keys)")
        rate = self.base_rate
        if not is_number(rate) or not 0 <= rate <= 1:
            raise ValueError(
                f"base_rate={rate!r} is not a probability in [0, 1]: it is the prior P(watermarked); "
                "use 0.5 when watermarked and plain texts are equally likely")

    def to_dict(self) -> Dict[str, Any]:
        settings = self.watermarking_config
        if settings is not None and not isinstance(settings, dict) and callable(getattr(settings, "to_dict", None)):
            settings = settings.to_dict()  # a SynthIDTextWatermarkingConfig object, ours or transformers'
        return {**self.extra, "watermarking_depth": self.watermarking_depth, "base_rate": self.base_rate,
                "model_name": self.model_name, "watermarking_config": settings}

    @classmethod
    def from_dict(cls, config_dict: Dict[str, Any]) -> "BayesianDetectorConfig":
        return cls(**config_dict)

    def to_json_file(self, json_file_path: Union[str, os.PathLike]) -> None:
        with open(json_file_path, "w", encoding="utf-8") as writer:
            writer.write(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, json_file_path: Union[str, os.PathLike]) -> "BayesianDetectorConfig":
        try:
            with open(json_file_path, encoding="utf-8") as reader:
                values = json.load(reader)
        except ValueError as error:
            raise ValueError(f"{json_file_path} is not valid JSON ({error}); copy the detector's config.json "
                             "again from where it was saved") from None
        if not isinstance(values, dict):
            raise ValueError(f"{json_file_path} holds a {type(values).__name__}, not the JSON object of a "
                             "BayesianDetectorConfig")
        return cls.from_dict(values)

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> None:
        os.makedirs(save_directory, exist_ok=True)
        self.to_json_file(os.path.join(save_directory, CONFIG_FILE))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike]) -> "BayesianDetectorConfig":
        return cls.from_json_file(os.path.join(_local_directory(pretrained_model_name_or_path), CONFIG_FILE))

    def __repr__(self) -> str:
        return f"{type(self).__name__} {json.dumps(self.to_dict(), sort_keys=True)}"


@dataclasses.dataclass
class BayesianWatermarkDetectorModelOutput:
    """``loss`` (a scalar, only when labels were given) and ``posterior_probabilities`` (batch,)."""

    loss: Optional[torch.Tensor] = None
    posterior_probabilities: Optional[torch.Tensor] = None


class BayesianDetectorWatermarkedLikelihood(nn.Module):
    """P(g-values | watermarked) for binary g-values, one value per token and layer.

    A layer's tournament match either had two different candidate tokens -- then the winner's bit is 1
    with probability 3/4 -- or one token twice, and the bit is a fair coin. The probability of "two
    different tokens" at layer k is ``sigmoid(beta[k] + sum over l < k of delta[k, l] * g[l])``: only
    the layers before k feed it, so the likelihood factorises layer by layer.
    """

    def __init__(self, watermarking_depth: int):
        super().__init__()
        self.watermarking_depth = watermarking_depth
        # transformers' shapes and initialisation; the leading ones are part of the checkpoint layout
        self.beta = nn.Parameter(-2.5 + 0.001 * torch.randn(1, 1, watermarking_depth))
        self.delta = nn.Parameter(0.001 * torch.randn(1, 1, watermarking_depth, watermarking_depth))

    def two_distinct_tokens_probability(self, g_values: torch.Tensor) -> torch.Tensor:
        """``[batch, length, depth]``: the probability that layer k's match had two different tokens."""
        earlier_layers_only = torch.tril(self.delta[0, 0], diagonal=-1)
        logits = g_values.to(self.delta.dtype) @ earlier_layers_only.T + self.beta
        return torch.sigmoid(logits)

    def forward(self, g_values: torch.Tensor) -> torch.Tensor:
        """P(g | watermarked) per token and layer, ``[batch, length, depth]``."""
        two_distinct = self.two_distinct_tokens_probability(g_values)
        # two distinct tokens: P(g) = (g + 1/2) / 2, i.e. 3/4 for a 1 and 1/4 for a 0; one token: 1/2
        return 0.5 * ((g_values + 0.5) * two_distinct + (1 - two_distinct))


class BayesianDetectorModel(nn.Module):
    """P(watermarked | g-values, mask) by Bayes' rule, with the learned watermarked likelihood.

    ``forward(g_values, mask, labels=None, loss_batch_weight=1, return_dict=False)`` takes g-values
    ``[batch, length, depth]`` (0 or 1) and a mask ``[batch, length]`` of the tokens to score. It returns
    ``(posterior,)``, or ``(posterior, loss)`` when ``labels`` (batch,) of 1 (watermarked) / 0 are given,
    or with ``return_dict`` a :class:`BayesianWatermarkDetectorModelOutput` -- as transformers' model
    does. The loss is the binary cross-entropy of the posterior plus ``loss_batch_weight`` times the
    squared norm of ``delta`` (the L2 penalty of transformers' training script).
    """

    def __init__(self, config: BayesianDetectorConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.watermarking_depth = int(config.watermarking_depth)
        self.base_rate = config.base_rate
        self.likelihood_model_watermarked = BayesianDetectorWatermarkedLikelihood(self.watermarking_depth)
        # a parameter, as in transformers, so that training may move the prior and checkpoints carry it
        self.prior = nn.Parameter(torch.tensor([float(self.base_rate)]))

    def _posterior(self, g_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        likelihood_watermarked = self.likelihood_model_watermarked(g_values)
        # Unwatermarked g-values are fair coins: P(g | not watermarked) = 1/2. For binary g the watermarked
        # likelihood is at least 1/4, so the logarithm needs no guard.
        log_odds = torch.log(likelihood_watermarked) - math.log(0.5)
        evidence = (log_odds * mask[..., None]).sum(dim=(1, 2))
        prior = torch.clamp(self.prior, min=PRIOR_MARGIN, max=1 - PRIOR_MARGIN)
        return torch.sigmoid(torch.log(prior) - torch.log(1 - prior) + evidence)

    def forward(self, g_values: torch.Tensor, mask: torch.Tensor, labels: Optional[torch.Tensor] = None,
                loss_batch_weight: float = 1, return_dict: bool = False):
        self._check_inputs(g_values, mask, labels)
        posterior = self._posterior(g_values, mask)
        loss = None
        if labels is not None:
            clamped = torch.clamp(posterior, LOSS_MARGIN, 1 - LOSS_MARGIN)
            penalty = torch.sum(self.likelihood_model_watermarked.delta ** 2) * loss_batch_weight
            loss = nn.functional.binary_cross_entropy(clamped, labels.to(clamped.dtype)) + penalty
        if return_dict:
            return BayesianWatermarkDetectorModelOutput(loss=loss, posterior_probabilities=posterior)
        return (posterior,) if loss is None else (posterior, loss)

    def _check_inputs(self, g_values: torch.Tensor, mask: torch.Tensor, labels: Optional[torch.Tensor]) -> None:
        depth = self.watermarking_depth
        if not isinstance(g_values, torch.Tensor) or g_values.dim() != 3 or g_values.shape[2] != depth:
            shape = tuple(g_values.shape) if isinstance(g_values, torch.Tensor) else type(g_values).__name__
            raise ValueError(
                f"g_values has shape {shape}, expected (batch, length, {depth}): one g-value per token and "
                f"tournament layer, as SynthIDTextWatermarkLogitsProcessor.compute_g_values returns for a "
                f"processor with {depth} keys (this detector's watermarking_depth)")
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(g_values.shape[:2]):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(
                f"mask has shape {shape}, expected {tuple(g_values.shape[:2])} (batch, length) like g_values' "
                "first two dimensions: one entry per scored token, 0 where the token is to be ignored")
        if g_values.dtype.is_complex or not bool(((g_values == 0) | (g_values == 1)).all()):
            raise ValueError(
                "g_values holds values other than 0 and 1: the detector models binary g-values; pass the "
                "output of compute_g_values unchanged")
        if labels is not None and (not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (g_values.shape[0],)):
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(
                f"labels has shape {shape}, expected ({g_values.shape[0]},): one label per row, "
                "1 for watermarked and 0 for plain text")

    # ------------------------------------------------------------------ checkpoints

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> None:
        """Write ``config.json`` and ``model.safetensors`` in transformers' layout."""
        from safetensors.torch import save_file

        os.makedirs(save_directory, exist_ok=True)
        config = BayesianDetectorConfig.from_dict(self.config.to_dict())
        config.extra.pop("transformers_version", None)  # this file was not written by transformers
        config.extra["architectures"] = [type(self).__name__]
        config.extra["dtype"] = str(self.prior.dtype).replace("torch.", "")
        config.to_json_file(os.path.join(save_directory, CONFIG_FILE))
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(tensors, os.path.join(save_directory, WEIGHTS_FILE), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike]) -> "BayesianDetectorModel":
        """A detector from a local directory holding ``config.json`` and ``model.safetensors`` (eval mode)."""
        from safetensors.torch import load_file

        directory = _local_directory(pretrained_model_name_or_path)
        config = BayesianDetectorConfig.from_json_file(os.path.join(directory, CONFIG_FILE))
        weights_path = os.path.join(directory, WEIGHTS_FILE)
        if not os.path.isfile(weights_path):
            present = ", ".join(sorted(os.listdir(directory))) or "none"
            raise FileNotFoundError(
                f"{directory} has no {WEIGHTS_FILE} (files: {present}); genplug reads detector weights as "
                "safetensors only: re-save the detector with save_pretrained (safetensors is the default)")
        try:
            tensors = load_file(weights_path)
        except Exception as error:  # safetensors raises its own error type for truncated or garbled files
            raise ValueError(f"{weights_path} is not a readable safetensors file ({error}); copy it again") from None
        model = cls(config)
        expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
        found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
        if found != expected:
            raise ValueError(
                f"{weights_path} does not hold the weights of a detector with watermarking_depth="
                f"{config.watermarking_depth} (from {CONFIG_FILE}): expected {expected}, found {found}; "
                "the weights and config.json come from different detectors")
        dtype = next(iter(tensors.values())).dtype
        model.to(dtype).load_state_dict(tensors)
        return model.eval()


class SynthIDTextWatermarkDetector:
    """Score token sequences for the SynthID-Text watermark of ``logits_processor``.

    ``detector_module`` is a trained :class:`BayesianDetectorModel` whose ``watermarking_depth`` equals
    the processor's number of keys; ``tokenizer`` gives ``eos_token_id`` (anything with that attribute
    will do): tokens from a row's first EOS on are not scored, nor are tokens whose context already
    occurred earlier in the row (the watermark skipped them). Calling it on ``(batch, length)`` token
    ids returns what the detector module returns: ``(posterior,)`` with P(watermarked) per row.
    """

    def __init__(self, detector_module: BayesianDetectorModel, logits_processor: Any, tokenizer: Any):
        depth, keys = detector_module.watermarking_depth, len(logits_processor.keys)
        if depth != keys:
            raise ValueError(
                f"the detector has watermarking_depth={depth} but the logits processor has {keys} keys: a "
                "detector is trained for one watermarking config; use the processor built from "
                "detector_module.config.watermarking_config")
        self.detector_module = detector_module
        self.logits_processor = logits_processor
        self.tokenizer = tokenizer
        self._eos_token_id()  # fail now rather than at the first call

    def _eos_token_id(self) -> int:
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError(
                f"the tokenizer ({type(self.tokenizer).__name__}) has no eos_token_id: the detector stops "
                "scoring each row at its first EOS token; give a tokenizer (or any object) with eos_token_id")
        return eos

    def __call__(self, tokenized_outputs: torch.Tensor):
        ids = tokenized_outputs
        ngram_len = self.logits_processor.ngram_len
        if not isinstance(ids, torch.Tensor):
            raise ValueError(f"tokenized_outputs has {type(ids).__name__}: expected a tensor of token ids of shape "
                             "(batch, length), e.g. tokenizer(texts, return_tensors='pt').input_ids")
        if ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(
                f"tokenized_outputs has shape {tuple(ids.shape)}, dtype {ids.dtype}: expected integer token ids "
                "of shape (batch, length), e.g. tokenizer(texts, return_tensors='pt').input_ids")
        if ids.shape[1] < ngram_len:
            raise ValueError(
                f"tokenized_outputs has {ids.shape[1]} tokens per row, fewer than ngram_len={ngram_len}: a token "
                f"has g-values only after {ngram_len - 1} tokens of context; give longer texts")
        # g-values start at the first token with a full context, so the EOS mask drops the first ngram_len - 1
        before_eos = self.logits_processor.compute_eos_token_mask(ids, self._eos_token_id())[:, ngram_len - 1:]
        fresh_context = self.logits_processor.compute_context_repetition_mask(ids)
        g_values = self.logits_processor.compute_g_values(ids)
        return self.detector_module(g_values, fresh_context * before_eos)


def _local_directory(path: Union[str, os.PathLike]) -> str:
    """The directory holding a saved detector: ``path``, or for a Hub repository id its downloaded snapshot."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        from genplug import hub

        if not hub.looks_like_repo_id(path):
            raise FileNotFoundError(f"{path!r} is neither a local directory written by save_pretrained nor a Hub "
                                    "repository id (\"org/name\")")
        path = hub.download_snapshot(path, [CONFIG_FILE, WEIGHTS_FILE])
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        raise FileNotFoundError(f"{path} has no {CONFIG_FILE}: it is not a saved BayesianDetectorModel")
    return path
