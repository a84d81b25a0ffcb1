"""Where genplug deliberately differs from a transformers quirk (research notes, Appendix B).

Each case documents what transformers does, then checks genplug's behaviour against an independent
oracle -- a hand-written decoding loop, the logits recomputed without a cache, a fresh copy of the model --
rather than against transformers.
"""

import copy

import pytest
import torch
import transformers

import genplug
from genplug.errors import GenerationInputError
from helpers.transformers_version import transformers_at_least
from parity_tools import VOCAB, prompt, reference_decode, tiny_model, top_k_by_hand

STEPS = 6


def _temperature_then_default_top_k(times: int, temperature: float):
    def warp(ids, scores):
        for _ in range(times):
            scores = scores / temperature
        return top_k_by_hand(scores, 50)
    return warp


@pytest.mark.parametrize("warper_class", [genplug.TemperatureLogitsWarper, transformers.TemperatureLogitsWarper],
                         ids=["genplug's", "transformers'"])
def test_a_warper_of_a_type_the_config_builds_is_refused(warper_class):
    """Quirk 2: transformers appends the config's warpers after the caller's, so a caller's
    TemperatureLogitsWarper plus temperature=... divides the logits twice. genplug refuses the call."""
    model = tiny_model("llama")
    ids = prompt(batch=2)
    torch.manual_seed(0)
    theirs = model.generate(ids, max_new_tokens=STEPS, do_sample=True, temperature=0.7,
                            logits_processor=[transformers.TemperatureLogitsWarper(0.7)])
    twice = reference_decode(model, ids, STEPS, _temperature_then_default_top_k(2, 0.7), do_sample=True, seed=0)
    assert torch.equal(theirs, twice), "transformers applies the temperature twice"

    with pytest.raises(GenerationInputError, match="TemperatureLogitsWarper"):
        genplug.generate(model, ids, max_new_tokens=STEPS, do_sample=True, temperature=0.7,
                         logits_processor=[warper_class(0.7)])

    # what the caller meant: the temperature once, then the default top-k
    torch.manual_seed(0)
    ours = genplug.generate(model, ids, max_new_tokens=STEPS, do_sample=True, temperature=0.7)
    once = reference_decode(model, ids, STEPS, _temperature_then_default_top_k(1, 0.7), do_sample=True, seed=0)
    assert torch.equal(ours, once)


def test_a_processor_of_a_type_the_config_builds_is_refused_instead_of_replacing_it():
    """Quirk 2: transformers silently replaces its own RepetitionPenaltyLogitsProcessor(1.2) by the
    caller's (2.0). genplug refuses the ambiguous call; the caller's processor alone is honoured."""
    model = tiny_model("llama")
    ids = prompt(batch=2, seed=1)
    theirs = model.generate(ids, max_new_tokens=STEPS, do_sample=False, repetition_penalty=1.2,
                            logits_processor=[transformers.RepetitionPenaltyLogitsProcessor(2.0)])
    with pytest.raises(GenerationInputError, match="RepetitionPenaltyLogitsProcessor"):
        genplug.generate(model, ids, max_new_tokens=STEPS, do_sample=False, repetition_penalty=1.2,
                         logits_processor=[genplug.RepetitionPenaltyLogitsProcessor(2.0)])

    def penalty_by_hand(ids, scores):
        seen = scores.gather(1, ids)
        return scores.scatter(1, ids, torch.where(seen < 0, seen * 2.0, seen / 2.0))

    ours = genplug.generate(model, ids, max_new_tokens=STEPS, do_sample=False,
                            logits_processor=[genplug.RepetitionPenaltyLogitsProcessor(2.0)])
    expected = reference_decode(model, ids, STEPS, penalty_by_hand, do_sample=False)
    assert torch.equal(ours, expected)
    assert torch.equal(theirs, expected), "transformers ran the caller's penalty in place of its own"


def test_a_transformers_stopping_criterion_of_a_type_the_config_builds_is_refused():
    model = tiny_model("llama")
    with pytest.raises(GenerationInputError, match="MaxLengthCriteria"):
        genplug.generate(model, prompt(), max_new_tokens=3,
                         stopping_criteria=[transformers.MaxLengthCriteria(max_length=8)])


def _state_space_model(kind):
    torch.manual_seed(0)
    if kind == "mamba":
        return transformers.MambaForCausalLM(transformers.MambaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4)).eval()
    return transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=4, num_heads=4, head_dim=16, n_groups=1,
        expand=2)).eval()


def _gap_to_recompute(model, out, prompt_len):
    """The largest gap between a greedy output's scores and the model's logits recomputed without a cache."""
    with torch.no_grad():
        return max((model(out.sequences[:, :prompt_len + step], use_cache=False).logits[:, -1] - scores).abs().max()
                   for step, scores in enumerate(out.scores)).item()


