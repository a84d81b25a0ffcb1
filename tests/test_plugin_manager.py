"""The plugin manager: discovery through entry points, blocking, broken plugins, registries."""

from importlib import metadata

import pytest

import genplug
from genplug.errors import PluginError
from genplug.plugin_manager import new_plugin_manager, use_plugin_manager, get_plugin_manager


class StrategyPlugin:
    @genplug.hookimpl
    def genplug_register_strategies(self, register):
        register("my_strategy", lambda *a, **k: None, requires=frozenset())


class ClashingPlugin:
    @genplug.hookimpl
    def genplug_register_strategies(self, register):
        register("greedy_search", lambda *a, **k: None)


class MisspeltPlugin:
    @genplug.hookimpl
    def genplug_register_strategys(self, register):  # misspelt on purpose
        pass


def test_builtin_plugins_come_from_entry_points(pm):
    names = {info.name for info in pm.plugin_list()}
    assert {"greedy", "sample", "mode_rules"} <= names
    for info in pm.plugin_list():
        if info.name in ("greedy", "sample"):
            assert info.builtin and info.distribution == "genplug" and info.status == "loaded"
    assert "greedy_search" in pm.registries.strategies
    assert pm.registries.strategies["greedy_search"].provider.startswith("greedy (genplug ")


def test_in_process_plugin_registers_and_is_listed():
    pm = new_plugin_manager(autoload=False, plugins=[StrategyPlugin()])
    entry = pm.registries.strategies.lookup("my_strategy")
    assert entry.plugin != "greedy"
    listed = {i.name: i for i in pm.plugin_list()}
    assert any("my_strategy" in i.provides.get("strategies", []) for i in listed.values())


def test_name_clash_names_both_providers():
    pm = new_plugin_manager(autoload=False, plugins=[ClashingPlugin()])
    with pytest.raises(PluginError) as err:
        pm.registries
    message = str(err.value)
    assert "greedy_search" in message and "greedy (genplug" in message and "in-process" in message


def test_misspelt_hook_fails_loudly():
    pm = new_plugin_manager(autoload=False)
    pm.register(MisspeltPlugin())
    with pytest.raises(Exception, match="genplug_register_strategys"):
        pm.check_pending()


def test_unknown_registry_name_lists_known_and_suggests(pm):
    with pytest.raises(PluginError) as err:
        pm.registries.strategies.lookup("greedy_serch")
    assert "Did you mean 'greedy_search'" in str(err.value)
    assert "sample (sample (genplug" in str(err.value)


def test_blocked_plugin_is_not_loaded_and_listed_as_blocked():
    pm = new_plugin_manager(disabled=["sample"], autoload=False)
    info = {i.name: i for i in pm.plugin_list()}["sample"]
    assert info.status == "blocked"
    assert "sample" not in pm.registries.strategies
    with pytest.raises(PluginError, match="plugin sample provides it but is blocked"):
        pm.registries.strategies.lookup("sample")


def test_env_var_blocks(monkeypatch):
    monkeypatch.setenv("GENPLUG_DISABLE_PLUGINS", "sample, greedy")
    pm = new_plugin_manager(autoload=False)
    statuses = {i.name: i.status for i in pm.plugin_list()}
    assert statuses["sample"] == statuses["greedy"] == "blocked"


def _with_fake_entry_points(monkeypatch, extra):
    real = metadata.entry_points

    def fake(**kwargs):
        found = list(real(**kwargs))
        if kwargs.get("group") == "genplug":
            found += extra
        return found

    monkeypatch.setattr(metadata, "entry_points", fake)


def test_broken_plugin_is_skipped_with_warning(monkeypatch):
    _with_fake_entry_points(monkeypatch, [metadata.EntryPoint("ghost", "genplug_no_such_module_xyz", "genplug")])
    with pytest.warns(RuntimeWarning, match="ghost"):
        pm = new_plugin_manager(autoload=True)
    info = {i.name: i for i in pm.plugin_list()}["ghost"]
    assert info.status == "broken" and "genplug_no_such_module_xyz" in info.error
    assert "greedy_search" in pm.registries.strategies  # the rest still works


def test_autoload_off_skips_third_party(monkeypatch):
    _with_fake_entry_points(monkeypatch, [metadata.EntryPoint("json_plugin", "json", "genplug")])
    pm = new_plugin_manager(autoload=False)
    assert {i.name: i for i in pm.plugin_list()}["json_plugin"].status == "not autoloaded"
    monkeypatch.setenv("GENPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = new_plugin_manager()
    assert {i.name: i for i in pm.plugin_list()}["json_plugin"].status == "not autoloaded"


def test_use_plugin_manager_scopes_the_active_manager():
    isolated = new_plugin_manager(autoload=False, plugins=[StrategyPlugin()])
    with use_plugin_manager(isolated):
        assert get_plugin_manager() is isolated
    assert get_plugin_manager() is not isolated


def test_processor_with_unknown_stage_is_refused():
    class BadStage:
        @genplug.hookimpl
        def genplug_register_logits_processors(self, register):
            register("x", lambda c, ctx: None, stage="whenever")

    pm = new_plugin_manager(autoload=False, plugins=[BadStage()])
    with pytest.raises(PluginError, match="stage must be one of"):
        pm.registries


def test_candidate_generator_registry_collects_plugin_entries():
    class Drafts:
        @genplug.hookimpl
        def genplug_register_candidate_generators(self, register):
            register("n_gram_draft", lambda config, context: None, description="test drafter")

    pm = new_plugin_manager(autoload=False, plugins=[Drafts()])
    entry = pm.registries.candidate_generators.lookup("n_gram_draft")
    assert entry.options["description"] == "test drafter" and entry.plugin != "greedy"
