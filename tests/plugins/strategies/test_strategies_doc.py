"""docs/strategies.md stays true: its plugin example runs as written."""

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "strategies.md"


def test_the_adding_a_strategy_example_runs():
    pytest.importorskip("transformers")
    section = DOC.read_text().split("## Adding a strategy", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {"__name__": "strategies_doc_example"}
    exec(compile(code, str(DOC), "exec"), namespace)  # the example asserts its own result
    assert "greedy_no_repeat" in namespace["pm"].registries.strategies
