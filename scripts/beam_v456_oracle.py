"""Record transformers 4.56.2's diverse (group) and constrained beam search on tiny seeded models.

transformers 5 removed both modes from its core, so genplug's plugins are checked against 4.56.2, run
in a virtual environment of its own (transformers 5 must not be importable there)::

    python3 -m venv /tmp/tf456 && /tmp/tf456/bin/pip install transformers==4.56.2 torch==2.13.0
    /tmp/tf456/bin/python scripts/beam_v456_oracle.py --out tests/parity_v456/fixtures/beam_v456.json

The models are built from the explicit configs below and their weights are set from seeded random
numbers by parameter name, so transformers 4.56 and 5.x build the same model; the fixture records a
checksum of the weights and genplug's test checks it. Each case records the exact ``generate``
keyword arguments used (EOS ids picked from the model's own greedy output are resolved here) and the
resulting ``sequences`` and ``sequences_scores``.

This module is also imported (under transformers 5) by tests/parity_v456 for ``build_model``,
``prompt`` and ``CASES``; it imports transformers only inside functions.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from typing import Any, Dict, List, Optional

import torch

VOCAB = 96

MODELS: Dict[str, Dict[str, Any]] = {
    "llama": {"class": "LlamaForCausalLM", "config": "LlamaConfig", "seed": 11, "kwargs": dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)},
    "bart": {"class": "BartForConditionalGeneration", "config": "BartConfig", "seed": 12, "kwargs": dict(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)},
}

# Each case: the model, the prompt, and the generate() arguments. "eos_from_greedy_step": k makes the
# EOS id the token greedy search emits at generated position k of row 0 (so hypotheses do finish).
# Constraints are written as specs ({"phrasal": [...]} / {"disjunctive": [[...], ...]}) and built with
# the library that runs them.
CASES: List[Dict[str, Any]] = [
    # ---- diverse (group) beam search
    dict(id="group_basic", model="llama", prompt=dict(batch=2, length=5, seed=1),
         kwargs=dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2,
                     max_new_tokens=8, eos_token_id=30, pad_token_id=0)),
    dict(id="group_padded_early", model="llama", prompt=dict(batch=3, length=6, seed=2, pads=[0, 2, 3]),
         eos_from_greedy_step=1,
         kwargs=dict(num_beams=6, num_beam_groups=3, diversity_penalty=0.5, length_penalty=0.7,
                     early_stopping=True, num_return_sequences=3, max_new_tokens=9, pad_token_id=0)),
    dict(id="group_of_one_never", model="llama", prompt=dict(batch=2, length=4, seed=3), eos_from_greedy_step=3,
         kwargs=dict(num_beams=4, num_beam_groups=4, diversity_penalty=2.0, early_stopping="never",
                     length_penalty=1.5, num_return_sequences=4, max_new_tokens=7, pad_token_id=0)),
    dict(id="group_no_eos_processors", model="llama", prompt=dict(batch=2, length=5, seed=4),
         kwargs=dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.8, max_new_tokens=6, eos_token_id=None,
                     pad_token_id=0, repetition_penalty=1.3, no_repeat_ngram_size=2, num_return_sequences=2)),
    dict(id="group_bart", model="bart", prompt=dict(batch=2, length=6, seed=5, low=3),
         kwargs=dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=3,
                     no_repeat_ngram_size=1, max_new_tokens=7, eos_token_id=1)),
    # ---- constrained beam search
    dict(id="constrained_phrase", model="llama", prompt=dict(batch=2, length=5, seed=6),
         kwargs=dict(num_beams=4, force_words_ids=[[40, 41]], num_return_sequences=2, max_new_tokens=12,
                     eos_token_id=93, pad_token_id=0)),
    dict(id="constrained_two_words_padded", model="llama", prompt=dict(batch=2, length=6, seed=7, pads=[3, 0]),
         kwargs=dict(num_beams=5, force_words_ids=[[30], [50, 51]], early_stopping=True, num_return_sequences=1,
                     max_new_tokens=14, eos_token_id=3, pad_token_id=0)),
    dict(id="constrained_disjunctive", model="llama", prompt=dict(batch=2, length=5, seed=8),
         kwargs=dict(num_beams=4, force_words_ids=[[[60, 61], [70]], [44]], num_return_sequences=3,
                     max_new_tokens=14, eos_token_id=25, pad_token_id=0)),
    dict(id="constrained_disjunctive_shared_prefix", model="llama", prompt=dict(batch=1, length=5, seed=9),
         kwargs=dict(num_beams=4, force_words_ids=[[[60, 61, 62], [60, 63]]], num_return_sequences=2,
                     max_new_tokens=14, eos_token_id=3, pad_token_id=0)),
    dict(id="constrained_objects_never", model="llama", prompt=dict(batch=2, length=4, seed=10),
         kwargs=dict(num_beams=4, constraints=[{"phrasal": [33, 34, 35]}, {"disjunctive": [[20], [21, 22]]}],
                     length_penalty=0.5, early_stopping="never", max_new_tokens=10, eos_token_id=37,
                     pad_token_id=0)),
    dict(id="constrained_too_short", model="llama", prompt=dict(batch=1, length=4, seed=12),
         kwargs=dict(num_beams=3, force_words_ids=[[55, 56, 57], [58, 59]], num_return_sequences=3,
                     max_new_tokens=4, eos_token_id=None, pad_token_id=0)),
    dict(id="constrained_bart", model="bart", prompt=dict(batch=2, length=6, seed=13, low=3),
         kwargs=dict(num_beams=4, force_words_ids=[[45, 46]], num_return_sequences=1, no_repeat_ngram_size=1,
                     max_new_tokens=10, eos_token_id=56)),
]

LIVE_CASES = ("group_basic", "constrained_two_words_padded")  # re-checked live by the slow test


def set_weights(model: torch.nn.Module, seed: int, scale: float = 1.0) -> None:
    """Every parameter from its own seeded generator (by name), so the build order does not matter."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() >= 2:
                param.copy_(scale * noise / param.shape[-1] ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)


def checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


def build_model(name: str):
    """The tiny model ``name`` with seeded weights, eager attention, in eval mode; its generation
    config holds only the special token ids (so no library adds defaults of its own)."""
    import transformers

    spec = MODELS[name]
    config = getattr(transformers, spec["config"])(**spec["kwargs"])
    config._attn_implementation = "eager"
    model = getattr(transformers, spec["class"])(config)
    set_weights(model, spec["seed"], spec.get("scale", 1.0))
    ids = {k: v for k, v in spec["kwargs"].items() if k.endswith("token_id") and k != "forced_eos_token_id"}
    model.generation_config = transformers.GenerationConfig(**ids)
    return model.eval()


def prompt(batch: int, length: int, seed: int, pads: Optional[List[int]] = None, low: int = 4, pad_id: int = 0):
    """``(input_ids, attention_mask or None)``: random ids in ``[low, VOCAB)``, left-padded by ``pads``."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, VOCAB, (batch, length), generator=generator)
    if not pads:
        return ids, None
    mask = torch.ones_like(ids)
    for row, count in enumerate(pads):
        ids[row, :count] = pad_id
        mask[row, :count] = 0
    return ids, mask


def build_constraints(specs, phrasal_cls, disjunctive_cls):
    return [phrasal_cls(s["phrasal"]) if "phrasal" in s else disjunctive_cls(s["disjunctive"]) for s in specs]


def resolved_kwargs(case: Dict[str, Any], model, input_ids, attention_mask) -> Dict[str, Any]:
    """The case's generate() arguments with the EOS id resolved (JSON-friendly; constraints as specs)."""
    kwargs = dict(case["kwargs"])
    step = case.get("eos_from_greedy_step")
    if step is not None:
        extra = {} if attention_mask is None else {"attention_mask": attention_mask}
        out = model.generate(input_ids, max_new_tokens=step + 1, do_sample=False, num_beams=1, eos_token_id=None,
                             **extra)
        start = 1 if model.config.is_encoder_decoder else input_ids.shape[1]
        kwargs["eos_token_id"] = int(out[0, start + step])
    return kwargs


def call_kwargs(kwargs: Dict[str, Any], phrasal_cls, disjunctive_cls) -> Dict[str, Any]:
    """Turn constraint specs into the given library's constraint objects."""
    kwargs = dict(kwargs)
    if "constraints" in kwargs:
        kwargs["constraints"] = build_constraints(kwargs["constraints"], phrasal_cls, disjunctive_cls)
    return kwargs


def run_case(case: Dict[str, Any]) -> Dict[str, Any]:
    """Run one case with the installed transformers (4.56.2) and return its fixture entry."""
    import transformers
    from transformers.generation import DisjunctiveConstraint, PhrasalConstraint

    model = build_model(case["model"])
    input_ids, attention_mask = prompt(**case["prompt"])
    kwargs = resolved_kwargs(case, model, input_ids, attention_mask)
    extra = {} if attention_mask is None else {"attention_mask": attention_mask}
    torch.manual_seed(0)
    out = model.generate(input_ids, **extra, **call_kwargs(kwargs, PhrasalConstraint, DisjunctiveConstraint),
                         return_dict_in_generate=True, output_scores=True)
    return {
        "model": case["model"],
        "prompt": case["prompt"],
        "kwargs": kwargs,
        "checksum": checksum(model),
        "sequences": out.sequences.tolist(),
        "sequences_scores": out.sequences_scores.tolist(),
        "transformers": transformers.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the JSON fixture")
    parser.add_argument("--cases", default="", help="comma-separated case ids (default: all)")
    args = parser.parse_args(argv)
    import transformers

    if not transformers.__version__.startswith("4.56"):
        print(f"transformers {transformers.__version__} is installed; this oracle needs 4.56.x", file=sys.stderr)
        return 2
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    wanted = [c for c in args.cases.split(",") if c]
    cases = [c for c in CASES if not wanted or c["id"] in wanted]
    results = {case["id"]: run_case(case) for case in cases}
    fixture = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": results}
    with open(args.out, "w") as handle:
        json.dump(fixture, handle, indent=1)
        handle.write("\n")
    print(f"wrote {len(results)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
