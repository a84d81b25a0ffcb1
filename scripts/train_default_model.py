"""Train genplug's embedded default model: a ~3M-parameter Llama that writes short children's stories.

Everything comes from the seed, nothing is downloaded: the corpus is drawn from the story grammar in
``story_grammar.py``, a byte-level BPE tokenizer is trained on it with the ``tokenizers`` library, and
a native Llama model is trained on the tokenized corpus (AdamW, linear warm-up then cosine decay) on
CPU. The result is written in transformers' layout (loadable by ``AutoModelForCausalLM`` and
``AutoTokenizer``) together with ``training_log.json`` (step -> loss).

The same seed gives the same corpus and a byte-identical tokenizer.json; with the same thread count
the loss curve repeats exactly (deterministic CPU kernels), and across thread counts to float noise.
With the defaults this takes about 7 minutes on 2 threads of a current server CPU.

    python scripts/train_default_model.py --seed 0 --steps 1500 --out core/assets/default_model
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import story_grammar  # noqa: E402  (a sibling module, not an installed package)

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "core", "assets", "default_model")
MODEL_SHAPE = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=512)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500, help="length of the learning-rate schedule")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many steps of the --steps schedule (checks reproducibility cheaply)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--stories", type=int, default=20000, help="stories in the corpus")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- data


def train_tokenizer(corpus, vocab_size):
    """A byte-level BPE whose template puts BOS in front of every encoded text, as Llama tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


def token_stream(tokenizer, corpus):
    """All stories as one tensor: ``<s> story </s> <s> story </s> ...``."""
    eos_id = tokenizer.token_to_id(EOS)
    ids = []
    for encoding in tokenizer.encode_batch(corpus):
        ids.extend(encoding.ids)
        ids.append(eos_id)
    return torch.tensor(ids, dtype=torch.long)


def batches(stream, batch_size, seq_len, generator):
    """Endless random windows of the stream: inputs and next-token targets, ``[batch, seq_len]`` each."""
    offsets = torch.arange(seq_len + 1)
    while True:
        starts = torch.randint(0, stream.numel() - seq_len - 1, (batch_size, 1), generator=generator)
        window = stream[starts + offsets]
        yield window[:, :-1], window[:, 1:]


# ---------------------------------------------------------------------------------------------- model


def build_model(vocab_size, special_ids, seed):
    from genplug.plugins.models.llama.config import NativeLlamaConfig
    from genplug.plugins.models.llama.modeling import NativeLlamaForCausalLM

    config = NativeLlamaConfig(
        model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=vocab_size, head_dim=64,
        tie_word_embeddings=True, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        **special_ids, **MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    model = NativeLlamaForCausalLM(config)
    # GPT-2 style init: small normal weights, residual outputs scaled down by depth.
    residual_std = 0.02 / math.sqrt(2 * config.num_hidden_layers)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
                continue
            std = residual_std if name.endswith(("o_proj.weight_t", "down_proj.weight_t")) else 0.02
            # Matrices are drawn in transformers' [out, in] order, so the draw does not depend on the
            # native model's storage layout.
            drawn = torch.empty(param.shape[::-1]).normal_(0.0, std)
            param.copy_(drawn.t() if name.endswith("weight_t") else drawn)
    return model


def learning_rate(step, args):
    """Linear warm-up to ``lr``, then cosine decay to a tenth of it at ``--steps``."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, data, args):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    losses = {}
    model.train()
    started = time.time()
    last = min(args.steps, args.stop_after or args.steps)
    for step in range(last):
        inputs, targets = next(data)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        logits = model(input_ids=inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses[step + 1] = round(loss.item(), 6)
        if (step + 1) % 50 == 0 or step + 1 == last:
            print(f"step {step + 1}/{last}  loss {loss.item():.4f}  lr {learning_rate(step, args):.2e}  "
                  f"{time.time() - started:.0f}s", flush=True)
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------- output


def save(model, tokenizer, losses, args, seconds):
    from genplug.plugins.models.llama.loader import save_model
    from genplug.plugins.models.llama.tokenizer import NativeTokenizer

    os.makedirs(args.out, exist_ok=True)
    special = {"bos_token_id": tokenizer.token_to_id(BOS), "eos_token_id": tokenizer.token_to_id(EOS),
               "pad_token_id": tokenizer.token_to_id(PAD)}
    save_model(model, args.out, generation_config=dict(special, max_new_tokens=200))
    NativeTokenizer(tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                    model_max_length=MODEL_SHAPE["max_position_embeddings"]).save_pretrained(args.out)
    log = {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len,
           "lr": args.lr, "warmup": args.warmup, "stories": args.stories, "threads": args.threads,
           "torch": torch.__version__, "seconds": round(seconds),
           "loss": {str(step): loss for step, loss in losses.items()}}
    with open(os.path.join(args.out, "training_log.json"), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(log, indent=1) + "\n")
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(MODEL_CARD.format(
            params=sum(p.numel() for p in model.parameters()) / 1e6, vocab=model.config.vocab_size,
            steps=len(losses), schedule=args.steps, tokens=len(losses) * args.batch_size * args.seq_len / 1e6,
            loss=losses[len(losses)], seed=args.seed, minutes=seconds / 60, threads=args.threads,
        ))


MODEL_CARD = """# genplug's default model

A {params:.1f}M-parameter Llama (4 layers, hidden size 256, 4 query / 2 key-value heads, vocabulary
{vocab}, context 512) that writes short children's stories. It is trained from scratch by
`scripts/train_default_model.py --seed {seed}` on stories drawn from the grammar in
`scripts/story_grammar.py`: {steps} steps of a {schedule}-step schedule, {tokens:.2f}M tokens, final
training loss {loss:.3f} ({minutes:.1f} minutes on {threads} CPU threads). It knows nothing outside
that grammar; it exists so that genplug runs, and its tests pass, without downloading anything.

Files are in transformers' layout: `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load this directory, as does `genplug.load_model`.
`training_log.json` holds the loss at every step.
"""


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    started = time.time()
    corpus = list(story_grammar.stories(args.seed, args.stories))
    tokenizer = train_tokenizer(corpus, args.vocab_size)
    stream = token_stream(tokenizer, corpus)
    print(f"{len(corpus)} stories, {stream.numel()} tokens, vocabulary {tokenizer.get_vocab_size()} "
          f"({time.time() - started:.0f}s)", flush=True)
    vocab_size = 64 * math.ceil(tokenizer.get_vocab_size() / 64)
    special = {"bos_token_id": tokenizer.token_to_id(BOS), "eos_token_id": tokenizer.token_to_id(EOS),
               "pad_token_id": tokenizer.token_to_id(PAD)}
    model = build_model(vocab_size, special, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    losses = train(model, batches(stream, args.batch_size, args.seq_len, generator), args)
    save(model, tokenizer, losses, args, time.time() - started)
    print(f"saved to {args.out} ({time.time() - started:.0f}s in all)", flush=True)


if __name__ == "__main__":
    main()
