"""Validator registration (attribution, defaults, duplicates, replaces=) and per-request selection."""

from __future__ import annotations

import pytest

from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.api.validation import Violation
from diffgemma_plugins import ValidatorRegistrar, ValidatorRegistrationError, hookimpl
from diffgemma_plugins.validator_registry import FunctionValidator


class Named:
    def __init__(self, name, **attributes):
        self.name = name
        self.__dict__.update(attributes)

    def validate(self, block, ctx):
        return None


class Registers:
    """A plugin registering the given validators (optionally with keyword arguments)."""

    def __init__(self, *validators, **kwargs):
        self.validators, self.kwargs = validators, kwargs

    @hookimpl
    def diffgemma_register_validators(self, register):
        for validator in self.validators:
            register(validator, **self.kwargs)


def test_registered_validators_are_attributed_to_their_plugin(pm):
    pm.register(Registers(Named("acme.one"), Named("acme.two", stage=0)), name="acme")
    registry = pm.validator_registry()
    assert registry.validators["acme.one"].plugin == "acme"
    assert registry.registered_by("acme") == ("acme.two", "acme.one")  # run order: stage 0 first
    assert registry.validators["builtin.stutter"].plugin == "builtin_validators"


def test_missing_attributes_get_defaults_and_keywords_override_them():
    register = ValidatorRegistrar()
    plain = register(Named("a.plain"))
    assert (plain.stage, plain.cost, plain.default_enabled, plain.scope) == (1, 1.0, True, "block")
    custom = register(Named("a.custom", stage=3), stage=0, cost=0.5, default_enabled=False, scope="final")
    assert (custom.stage, custom.cost, custom.default_enabled, custom.scope) == (0, 0.5, False, "final")


def test_plain_functions_need_a_name():
    register = ValidatorRegistrar()

    def no_digits(block, ctx):
        return [Violation("x", "digit", "digit")] if any(c.isdigit() for c in block.text) else None

    registered = register(no_digits, name="acme.no_digits", stage=0)
    assert isinstance(registered.validator, FunctionValidator) and registered.name == "acme.no_digits"
    with pytest.raises(ValidatorRegistrationError, match="name="):
        register(no_digits)


@pytest.mark.parametrize(
    ("validator", "message"),
    [
        (Named("ok", stage=-1), "stage"),
        (Named("ok", stage="0"), "stage"),
        (Named("ok", cost=-2), "cost"),
        (Named("ok", default_enabled="yes"), "default_enabled"),
        (Named("ok", scope="request"), "scope"),
        (Named("default"), "name"),
        (Named("-minus"), "name"),
        (Named(""), "name"),
        (object(), "name"),
        (Named, "instance"),
    ],
)
def test_bad_validators_are_rejected_naming_the_plugin(validator, message):
    register = ValidatorRegistrar().registering_for("acme")
    with pytest.raises(ValidatorRegistrationError, match=message) as error:
        register(validator)
    assert error.value.plugin == "acme"


def test_an_object_without_validate_is_rejected():
    class NoValidate:
        name = "acme.broken"

    with pytest.raises(ValidatorRegistrationError, match="validate"):
        ValidatorRegistrar()(NoValidate())


def test_duplicate_names_are_an_error_naming_both_plugins(pm):
    pm.register(Registers(Named("builtin.stutter")), name="copycat")
    with pytest.raises(ValidatorRegistrationError) as error:
        pm.validator_registry()
    assert error.value.plugin == "copycat"
    assert "builtin_validators" in str(error.value)


def test_replaces_takes_over_a_builtin(pm):
    mine = Named("builtin.stutter", stage=0)
    pm.register(Registers(mine, replaces="builtin.stutter"), name="better_stutter")
    registry = pm.validator_registry()
    assert registry.validators["builtin.stutter"].validator is mine
    assert registry.validators["builtin.stutter"].plugin == "better_stutter"


def test_replaces_under_a_new_name_and_its_errors():
    register = ValidatorRegistrar()
    register(Named("a.old"))
    register(Named("a.new"), replaces="a.old")
    assert register.build().names == ("a.new",)
    register(Named("a.newer"), replaces="a.old")
    with pytest.raises(ValidatorRegistrationError, match="already replaced"):
        register.build()
    lonely = ValidatorRegistrar()
    lonely(Named("a.x"), replaces="a.missing")
    with pytest.raises(ValidatorRegistrationError, match="no plugin registered"):
        lonely.build()


def test_registry_is_collected_again_after_register_and_unregister(pm):
    before = pm.validator_registry()
    assert pm.validator_registry() is before
    pm.register(Registers(Named("acme.late")), name="late")
    assert "acme.late" in pm.validator_registry()
    pm.unregister(name="late")
    assert "acme.late" not in pm.validator_registry()


def test_a_raising_registration_hook_names_its_plugin(pm):
    class Broken:
        @hookimpl
        def diffgemma_register_validators(self, register):
            raise RuntimeError("boom")

    pm.register(Broken(), name="broken")
    with pytest.raises(ValidatorRegistrationError, match="boom") as error:
        pm.validator_registry()
    assert error.value.plugin == "broken"


def test_hookimpls_may_take_no_argument_and_wrappers_are_not_called_for_registration(pm):
    calls = []

    class NoArgs:
        @hookimpl
        def diffgemma_register_validators(self):
            calls.append("noargs")

    class Wrapper:
        @hookimpl(wrapper=True)
        def diffgemma_register_validators(self, register):
            calls.append("wrapper")
            return (yield)

    pm.register(NoArgs(), name="noargs")
    pm.register(Wrapper(), name="wrapper")
    pm.validator_registry()
    assert calls == ["noargs"]


# ---- selection ------------------------------------------------------------------------------------


@pytest.fixture
def registry(pm):
    pm.register(Registers(Named("acme.on", stage=0), Named("acme.off", default_enabled=False)), name="acme")
    return pm.validator_registry()


def names(validators):
    return {v.name for v in validators}


def test_plain_names_select_exactly_those(registry):
    assert names(registry.select(["acme.off", "builtin.json"])) == {"acme.off", "builtin.json"}


def test_default_and_plus_minus(registry):
    defaults = set(registry.defaults)
    assert "acme.on" in defaults and "acme.off" not in defaults
    assert names(registry.select(["default"])) == defaults
    assert names(registry.select(["+acme.off", "-builtin.stutter"])) == (defaults | {"acme.off"}) - {"builtin.stutter"}
    assert names(registry.select(["default", "-acme.on"])) == defaults - {"acme.on"}
    assert names(registry.select(["builtin.json", "+acme.off"])) == {"builtin.json", "acme.off"}
    assert registry.select([]) == ()


def test_selection_comes_back_in_run_order(registry):
    selected = registry.select(["default"])
    assert [v.order for v in selected] == sorted(v.order for v in selected)


@pytest.mark.parametrize("selection", [["acme.nope"], ["+acme.nope"], ["-acme.nope"], [""], ["+"], ["++acme.on"], "default", [3]])
def test_bad_selections_name_the_validators_field(registry, selection):
    with pytest.raises(InvalidRequestError) as error:
        registry.select(selection)
    assert error.value.field == "validators"
