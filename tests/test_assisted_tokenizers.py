"""Assisted decoding with a draft model that has its own tokenizer (universal assisted decoding).

Oracle: greedy verification makes the output plain greedy search's, whatever the draft proposes; here
the target is the embedded story model (its BPE tokenizer) and the draft a random character-level
model, so candidates are mostly wrong and sometimes right. Batches: every row of a left-padded batch is
plain greedy's, and each row's candidates are what the generator proposes for that row alone."""

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models as tokenizer_models, pre_tokenizers

import genplug
from genplug.errors import GenerationInputError
from genplug.plugins.models.llama.config import NativeLlamaConfig
from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM

CHARACTERS = list(" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'\"-0123456789\n")


class CharacterTokenizer:
    """One token per character, <eos> = 1: a vocabulary nothing like the target's."""

    eos_token_id = 1

    def __init__(self):
        vocab = {token: i for i, token in enumerate(["<unk>", "<eos>", *CHARACTERS])}
        self.backend = Tokenizer(tokenizer_models.WordLevel(vocab, unk_token="<unk>"))
        self.backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        self.backend.decoder = decoders.Fuse()
        self.vocab_size = len(vocab)

    def __call__(self, text, add_special_tokens=True, return_tensors=None):
        return {"input_ids": torch.tensor([self.backend.encode(text).ids])}

    def decode(self, ids, skip_special_tokens=False):
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)


@pytest.fixture(scope="module")
def models():
    target, tokenizer = genplug.load_model()
    characters = CharacterTokenizer()
    torch.manual_seed(0)
    draft = NativeLlamaForCausalLM(NativeLlamaConfig(
        vocab_size=characters.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8)).eval()
    return target, tokenizer, draft, characters


@pytest.mark.parametrize("num_tokens", [1, 4, 12])
def test_greedy_with_a_draft_of_another_vocabulary_is_greedy(models, num_tokens):
    target, tokenizer, draft, characters = models
    ids = tokenizer(["Once upon a time there was a"], return_tensors="pt")["input_ids"]
    plain = genplug.generate(target, ids, max_new_tokens=20)
    assisted = genplug.generate(target, ids, max_new_tokens=20, assistant_model=draft, tokenizer=tokenizer,
                                assistant_tokenizer=characters, num_assistant_tokens=num_tokens)
    assert torch.equal(assisted, plain)


def test_the_draft_proposes_the_target_text_when_it_knows_it(models, monkeypatch):
    """Candidates are the draft's new text in the target's tokens: a draft that spells the target's own
    continuation gets whole rounds accepted."""
    from genplug.plugins.strategies import candidates as module

    target, tokenizer, draft, characters = models
    ids = tokenizer(["Once upon a time"], return_tensors="pt")["input_ids"]
    plain = genplug.generate(target, ids, max_new_tokens=12)
    continuation = tokenizer.decode(plain[0].tolist(), skip_special_tokens=True)
    proposals = []
    original = module.OtherTokenizerDraftCandidates.candidates

    def spy(self, tokens):
        out = original(self, tokens)
        proposals.append(out[0].shape[1])
        return out

    monkeypatch.setattr(module.OtherTokenizerDraftCandidates, "candidates", spy)

    def oracle_step(self, row, ids, start):  # a draft whose next character is always the target's
        text = characters.decode(ids[0].tolist())
        logits = torch.full((1, characters.vocab_size), -10.0)
        following = continuation[len(text):len(text) + 1] if continuation.startswith(text) else ""
        logits[0, characters(following)["input_ids"][0, 0] if following else 1] = 10.0
        return logits

    monkeypatch.setattr(module.OtherTokenizerDraftCandidates, "_step", oracle_step)
    out = genplug.generate(target, ids, max_new_tokens=12, assistant_model=draft, tokenizer=tokenizer,
                           assistant_tokenizer=characters, num_assistant_tokens=10, return_dict_in_generate=True,
                           output_scores=True)
    assert torch.equal(out.sequences, plain)
    assert len(proposals) < 12 and max(proposals) > 1  # fewer target forwards than tokens


def test_sampling_with_another_vocabulary_keeps_to_the_limits(models):
    target, tokenizer, draft, characters = models
    ids = tokenizer(["The dog"], return_tensors="pt")["input_ids"]
    torch.manual_seed(0)
    out = genplug.generate(target, ids, max_new_tokens=15, min_new_tokens=15, do_sample=True, assistant_model=draft,
                           tokenizer=tokenizer, assistant_tokenizer=characters)
    assert out.shape == (1, ids.shape[1] + 15)


PROMPTS = ["Once upon a time there was a", "The dog", "She said"]


def left_padded(tokenizer, prompts=PROMPTS):
    tokenizer.padding_side = "left"
    return tokenizer(prompts, return_tensors="pt", padding=True)


@pytest.mark.parametrize("num_tokens", [1, 4, 12])
@pytest.mark.parametrize("eos_token_id", [None, 392])  # 392 ("scared") ends the second row after two tokens
def test_a_left_padded_batch_with_a_draft_of_another_vocabulary_is_greedy(models, num_tokens, eos_token_id):
    target, tokenizer, draft, characters = models
    batch = left_padded(tokenizer)
    assert batch["attention_mask"].sum(dim=1).unique().numel() == 3  # three prompt lengths
    settings = dict(max_new_tokens=20, pad_token_id=0, **({"eos_token_id": eos_token_id} if eos_token_id else {}))
    plain = genplug.generate(target, **batch, **settings)
    if eos_token_id is not None:  # the second row finished early; the others ran on
        assert plain[1, -1] == 0 and plain.shape[1] == batch["input_ids"].shape[1] + 20
    assisted = genplug.generate(target, **batch, **settings, assistant_model=draft, tokenizer=tokenizer,
                                assistant_tokenizer=characters, num_assistant_tokens=num_tokens)
    assert torch.equal(assisted, plain)


