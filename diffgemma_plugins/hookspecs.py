"""Hook specifications of the ``diffgemma`` plugin project.

Every hook is called with keyword arguments only, and every argument is always passed. An
implementation may accept fewer arguments than its spec names (pluggy's opt-in arguments), so
specs can grow without breaking plugins. Spec parameters have no default values on purpose: pluggy
versions disagree on how defaults are applied.

Write implementations with :data:`hookimpl`::

    from diffgemma_plugins import hookimpl

    @hookimpl
    def diffgemma_register_validators(register):
        register(MyValidator())
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from diffgemma_engine.api.validation import (
        BlockView,
        RepairAttempt,
        RepairDecision,
        RequestInfo,
        ValidationReport,
    )

    from .validator_registry import ValidatorRegistrar

PROJECT_NAME = "diffgemma"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ---- registration --------------------------------------------------------------------------------


@hookspec
def diffgemma_register_validators(register: ValidatorRegistrar) -> None:
    """Hand the plugin's validators to diffgemma.

    Call ``register(validator)`` once per validator. A validator is any object with ``name: str`` and
    ``validate(block, ctx) -> Iterable[Violation] | None``; optional attributes are ``stage``,
    ``cost``, ``default_enabled``, ``scope``, ``parse_options`` and ``on_commit`` (see
    :class:`~diffgemma_plugins.validator_registry.ValidatorRegistrar`). Plain functions are accepted with
    ``register(fn, name="acme.thing")``.

    :param register: the registrar; raises
        :class:`~diffgemma_plugins.ValidatorRegistrationError` for a bad object or a duplicate
        name (pass ``replaces="builtin.x"`` to take over an existing validator's place).
    :return: nothing; the return value is ignored.

    When it is called: once per plugin manager, after every plugin is loaded and again after a plugin
    is registered or unregistered, never per request. diffgemma calls each implementation directly
    (not through hook wrappers) so that every validator is attributed to the plugin that registered it.
    """


# ---- repair policy (firstresult: the first non-None result wins; the built-ins are trylast) --------


@hookspec(firstresult=True)
def diffgemma_repair_decision(
    block: BlockView,
    report: ValidationReport,
    attempts: tuple[RepairAttempt, ...],
    request: RequestInfo,
) -> RepairDecision | None:
    """Decide what happens to a block whose validation report did not pass.

    Stops at the first non-None result. The built-in implementation (``trylast``) is the
    escalation ladder: give up on FATAL or non-repairable violations; repair up to
    ``max_repairs`` times; regenerate up to ``max_regenerations`` times with more conservative
    sampling; then give up. A request's ``repair_policy`` option takes part in this call as an extra
    implementation that runs before every normal one.

    :param block: the candidate block that failed.
    :param report: what the validators found in it.
    :param attempts: the repairs and regenerations already tried on this block, oldest first.
    :param request: the request the block belongs to; its ``validator_options`` hold the budgets.
    :return: a :class:`~diffgemma_engine.api.validation.RepairDecision`, or ``None`` to defer to the
        next implementation. A ``REPAIR`` without positions gets them from
        :func:`diffgemma_select_renoise_positions`. The checker enforces the request's budgets on
        whatever is returned: a repair beyond ``max_repairs`` or over ``max_repair_fraction`` of the
        canvas becomes a regeneration (or a give-up), and nothing is tried once the request's
        step budget is spent.

    When it is called: by the engine's validation window, once per failed attempt, before anything
    is committed.
    """


@hookspec(firstresult=True)
def diffgemma_select_renoise_positions(
    block: BlockView,
    report: ValidationReport,
    attempts: tuple[RepairAttempt, ...],
    request: RequestInfo,
) -> tuple[int, ...] | None:
    """Choose the canvas positions a repair renoises; every other position stays frozen.

    Stops at the first non-None result. The built-in implementation (``trylast``) takes the union
    of the failing violations' spans dilated by 2 tokens (8 on a second repair) plus the
    highest-entropy positions on the same lines; a premature EOS renoises from the EOS to the end of
    the canvas.

    :param block: the candidate block that failed.
    :param report: what the validators found in it.
    :param attempts: the repairs and regenerations already tried on this block, oldest first.
    :param request: the request the block belongs to.
    :return: canvas positions in ``[0, block.canvas_length)``, or ``None`` to defer. An empty
        result means "nothing sensible to renoise" and makes the checker escalate.

    When it is called: right after :func:`diffgemma_repair_decision` returned a ``REPAIR`` without
    positions.
    """


# ---- observation (return values are ignored) ------------------------------------------------------


@hookspec
def diffgemma_block_validated(
    block: BlockView, report: ValidationReport, attempt: int, request: RequestInfo
) -> None:
    """Observe one validation pass, passed or not (metrics, logging, tracing).

    :param block: the candidate block that was checked.
    :param report: the validators' findings, which validators ran, crashed, and their timings.
    :param attempt: ``block.attempt``: 0 for the first denoise, 1.. for repairs and regenerations.
    :param request: the request the block belongs to.
    :return: nothing; the return value is ignored.

    When it is called: after every check of every attempt, before the policy decides anything. An
    exception raised here fails the request.
    """


@hookspec
def diffgemma_block_committed(block: BlockView, report: ValidationReport, request: RequestInfo) -> None:
    """Observe a block that is being committed (its text becomes part of the response).

    :param block: the attempt that is committed.
    :param report: its validation report (failing only when a policy chose ``ACCEPT``).
    :param request: the request the block belongs to.
    :return: nothing; the return value is ignored.

    When it is called: once per committed block, after the validators' ``on_commit`` ran.
    """


@hookspec
def diffgemma_validation_exhausted(
    block: BlockView,
    report: ValidationReport,
    attempts: tuple[RepairAttempt, ...],
    request: RequestInfo,
) -> None:
    """Observe a block the policy gave up on.

    :param block: the last candidate.
    :param report: its validation report.
    :param attempts: every repair and regeneration tried on this block.
    :param request: the request the block belongs to.
    :return: nothing; the return value is ignored.

    When it is called: once, right before the engine applies the request's ``on_exhausted``
    (raise, return the flagged candidate, or truncate).
    """