@pytest.mark.skipif(not transformers_at_least("5.25"), reason=(
    "transformers < 5.25 refuses assisted decoding on stateful models, as genplug does "
    "(test_hf_recurrent_models.py)"))
@pytest.mark.parametrize("kind", ["mamba", "mamba2"])
def test_assisted_decoding_on_a_state_space_model_is_refused(kind):
    """transformers 5.25 runs assisted decoding on stateful models: it records the recurrent state of the
    last num_assistant_tokens positions of each verification forward, so that rejected candidates can be
    rolled back. For Mamba-family layers that is not exact (Mamba's scan starts the positions it does not
    record from an empty state, as a TODO in its source says), so the verified logits are not the model's:
    off by 1e-3 to 1e-2 here, where plain greedy search agrees to 1e-6 (gated delta-net layers, Qwen3-Next,
    did roll back exactly). genplug cannot tell which layers roll back exactly, so it keeps refusing, as
    transformers < 5.25 did; greedy search gives the model's logits. Oracle: the logits recomputed without
    a cache."""
    model = _state_space_model(kind)
    ids = torch.arange(4, 10)[None].repeat(1, 3)
    with pytest.raises(GenerationInputError, match="stateful"):
        genplug.generate(model, ids, max_new_tokens=10, prompt_lookup_num_tokens=3)
    scores = dict(max_new_tokens=10, do_sample=False, return_dict_in_generate=True, output_scores=True)
    theirs = model.generate(ids, prompt_lookup_num_tokens=3, **scores)
    assert _gap_to_recompute(model, theirs, ids.shape[1]) > 1e-3, "transformers' verification left the model's logits"
    ours = genplug.generate(model, ids, **scores)
    assert _gap_to_recompute(model, ours, ids.shape[1]) < 1e-5


# ------------------------------------------------------------------ models whose forward gets its state wrong

def _rwkv():
    torch.manual_seed(0)
    return transformers.RwkvForCausalLM(transformers.RwkvConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, attention_hidden_size=32, intermediate_size=64,
        context_length=64)).eval()


def _recurrent_gemma():
    torch.manual_seed(0)
    return transformers.RecurrentGemmaForCausalLM(transformers.RecurrentGemmaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, lru_width=32, attention_window_size=8, block_types=["recurrent", "attention"],
        attn_implementation="eager")).eval()


def _logits_gap_to_recompute(model, out, prompt_len):
    """The largest gap between an output's per-step logits and the model's, each row's whole sequence recomputed
    without a cache (one forward over all its tokens)."""
    with torch.no_grad():
        return max((model(out.sequences[:, :prompt_len + step], use_cache=False).logits[:, -1] - logits).abs().max()
                   for step, logits in enumerate(out.logits)).item()


_LOGITS = dict(return_dict_in_generate=True, output_logits=True, pad_token_id=0)


def test_rwkv_decodes_each_row_of_a_batch_as_if_it_were_alone():
    """transformers' RWKV forward over one token with a state mixes the rows of the batch: the time shift reads
    each row's previous token as [batch, hidden] and mixes it into the [batch, 1, hidden] token, which broadcasts
    to [batch, batch, hidden] -- a sequence of `batch` tokens, one per row's previous token, that the recurrence
    runs through. transformers' generate goes on from the second new token with logits 1 to 2 off (batch 1 is
    exact). genplug runs RWKV's one-token forwards one row at a time (plugins/transformers/adapter.py): every step's
    logits are the model's, and each row's tokens are those of a batch-1 call. Oracles: the logits recomputed
    without a cache; transformers' own batch-1 generate, row by row."""
    model = _rwkv()
    ids = prompt(batch=3, length=7, seed=4)
    greedy = dict(max_new_tokens=STEPS, min_new_tokens=STEPS, **_LOGITS)
    theirs = model.generate(ids, **greedy)
    assert _logits_gap_to_recompute(model, theirs, ids.shape[1]) > 0.5, (
        "transformers' RWKV now decodes batches right: the adapter's row-by-row forward can go")
    ours = genplug.generate(model, ids, output_hidden_states=True, **greedy)
    assert _logits_gap_to_recompute(model, ours, ids.shape[1]) < 1e-5
    for row in range(ids.shape[0]):
        assert torch.equal(ours.sequences[row:row + 1], model.generate(ids[row:row + 1], **greedy).sequences)
    # the per-layer hidden states come back for the whole batch, as the model's
    whole = model(ours.sequences[:, :-1], use_cache=False, output_hidden_states=True).hidden_states
    for layer, hidden in enumerate(ours.hidden_states[-1]):
        assert hidden.shape == (ids.shape[0], 1, 32)
        torch.testing.assert_close(hidden, whole[layer][:, -1:], atol=1e-5, rtol=0)


