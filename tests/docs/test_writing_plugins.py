"""docs/writing-plugins.md stays true: its snippets run and make a working plugin."""

import re
import types
from pathlib import Path

import torch

import genplug
from helpers.tiny_lm import TinyCausalLM

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-plugins.md"


def test_tutorial_snippets_build_a_plugin_that_works():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    plugin = types.ModuleType("tutorial_plugin")
    for block in blocks[:3]:  # processor, config field, registration (the last block needs a real model)
        exec(compile(block, str(DOC), "exec"), plugin.__dict__)
    pm = genplug.new_plugin_manager(autoload=False, plugins=[plugin])
    assert "top_n_sigma" in pm.registries.logits_processors and "top_n_sigma" in pm.registries.config_fields
    model = TinyCausalLM(vocab_size=64, seed=4)
    ids = torch.tensor([[5, 6, 7]])
    out = genplug.generate(model, ids, do_sample=True, top_k=0, top_n_sigma=0.5, max_new_tokens=5, eos_token_id=None,
                           return_dict_in_generate=True, output_scores=True, plugin_manager=pm)
    assert all(int(torch.isfinite(s).sum()) < 64 for s in out.scores)
