"""In-place chains built by LogitsProcessorList: one copy of the scores, nothing else changes."""

import torch

import genplug
from genplug.processing import LogitsProcessor, LogitsProcessorList
from genplug.plugins.processors.chaining import ProcessorChain


class ReturnsItsInput(LogitsProcessor):
    """A user processor that hands its input back: neighbours must not write into it."""

    def __call__(self, input_ids, scores):
        return scores


class HalvedTemperature(genplug.TemperatureLogitsWarper):
    """A user subclass overriding __call__ only: it must not be chained with the parent's apply_."""

    def __call__(self, input_ids, scores):
        return scores / (2 * self.temperature)


def _history():
    return torch.tensor([[1, 2, 1, 2, 3], [4, 4, 4, 5, 4]])


def test_neighbours_are_fused_and_the_input_is_left_alone():
    processors = [genplug.RepetitionPenaltyLogitsProcessor(1.5), genplug.NoRepeatNGramLogitsProcessor(2),
                  genplug.TemperatureLogitsWarper(0.5), genplug.SuppressTokensLogitsProcessor([0])]
    plan = LogitsProcessorList(processors)._fused()
    assert len(plan) == 1 and isinstance(plan[0], ProcessorChain) and plan[0].steps == processors
    scores = torch.randn(2, 8)
    original = scores.clone()
    expected = scores
    for processor in processors:
        expected = processor(_history(), expected)
    assert torch.equal(LogitsProcessorList(processors)(_history(), scores), expected)
    assert torch.equal(scores, original)


def test_user_processors_split_chains_and_are_never_written_through():
    processors = [genplug.TemperatureLogitsWarper(0.5), ReturnsItsInput(), genplug.SuppressTokensLogitsProcessor([1]),
                  HalvedTemperature(1.0), genplug.TopKLogitsWarper(3)]
    plan = LogitsProcessorList(processors)._fused()
    assert [type(step).__name__ for step in plan] == [
        "TemperatureLogitsWarper", "ReturnsItsInput", "SuppressTokensLogitsProcessor", "HalvedTemperature",
        "TopKLogitsWarper"]
    scores = torch.randn(2, 8)
    original = scores.clone()
    out = LogitsProcessorList(processors)(_history(), scores)
    assert torch.equal(scores, original)
    assert torch.isneginf(out[:, 1]).all()


def test_the_plan_follows_changes_to_the_list():
    processors = LogitsProcessorList([genplug.TemperatureLogitsWarper(0.5), genplug.TopKLogitsWarper(2)])
    assert len(processors._fused()) == 1
    processors.insert(1, ReturnsItsInput())
    assert len(processors._fused()) == 3


def test_chain_flags_are_those_of_all_its_steps():
    chain = ProcessorChain([genplug.TemperatureLogitsWarper(0.5), genplug.RepetitionPenaltyLogitsProcessor(1.2)])
    assert chain.compile_safe and not chain.argmax_invariant
