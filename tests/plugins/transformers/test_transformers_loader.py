"""``genplug generate --model DIR`` on transformers checkpoints the native family does not load.

The checkpoints are built here: a tiny GPT-2 with a byte-level BPE tokenizer trained in-process, and
a tiny T5 with a SentencePiece-style BPE tokenizer, each saved with ``save_pretrained`` plus the
``tokenizers`` library's ``tokenizer.json``. The CLI runs in a subprocess; transformers' own
``generate`` on the same checkpoint is the oracle for the tokens and scores it prints.
"""

import json
import subprocess
import sys

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

from genplug.plugins.transformers.loader import TransformersLoader, load_model  # noqa: E402

transformers.logging.set_verbosity_error()
PROMPTS = ["the quick brown", "a lazy dog jumps over"]


def _gpt2_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    return tokenizer


def _t5_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    letters, common, space = "abcdefghijklmnopqrstuvwxyz", "etaoinshr", "\u2581"
    pairs = [(a, b) for a in common for b in common]
    spaced = [(space, c) for c in letters]
    pieces = ["<pad>", "</s>", "<unk>", space, *letters, *(a + b for a, b in pairs), *(a + b for a, b in spaced)]
    tokenizer = Tokenizer(models.BPE({p: i for i, p in enumerate(pieces)}, pairs + spaced, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    return tokenizer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    gpt2_tokenizer = _gpt2_tokenizer()
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=gpt2_tokenizer.get_vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=64,
        bos_token_id=0, eos_token_id=0))
    t5_tokenizer = _t5_tokenizer()
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=t5_tokenizer.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    dirs = {}
    for name, model, tokenizer in (("gpt2", gpt2, gpt2_tokenizer), ("t5", t5, t5_tokenizer)):
        dirs[name] = root / name
        model.save_pretrained(dirs[name])
        tokenizer.save(str(dirs[name] / "tokenizer.json"))
    return dirs


def _reference(directory, prompts, max_new_tokens):
    """transformers alone: its Auto class, a left-padding tokenizer from the same file, its generate."""
    config = transformers.AutoConfig.from_pretrained(directory)
    auto = transformers.AutoModelForSeq2SeqLM if config.is_encoder_decoder else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(directory).eval()
    special = {"t5": dict(pad_token="<pad>", eos_token="</s>"),
               "gpt2": dict(pad_token="<|endoftext|>", eos_token="<|endoftext|>", bos_token="<|endoftext|>")}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), padding_side="right" if config.is_encoder_decoder else "left",
        **special[config.model_type])
    encoded = tokenizer(prompts, padding=True, return_tensors="pt")
    out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, return_dict_in_generate=True,
                         output_scores=True)
    start = 1 if config.is_encoder_decoder else encoded["input_ids"].shape[1]
    logprobs = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    return out.sequences[:, start:], logprobs


def test_claims_transformers_checkpoints_and_loads_them(checkpoints, tmp_path):
    assert TransformersLoader.claims(checkpoints["gpt2"]) and TransformersLoader.claims(checkpoints["t5"])
    assert not TransformersLoader.claims(tmp_path)  # no config.json
    (tmp_path / "config.json").write_text("not json")
    assert not TransformersLoader.claims(tmp_path)
    model, tokenizer = load_model(checkpoints["gpt2"])
    assert isinstance(model, transformers.GPT2LMHeadModel) and not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    model, tokenizer = load_model(checkpoints["t5"])
    assert isinstance(model, transformers.T5ForConditionalGeneration)
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "</s>"
    assert tokenizer.decode([0, 1, 5], skip_special_tokens=True) == tokenizer.decode([5])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_genplug_generate_on_the_checkpoint(checkpoints, tmp_path, name):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "genplug", "generate", "--model", str(checkpoints[name]), "--file", str(prompts),
         "--max-new-tokens", "6", "--json"],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    tokens, logprobs = _reference(checkpoints[name], PROMPTS, 6)
    assert [row["prompt"] for row in rows] == PROMPTS
    for index, row in enumerate(rows):
        assert row["token_ids"] == tokens[index].tolist()
        assert row["scores"] == pytest.approx(logprobs[index].tolist(), abs=2e-5)
        assert isinstance(row["text"], str)
    if name != "t5":
        return
    # one prompt streams its text; an encoder-decoder model's output does not contain the prompt, so
    # the CLI echoes it itself
    single = subprocess.run(
        [sys.executable, "-m", "genplug", "generate", "--model", str(checkpoints[name]), PROMPTS[0],
         "--max-new-tokens", "3", "--do-sample", "--seed", "1"],
        capture_output=True, text=True, timeout=240,
    )
    assert single.returncode == 0, single.stderr
    assert single.stdout.startswith(PROMPTS[0])
