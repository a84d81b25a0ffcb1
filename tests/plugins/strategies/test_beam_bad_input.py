"""Bad beam-search settings raise GenerationConfigError / GenerationInputError naming the field."""

import pytest
import torch

import genplug
from genplug.errors import GenerationConfigError, GenerationInputError
from helpers.tiny_lm import TinyCausalLM, _ListCache

VOCAB = 32


@pytest.fixture(scope="module")
def model():
    return TinyCausalLM(vocab_size=VOCAB, seed=5)


IDS = torch.tensor([[5, 6, 7, 8]])

BAD = [
    (dict(num_beams=0), GenerationConfigError, "num_beams"),
    (dict(num_beams=3, num_return_sequences=5), GenerationConfigError, "num_return_sequences"),
    (dict(num_beams=5, num_beam_groups=2, diversity_penalty=1.0), GenerationConfigError, "num_beam_groups"),
    (dict(num_beams=4, diversity_penalty=0.5), GenerationConfigError, "diversity_penalty"),
    (dict(num_beams=3, constraints=[]), GenerationConfigError, "constraints"),
    (dict(num_beams=3, force_words_ids=[]), GenerationConfigError, "force_words_ids"),
    (dict(num_beams=3, force_words_ids=[[[9, 10], [9]]]), GenerationConfigError, "force_words_ids"),
    (dict(num_beams=3, force_words_ids=[[9, VOCAB + 3]]), GenerationConfigError, "force_words_ids"),
    (dict(num_beams=3, force_words_ids=[[[9], [VOCAB]]]), GenerationConfigError, "force_words_ids"),
    (dict(num_beams=3, constraints=["not a constraint"]), GenerationConfigError, "constraints"),
    (dict(num_beams=1, force_words_ids=[[9]]), GenerationConfigError, "num_beams"),
    (dict(num_beams=3, force_words_ids=[[9]], do_sample=True), GenerationConfigError, "do_sample"),
    (dict(num_beams=3, low_memory=True), GenerationConfigError, "low_memory"),
]


@pytest.mark.parametrize("kwargs,error,field", BAD, ids=[b[2] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_settings_name_the_field(model, kwargs, error, field):
    calls = model.forward_calls
    with pytest.raises(error, match=field):
        genplug.generate(model, IDS, max_new_tokens=4, **kwargs)
    assert model.forward_calls == calls, "raised only after running the model"


def test_constraint_objects_out_of_vocabulary(model):
    with pytest.raises(GenerationConfigError, match="constraints"):
        genplug.generate(model, IDS, max_new_tokens=4, num_beams=3,
                         constraints=[genplug.PhrasalConstraint([4, VOCAB + 1])])


def test_overlapping_alternatives_are_refused_when_built():
    with pytest.raises(GenerationConfigError, match="overlap"):
        genplug.DisjunctiveConstraint([[5, 6], [5, 6]])
    with pytest.raises(GenerationConfigError, match="overlap"):
        genplug.DisjunctiveConstraint([[5, 6, 7], [5, 6]])
    with pytest.raises(GenerationConfigError, match="token_ids"):
        genplug.PhrasalConstraint([])


class Recorder(genplug.BaseStreamer):
    def __init__(self):
        self.put_calls = 0

    def put(self, value):
        self.put_calls += 1

    def end(self):
        pass


@pytest.mark.parametrize("kwargs", [
    dict(num_beams=3), dict(num_beams=3, do_sample=True), dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
    dict(num_beams=3, force_words_ids=[[9]]),
], ids=["beam_search", "beam_sample", "group_beam_search", "constrained_beam_search"])
def test_every_beam_mode_refuses_a_streamer(model, kwargs):
    calls = model.forward_calls
    with pytest.raises(GenerationInputError, match="streamer"):
        genplug.generate(model, IDS, max_new_tokens=4, streamer=Recorder(), **kwargs)
    assert model.forward_calls == calls


def test_a_cache_that_cannot_reorder_is_refused(model):
    with pytest.raises(GenerationConfigError, match="reorder"):
        genplug.generate(model, IDS, max_new_tokens=4, num_beams=3, past_key_values=_ListCache())
