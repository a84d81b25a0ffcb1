"""HammingDiversityLogitsProcessor against hand-computed penalties, and when it is built."""

import types

import pytest
import torch

from genplug import HammingDiversityLogitsProcessor
from genplug.errors import GenerationConfigError
from genplug.plugins.strategies.group_beam_search import build_hamming_diversity

# 2 prompts x 4 beams in 2 groups of 2; this step's tokens of group 0: prompt 0 chose 3 twice, prompt 1 chose 1 and 2.
CURRENT = torch.tensor([3, 3, 0, 0, 1, 2, 0, 0])


def _expected_group_one(vocab=5):
    penalty = torch.zeros(2, vocab)
    penalty[0, 3] = 2 * 0.5
    penalty[1, 1] = penalty[1, 2] = 0.5
    return penalty


def test_every_row_layout_penalises_only_the_group():
    processor = HammingDiversityLogitsProcessor(0.5, num_beams=4, num_beam_groups=2)
    scores = torch.zeros(8, 5)
    out = processor(torch.zeros(8, 3, dtype=torch.long), scores, current_tokens=CURRENT, beam_group_idx=1)
    expected = torch.zeros(2, 4, 5)
    expected[:, 2:] -= _expected_group_one()[:, None, :]
    assert torch.equal(out, expected.view(8, 5))
    assert torch.equal(scores, torch.zeros(8, 5)), "the input scores were modified"


def test_group_rows_layout_of_transformers_4_56():
    processor = HammingDiversityLogitsProcessor(0.5, num_beams=4, num_beam_groups=2)
    out = processor(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 5), current_tokens=CURRENT, beam_group_idx=1)
    assert torch.equal(out, -_expected_group_one().repeat_interleave(2, dim=0))


def test_first_group_is_left_alone():
    processor = HammingDiversityLogitsProcessor(0.5, num_beams=4, num_beam_groups=2)
    scores = torch.randn(8, 5)
    assert torch.equal(processor(None, scores, current_tokens=CURRENT, beam_group_idx=0), scores)


@pytest.mark.parametrize("args", [(0.0, 4, 2), (1, 4, 2), (0.5, 1, 2), (0.5, 4, 1), (0.5, 2, 4)])
def test_bad_arguments(args):
    with pytest.raises(GenerationConfigError):
        HammingDiversityLogitsProcessor(*args)


def test_built_only_for_group_beam_search():
    config = types.SimpleNamespace(diversity_penalty=0.5, num_beams=4, num_beam_groups=2)
    assert build_hamming_diversity(config, types.SimpleNamespace(strategy="beam_search")) is None
    built = build_hamming_diversity(config, types.SimpleNamespace(strategy="group_beam_search"))
    assert isinstance(built, HammingDiversityLogitsProcessor)
    config.diversity_penalty = 0.0
    assert build_hamming_diversity(config, types.SimpleNamespace(strategy="group_beam_search")) is None
