"""Every hook is documented with its signature and implemented by at least one plugin or test."""

import inspect
from pathlib import Path

from genplug import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def _hooks():
    return {name: func for name, func in vars(hookspecs).items() if name.startswith("genplug_")}


def test_every_hook_is_in_the_architecture_doc_with_its_signature():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for name, func in _hooks().items():
        signature = f"{name}({', '.join(inspect.signature(func).parameters)})"
        assert signature in doc, f"docs/architecture.md lacks `{signature}`"


def test_every_hook_has_a_docstring_and_an_implementation_somewhere():
    sources = "\n".join(p.read_text() for folder in ("plugins", "tests", "contrib")
                        for p in (ROOT / folder).rglob("*.py"))
    for name, func in _hooks().items():
        assert func.__doc__ and len(func.__doc__.strip()) > 40, f"{name} needs a docstring"
        if name == "genplug_addhooks":
            continue  # historic hook for third parties adding hookspecs; nothing built in needs it
        assert f"def {name}(" in sources, f"no plugin or test implements {name}"