def test_rwkv_samples_several_sequences_per_prompt_as_a_hand_written_loop():
    """num_return_sequences gives RWKV a batch even for one prompt; one-token prompts go to the forward that mixes
    the rows straight away (it makes the state itself). Oracle: a hand-written loop recomputing every row's whole
    sequence each step, drawing from the same seed (min_new_tokens masks EOS, id 0, then temperature, top-k)."""
    model = _rwkv()

    def warp(ids, scores):
        return top_k_by_hand(scores.index_fill(-1, torch.tensor([0]), float("-inf")) / 0.8, 20)

    for ids in (prompt(batch=2, length=5, seed=5), torch.tensor([[9], [17]])):
        sample = dict(max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=True, temperature=0.8, top_k=20,
                      num_return_sequences=2, **_LOGITS)
        torch.manual_seed(0)
        theirs = model.generate(ids, **sample)
        assert _logits_gap_to_recompute(model, theirs, ids.shape[1]) > 0.5
        torch.manual_seed(0)
        ours = genplug.generate(model, ids, **sample)
        assert _logits_gap_to_recompute(model, ours, ids.shape[1]) < 1e-5
        expected = reference_decode(model, ids.repeat_interleave(2, dim=0), STEPS, warp, do_sample=True, seed=0)
        assert torch.equal(ours.sequences, expected)


def test_recurrent_gemma_starts_every_call_from_an_empty_state():
    """transformers' RecurrentGemma keeps its recurrent blocks' state on the modules (the convolution window and
    the RG-LRU state), and its forward starts them afresh (`_setup_cache`) only when given no cache -- generate
    always gives one. A prompt of several tokens overwrites the window and restarts the RG-LRU at position 0, but a
    one-token prompt convolves over the window the previous call left (same batch size): its logits depend on that
    call. genplug starts every call from the model's own fresh state (the adapter's `reset_state`). Oracles: the
    same call on an untouched copy of the model; the logits recomputed without a cache."""
    untouched = _recurrent_gemma()
    one_token = torch.tensor([[9], [17]])
    greedy = dict(max_new_tokens=STEPS, min_new_tokens=STEPS, **_LOGITS)
    fresh = copy.deepcopy(untouched).generate(one_token, **greedy)

    used = copy.deepcopy(untouched)
    used.generate(prompt(batch=2, length=7, seed=2), max_new_tokens=4, pad_token_id=0)
    theirs = used.generate(one_token, **greedy)
    gap = max((a - b).abs().max().item() for a, b in zip(theirs.logits, fresh.logits))
    assert gap > 1e-2, "transformers' RecurrentGemma now starts each call afresh: reset_state can go"

    for earlier in (lambda m: m.generate(prompt(batch=2, length=7, seed=2), max_new_tokens=4, pad_token_id=0),
                    lambda m: genplug.generate(m, prompt(batch=2, length=7, seed=3), max_new_tokens=4, pad_token_id=0)):
        used = copy.deepcopy(untouched)
        earlier(used)
        ours = genplug.generate(used, one_token, **greedy)
        assert torch.equal(ours.sequences, fresh.sequences)
        assert max((a - b).abs().max().item() for a, b in zip(ours.logits, fresh.logits)) < 1e-5
        assert _logits_gap_to_recompute(used, ours, 1) < 1e-5


def _with_weights_that_matter(model):
    """Weights with std 0.2 (transformers' initialisation leaves the recurrent state barely reaching the logits)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2 and "embed" not in name and "lm_head" not in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


def test_recurrent_gemma_beams_carry_their_own_recurrent_state():
    """transformers' RecurrentGemma keeps its recurrent blocks' state on the modules, and beam search reorders only
    the cache: after a reordering a beam goes on from another beam's convolution window and RG-LRU state.
    genplug reorders that state with the cache (the adapter's `reorder_state`). Oracle: the same beam search
    without a cache, which recomputes every beam's whole sequence each step."""
    model = _with_weights_that_matter(_recurrent_gemma())
    ids = prompt(batch=2, length=6, seed=7)
    beams = dict(num_beams=3, num_return_sequences=2, max_new_tokens=STEPS, min_new_tokens=STEPS, pad_token_id=0,
                 return_dict_in_generate=True, output_scores=True)
    oracle = genplug.generate(copy.deepcopy(model), ids, use_cache=False, **beams)
    theirs = copy.deepcopy(model).generate(ids, **beams)
    assert (theirs.sequences_scores - oracle.sequences_scores).abs().max() > 1e-3, (
        "transformers' RecurrentGemma beams now follow their own state: reorder_state can go")
    ours = genplug.generate(copy.deepcopy(model), ids, **beams)
    assert torch.equal(ours.sequences, oracle.sequences)
    torch.testing.assert_close(ours.sequences_scores, oracle.sequences_scores, atol=1e-5, rtol=0)
    for step, (a, b) in enumerate(zip(ours.scores, oracle.scores)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=f"step {step}")
