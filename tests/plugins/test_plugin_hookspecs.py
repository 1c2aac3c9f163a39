"""The hook specification module: names, flags, signatures and documentation."""

from __future__ import annotations

import inspect

import pytest

from diffgemma_plugins import hookimpl, hookspec, hookspecs

HOOKS = {
    "diffgemma_register_validators": False,
    "diffgemma_repair_decision": True,
    "diffgemma_select_renoise_positions": True,
    "diffgemma_block_validated": False,
    "diffgemma_block_committed": False,
    "diffgemma_validation_exhausted": False,
}


def specs():
    return {name: f for name, f in vars(hookspecs).items() if inspect.isfunction(f) and hasattr(f, "diffgemma_spec")}


def test_the_spec_module_defines_exactly_the_documented_hooks_with_their_flags():
    found = specs()
    assert set(found) == set(HOOKS)
    for name, firstresult in HOOKS.items():
        options = getattr(found[name], "diffgemma_spec")
        assert options["firstresult"] is firstresult, name
        assert not options["historic"], name


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_is_typed_documented_and_free_of_defaults(name):
    function = specs()[name]
    signature = inspect.signature(function)
    doc = inspect.getdoc(function) or ""
    assert signature.return_annotation is not inspect.Signature.empty
    for parameter in signature.parameters.values():
        assert parameter.default is inspect.Parameter.empty, parameter
        assert parameter.annotation is not inspect.Parameter.empty, parameter
        assert f":param {parameter.name}:" in doc, parameter
    assert ":return:" in doc and "When it is called:" in doc
    assert ("Stops at the first non-None result" in doc) is HOOKS[name]


def test_markers_belong_to_the_diffgemma_project():
    assert hookspec.project_name == hookimpl.project_name == "diffgemma"