def test_each_row_drafts_from_its_own_text(models, monkeypatch):
    """A draft that spells each row's own greedy continuation gets whole rounds accepted in a batch: the
    rows' texts (and candidates) are not mixed up."""
    from genplug.plugins.strategies import candidates as module

    target, tokenizer, draft, characters = models
    batch = left_padded(tokenizer)
    plain = genplug.generate(target, **batch, max_new_tokens=16)
    continuations = [tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in plain]
    rounds = []
    original = module.OtherTokenizerDraftCandidates.candidates

    def spy(self, tokens):
        out = original(self, tokens)
        rounds.append(out[2])
        return out

    def oracle_step(self, row, ids, start):  # the next character of row `row`'s continuation
        text = characters.decode(ids[0].tolist())
        following = continuations[row][len(text):len(text) + 1] if continuations[row].startswith(text) else ""
        logits = torch.full((1, characters.vocab_size), -10.0)
        logits[0, characters(following)["input_ids"][0, 0] if following else 1] = 10.0
        return logits

    monkeypatch.setattr(module.OtherTokenizerDraftCandidates, "candidates", spy)
    monkeypatch.setattr(module.OtherTokenizerDraftCandidates, "_step", oracle_step)
    out = genplug.generate(target, **batch, max_new_tokens=16, assistant_model=draft, tokenizer=tokenizer,
                           assistant_tokenizer=characters, num_assistant_tokens=10)
    assert torch.equal(out, plain)
    assert len(rounds) <= 10  # plain greedy: 16 forwards; rows drafting from one another's text: 16


def test_each_row_of_a_batch_is_greedy_as_it_is_alone(models):
    target, tokenizer, draft, characters = models
    batch = left_padded(tokenizer)
    assisted = genplug.generate(target, **batch, max_new_tokens=15, assistant_model=draft, tokenizer=tokenizer,
                                assistant_tokenizer=characters, num_assistant_tokens=5)
    for row, prompt in enumerate(PROMPTS):
        ids = tokenizer([prompt], return_tensors="pt")["input_ids"]
        alone = genplug.generate(target, ids, max_new_tokens=15, assistant_model=draft, tokenizer=tokenizer,
                                 assistant_tokenizer=characters, num_assistant_tokens=5)
        assert torch.equal(assisted[row, -alone.shape[1]:], alone[0])


def test_each_row_proposes_what_it_would_alone(models):
    """The generator's row ``i`` of a batch (its ``lengths[i]`` candidates) is its proposal for row ``i``
    alone, round after round (the per-row draft caches kept and cropped); a row past its EOS proposes
    nothing."""
    from genplug.models import ModelAdapter
    from genplug.plugins.strategies.candidates import OtherTokenizerDraftCandidates

    target, tokenizer, draft, characters = models
    batch = left_padded(tokenizer)
    eos = torch.tensor([392])
    plain = genplug.generate(target, **batch, max_new_tokens=8, eos_token_id=392, pad_token_id=0)
    prompt_length = batch["input_ids"].shape[1]

    def generator(mask, length):
        return OtherTokenizerDraftCandidates(ModelAdapter(draft), tokenizer, characters, False, 6, "constant", 100,
                                             torch.device("cpu"), eos, mask, length)

    batched = generator(batch["attention_mask"], prompt_length)
    alone = [generator(None, int(batch["attention_mask"][row].sum())) for row in range(len(PROMPTS))]
    proposed = 0
    for new in (0, 1, 2, 5, 8):
        ids, scores, lengths = batched.candidates(plain[:, :prompt_length + new])
        assert scores is None and ids.shape == (len(PROMPTS), int(lengths.max()))
        for row in range(len(PROMPTS)):
            if row == 1 and new >= 2:  # its second token was its EOS: it proposes nothing
                assert lengths[row] == 0
                continue
            own = plain[row, prompt_length - int(batch["attention_mask"][row].sum()):prompt_length + new]
            expected, _, expected_length = alone[row].candidates(own[None])
            assert lengths[row] == expected_length[0]
            assert torch.equal(ids[row, :lengths[row]], expected[0, :expected_length[0]])
            assert (ids[row, lengths[row]:] == plain[row, prompt_length + new - 1]).all()  # filler: the last token
            proposed += int(lengths[row])
    assert proposed > 0


def test_sampling_a_batch_with_another_vocabulary_keeps_to_the_limits(models):
    target, tokenizer, draft, characters = models
    batch = left_padded(tokenizer)
    torch.manual_seed(0)
    out = genplug.generate(target, **batch, max_new_tokens=10, min_new_tokens=10, do_sample=True,
                           num_return_sequences=2, assistant_model=draft, tokenizer=tokenizer,
                           assistant_tokenizer=characters)
    assert out.shape == (2 * len(PROMPTS), batch["input_ids"].shape[1] + 10)


def test_one_tokenizer_alone_is_refused(models):
    target, tokenizer, draft, characters = models
    ids = tokenizer(["The dog"], return_tensors="pt")["input_ids"]
    with pytest.raises(GenerationInputError, match="vocabulary"):
        genplug.generate(target, ids, max_new_tokens=3, assistant_model=draft)
