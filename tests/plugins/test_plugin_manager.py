"""The plugin manager: built-ins, entry-point loading, the environment knobs, broken plugins, tracing."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
import uuid
from importlib import metadata

import pytest

from diffgemma_engine.api.validation import RepairAction
from diffgemma_plugins import PluginLoadError, get_plugin_manager, list_plugins, make_checker_factory, make_plugin_manager
from diffgemma_plugins import manager as manager_module
from diffgemma_plugins.checker import make_checker_factory as checker_factory_function
from diffgemma_plugins.testing import make_block, make_request

GOOD_PLUGIN = """
from diffgemma_plugins import hookimpl

class Loud:
    name = "fake.loud"
    default_enabled = False

    def validate(self, block, ctx):
        return None

@hookimpl
def diffgemma_register_validators(register):
    register(Loud())

@hookimpl
def diffgemma_block_validated(block):
    pass
"""


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Install a fake distribution with a ``diffgemma`` entry point into a directory on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules = []

    def install(source, *, entry_point="fake", dist="diffgemma-fake", version="1.2.3"):
        module = f"diffgemma_fake_{uuid.uuid4().hex[:8]}"
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[diffgemma]\n{entry_point} = {module}\n")
        modules.append(module)
        return module

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def plugin_names(pm):
    return [name for name, plugin in pm.list_name_plugin() if plugin is not None]


def test_builtins_are_registered_first_and_every_hook_has_a_spec(pm):
    assert plugin_names(pm) == ["builtin_validators", "builtin_policy"]
    pm.check_pending()
    assert len(pm.validator_registry()) == 12


def test_an_installed_plugin_is_loaded_and_listed_with_its_distribution(install):
    install(GOOD_PLUGIN)
    pm = make_plugin_manager(environ={})
    assert plugin_names(pm) == ["builtin_validators", "builtin_policy", "fake"]
    info = {plugin.name: plugin for plugin in list_plugins(pm)}["fake"]
    assert (info.distribution, info.version) == ("diffgemma-fake", "1.2.3")
    assert info.hooks == ("diffgemma_block_validated", "diffgemma_register_validators")
    assert info.validators == ("fake.loud",)
    builtin = {plugin.name: plugin for plugin in list_plugins(pm)}["builtin_policy"]
    assert builtin.hooks == ("diffgemma_repair_decision", "diffgemma_select_renoise_positions")


@pytest.mark.parametrize(
    ("environ", "autoload", "loaded"),
    [
        ({}, None, True),
        ({"DIFFGEMMA_DISABLE_PLUGIN_AUTOLOAD": "1"}, None, False),
        ({"DIFFGEMMA_DISABLE_PLUGIN_AUTOLOAD": "0"}, None, True),
        ({"DIFFGEMMA_DISABLE_PLUGIN_AUTOLOAD": "1"}, True, True),
        ({"DIFFGEMMA_DISABLE_PLUGIN_AUTOLOAD": "1", "DIFFGEMMA_LOAD_PLUGINS": "fake"}, None, True),
        ({"DIFFGEMMA_LOAD_PLUGINS": "diffgemma_fake"}, None, True),  # a distribution name works too
        ({"DIFFGEMMA_LOAD_PLUGINS": ""}, None, False),
        ({"DIFFGEMMA_LOAD_PLUGINS": "fake"}, False, False),
        ({"DIFFGEMMA_DISABLE_PLUGINS": "fake"}, None, False),
        ({"DIFFGEMMA_DISABLE_PLUGINS": "other, fake", "DIFFGEMMA_LOAD_PLUGINS": "fake"}, None, False),
    ],
)
def test_environment_knobs_decide_what_loads(install, environ, autoload, loaded):
    install(GOOD_PLUGIN)
    pm = make_plugin_manager(autoload=autoload, environ=environ)
    assert pm.has_plugin("fake") is loaded
    assert ("fake.loud" in pm.validator_registry()) is loaded


def test_the_allow_list_loads_only_what_it_names(install):
    install(GOOD_PLUGIN, entry_point="first", dist="diffgemma-first")
    install(GOOD_PLUGIN.replace("fake.loud", "fake.quiet"), entry_point="second", dist="diffgemma-second")
    pm = make_plugin_manager(environ={"DIFFGEMMA_LOAD_PLUGINS": "second"})
    assert plugin_names(pm)[2:] == ["second"]


def test_an_allow_listed_plugin_that_is_not_installed_is_an_error():
    with pytest.raises(PluginLoadError, match="not installed") as error:
        make_plugin_manager(environ={"DIFFGEMMA_LOAD_PLUGINS": "diffgemma_missing_plugin"})
    assert error.value.plugin == "diffgemma_missing_plugin"


def test_builtins_can_be_disabled_too():
    pm = make_plugin_manager(autoload=False, environ={"DIFFGEMMA_DISABLE_PLUGINS": "builtin_policy"})
    assert plugin_names(pm) == ["builtin_validators"]
    checker = make_checker_factory(pm)(make_request(["builtin.stutter"]))
    block = make_block("the the")
    decision = checker.decide(block, checker.check(block), ())
    assert decision.action is RepairAction.GIVE_UP and "no repair policy" in decision.reason
    assert len(make_plugin_manager(autoload=False, environ={"DIFFGEMMA_DISABLE_PLUGINS": "builtin_validators"}).validator_registry()) == 0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise ImportError('no such dependency: acme_sdk')\n", "acme_sdk"),
        ("from diffgemma_plugins import hookimpl\n@hookimpl\ndef diffgemma_not_a_hook():\n    pass\n", "unknown hook"),
        (
            "from diffgemma_plugins import hookimpl\n@hookimpl\ndef diffgemma_block_committed(block, ctx):\n    pass\n",
            "ctx",
        ),
        (
            "from diffgemma_plugins import hookimpl\n@hookimpl\ndef diffgemma_register_validators(register):\n"
            "    register(object())\n",
            "validator name",
        ),
        (
            "from diffgemma_plugins import hookimpl\n@hookimpl\ndef diffgemma_register_validators(register):\n"
            "    raise RuntimeError('cannot reach the licence server')\n",
            "licence server",
        ),
    ],
)
def test_a_broken_plugin_fails_loading_with_its_name(install, source, message):
    install(source, entry_point="broken", dist="diffgemma-broken")
    with pytest.raises(PluginLoadError, match=message) as error:
        make_plugin_manager(environ={})
    assert error.value.plugin == "broken"
    assert "broken" in str(error.value)


def test_tracing_writes_hook_calls_to_stderr(capsys):
    quiet = make_plugin_manager(autoload=False, environ={"DIFFGEMMA_TRACE_PLUGINS": "0"})
    quiet.hook.diffgemma_block_committed(block=None, report=None, request=None)
    assert capsys.readouterr().err == ""
    traced = make_plugin_manager(autoload=False, environ={"DIFFGEMMA_TRACE_PLUGINS": "1"})
    checker = make_checker_factory(traced)(make_request(["builtin.stutter"]))
    block = make_block("the the")
    checker.decide(block, checker.check(block), ())
    err = capsys.readouterr().err
    assert "diffgemma: diffgemma_repair_decision -> [builtin_policy]" in err
    assert "returned RepairDecision(action=<RepairAction.REPAIR" in err


def test_managers_from_make_plugin_manager_are_independent(pm):
    other = make_plugin_manager(autoload=False, environ={})
    pm.register(object(), name="only_here")
    assert pm is not other and not other.has_plugin("only_here")


def test_the_process_wide_manager_is_created_once_even_under_concurrency(monkeypatch):
    created = []

    def slow_make():
        time.sleep(0.05)
        created.append(object())
        return created[-1]

    monkeypatch.setattr(manager_module, "make_plugin_manager", slow_make)
    holder = manager_module._ProcessPluginManager()
    results = []
    threads = [threading.Thread(target=lambda: results.append(holder.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 1 and all(result is created[0] for result in results)


def test_get_plugin_manager_and_the_zero_argument_factory_share_one_manager():
    assert get_plugin_manager() is get_plugin_manager()
    assert make_checker_factory().plugin_manager is get_plugin_manager()


def test_the_engine_finds_the_factory_through_its_entry_point():
    points = metadata.entry_points(group="diffgemma.checker_factory", name="default")
    assert [point.value for point in points] == ["diffgemma_plugins.checker:make_checker_factory"], (
        "pyproject.toml must declare [project.entry-points.\"diffgemma.checker_factory\"] "
        'default = "diffgemma_plugins.checker:make_checker_factory" (and the package must be reinstalled)'
    )
    [point] = points
    assert point.load() is checker_factory_function
