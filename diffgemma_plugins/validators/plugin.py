"""The built-in validators plugin (registered first, under the name ``builtin_validators``)."""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..validator_registry import ValidatorRegistrar
from . import BUILTIN_VALIDATORS


@hookimpl
def diffgemma_register_validators(register: ValidatorRegistrar) -> None:
    for validator_class in BUILTIN_VALIDATORS:
        register(validator_class())
