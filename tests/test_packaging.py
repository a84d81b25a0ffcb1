"""pyproject.toml lists every package directory and every built-in plugin module."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_directory_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for top, prefix in (("core", "genplug"), ("plugins", "genplug.plugins")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([prefix, *rel.parts]) if rel.parts else prefix)
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
    assert listed <= found, f"pyproject.toml lists missing packages: {sorted(listed - found)}"


def test_every_builtin_entry_point_module_exists():
    for name, target in _pyproject()["project"]["entry-points"]["genplug"].items():
        module = target.split(":")[0]
        assert module.startswith("genplug.plugins."), name
        parts = module.split(".")[2:]
        path = ROOT / "plugins" / Path(*parts)
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), f"{name} -> {module}"


def test_every_plugin_module_is_declared():
    declared = {t.split(":")[0] for t in _pyproject()["project"]["entry-points"]["genplug"].values()}
    for module_file in (ROOT / "plugins").rglob("*.py"):
        text = module_file.read_text()
        if "@hookimpl" in text or "@genplug.hookimpl" in text:
            rel = module_file.relative_to(ROOT / "plugins").with_suffix("")
            name = ".".join(["genplug.plugins", *rel.parts]).removesuffix(".__init__")
            assert name in declared, f"{name} has hook implementations but no entry point"


def test_builtin_plugins_load_with_only_the_declared_dependencies():
    """Every built-in plugin loads when packages genplug does not declare (numpy, transformers) are absent."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['numpy'] = None; sys.modules['transformers'] = None\n"
        "import warnings; warnings.simplefilter('error', RuntimeWarning)\n"
        "from genplug.plugin_manager import new_plugin_manager\n"
        "pm = new_plugin_manager(autoload=False)\n"
        "broken = [i.name for i in pm.plugin_list() if i.status == 'broken']\n"
        "assert not broken, broken\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
