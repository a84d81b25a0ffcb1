"""``genplug generate``: generate text with the embedded default model or any local checkpoint."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from .options import add_config_options, load_config, parse_sets

def register(sub) -> None:
    parser = sub.add_parser("generate", help="generate text from a prompt")
    parser.add_argument("prompt", nargs="?", help="the prompt; '-' or nothing reads standard input")
    parser.add_argument("--file", metavar="FILE", help="a file of prompts, one per line, generated in batches")
    parser.add_argument("--model", metavar="DIR", help="a local checkpoint directory (default: the embedded model)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--do-sample", action="store_true", default=None)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--num-beams", type=int)
    parser.add_argument("--seed", type=int, help="seed torch's random generator (sampling)")
    parser.add_argument("--cache", metavar="BACKEND", help="cache_implementation, e.g. dynamic, static, quantized")
    parser.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    add_config_options(parser)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch with --file")
    parser.add_argument("--json", action="store_true", help="print text, token ids, scores and timing as JSON")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16")
    parser.set_defaults(run=run)


def _overrides(args) -> dict:
    values = parse_sets(args.set)
    flags = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample, "temperature": args.temperature,
             "top_k": args.top_k, "top_p": args.top_p, "num_beams": args.num_beams,
             "cache_implementation": args.cache, "stop_strings": args.stop}
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def _prompts(args) -> List[str]:
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise OSError(f"--file {args.file}: no such file")
        prompts = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"--file {args.file} holds no prompts")
        return prompts
    if args.prompt is None or args.prompt == "-":
        return [sys.stdin.read().rstrip("\n")]
    return [args.prompt]


def load(model_dir: Optional[str], device: str, dtype: Optional[str]):
    """(model, tokenizer) from the first model-loader plugin that claims the directory."""
    from genplug.loading import load_model

    return load_model(model_dir, device=device, dtype=dtype)


def run(args) -> int:
    import torch

    import genplug

    overrides = _overrides(args)
    config = load_config(args.config, overrides)
    prompts = _prompts(args)
    model, tokenizer = load(args.model, args.device, args.dtype)
    if tokenizer is None:
        raise OSError("the checkpoint has no tokenizer.json: genplug generate needs one to read text prompts")
    if args.seed is not None:
        torch.manual_seed(args.seed)
    stream = not args.json and len(prompts) == 1 and (config.num_beams or 1) == 1
    # an encoder-decoder model's output starts at the decoder start token, not at the prompt
    encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    results = []
    batches = [prompts[i:i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]
    progress = None
    if len(batches) > 1 and not args.json:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task("generating", total=len(prompts))
    try:
        for batch in batches:
            encoded = tokenizer(batch, padding=True, return_tensors="pt")
            input_ids = encoded["input_ids"].to(args.device)
            context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
            if isinstance(context, int) and input_ids.shape[1] >= context:
                raise ValueError(f"the prompt is {input_ids.shape[1]} tokens long but the model's context is "
                                 f"{context} tokens; shorten the prompt")
            attention_mask = encoded["attention_mask"].to(args.device)
            timer = _Timer()
            streamer = _Streamer(tokenizer, timer, echo=stream, prompt=batch[0] if encoder_decoder else None)
            started = time.perf_counter()
            out = genplug.generate(model, input_ids, generation_config=config, attention_mask=attention_mask,
                                   tokenizer=tokenizer, streamer=streamer if (config.num_beams or 1) == 1 else None,
                                   return_dict_in_generate=True, output_scores=args.json)
            total = time.perf_counter() - started
            if stream:
                print(flush=True)
            results.extend(_describe(tokenizer, batch, input_ids, out, timer, started, total, args.json,
                                     output_prompt_len=1 if encoder_decoder else input_ids.shape[1]))
            if progress is not None:
                progress.advance(task, len(batch))
    finally:
        if progress is not None:
            progress.stop()
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    elif not stream:
        for item in results:
            print(item["prompt"] + item["text"])
    return 0


class _Timer:
    first_token_at: Optional[float] = None


class _Streamer:
    """Prints new text as it comes (single prompt) and records when the first new token arrived."""

    def __init__(self, tokenizer, timer: _Timer, echo: bool, prompt: Optional[str] = None):
        """``prompt``: the prompt text of an encoder-decoder model, echoed as it is (the model's output
        starts from the decoder start token instead of the prompt)."""
        from genplug.streamers import TextStreamer

        self.timer = timer
        self.text = None
        if echo and prompt is not None:
            print(prompt, end="", flush=True)
            self.text = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        elif echo:
            self.text = TextStreamer(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self.seen_prompt = False

    def put(self, value):
        if self.seen_prompt and self.timer.first_token_at is None:
            self.timer.first_token_at = time.perf_counter()
        self.seen_prompt = True
        if self.text is not None:
            self.text.put(value)

    def end(self):
        if self.text is not None:
            self.text.end()


def _describe(tokenizer, prompts, input_ids, out, timer, started, total, with_scores, output_prompt_len=None) -> list:
    """``output_prompt_len``: where the new tokens start in ``out.sequences`` (1 for encoder-decoder models)."""
    import genplug

    new = out.sequences[:, input_ids.shape[1] if output_prompt_len is None else output_prompt_len:]
    rows = []
    first = (timer.first_token_at or (started + total)) - started
    decode_time = max(total - first, 1e-9)
    logprobs = None
    if with_scores and out.scores:
        beam_indices = getattr(out, "beam_indices", None)
        logprobs = genplug.compute_transition_scores(out.sequences, out.scores, beam_indices, normalize_logits=True)
    for i, prompt in enumerate(prompts):
        ids = new[i].tolist()
        row = {"prompt": prompt, "text": tokenizer.decode(ids, skip_special_tokens=True), "token_ids": ids}
        if logprobs is not None:
            row["scores"] = [round(float(x), 5) for x in logprobs[i].tolist()]
        row["timing"] = {
            "prefill_tokens_per_s": round(input_ids.numel() / max(first, 1e-9), 1),
            "decode_tokens_per_s": round(max(new.shape[1] - 1, 0) * len(prompts) / decode_time, 1),
            "seconds": round(total, 4),
        }
        rows.append(row)
    return rows
