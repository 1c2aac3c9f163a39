"""What kind of server is at the other end, and what it accepts of a request.

A remote backend must send each server only what it honours: vLLM refuses a per-request ``seed`` and any
``temperature`` other than 1.0 for diffusion models (HTTP 400 since vLLM PR #45418) and reads the sampler
settings from the checkpoint's ``generation_config.json``, never from the request; ``diffgemma serve``
takes our sampler fields and a seed; an unknown OpenAI-compatible server gets only standard OpenAI fields.

The kind comes from an explicit ``RemoteEngine(server=...)`` or, when that is ``None``, from the server's
``/v1/models`` listing: ``owned_by`` is ``"diffgemma"`` for ``diffgemma serve`` and ``"vllm"`` for vLLM
(``ModelCard.owned_by`` defaults to ``"vllm"`` in vLLM's OpenAI protocol); anything else is ``"openai"``.

A caller's setting the server cannot honour is never dropped silently: :func:`check_settings` raises
:class:`~diffgemma_engine.api.errors.InvalidRequestError` naming the field, or, with
``on_unsupported="warn"``, emits a :class:`RemoteSettingWarning` (``warnings.warn`` and a log record) and
sends the request without it.
"""

from __future__ import annotations

import enum
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diffgemma_engine.api.errors import InvalidRequestError
from diffgemma_engine.api.params import SAMPLER_FIELDS, SamplingParams

__all__ = ["BODY_SAMPLER_FIELDS", "RemoteSettingWarning", "ServerKind", "ServerRules", "check_settings", "kind_of"]

logger = logging.getLogger("diffgemma_adapters.remote")

BODY_SAMPLER_FIELDS = tuple(name for name in SAMPLER_FIELDS if name != "max_new_tokens")
"""The sampler settings ``diffgemma serve`` takes in a request body as ``extra_body`` fields: the engine's
:data:`~diffgemma_engine.api.params.SAMPLER_FIELDS` but ``max_new_tokens`` (sent as OpenAI's ``max_tokens``)."""


class ServerKind(str, enum.Enum):
    """The kinds of OpenAI-compatible server the remote backend tells apart."""

    DIFFGEMMA = "diffgemma"  # diffgemma serve
    VLLM = "vllm"  # vllm serve (>= 0.24, with DiffusionGemma)
    OPENAI = "openai"  # any other OpenAI-compatible server


@dataclass(frozen=True)
class ServerRules:
    """What a kind of server accepts in a request."""

    kind: ServerKind
    takes_seed: bool
    seeds_every_request: bool  # send a drawn seed when the caller gives none (so result.seed reproduces)
    takes_sampler_fields: bool  # BODY_SAMPLER_FIELDS and adaptive_stopping
    takes_stop_token_ids: bool  # stop_token_ids and ignore_eos (vLLM extensions of the OpenAI API)
    counts_tokens_per_chunk: bool  # stream_options.continuous_usage_stats (a vLLM extension)


RULES = {
    ServerKind.DIFFGEMMA: ServerRules(ServerKind.DIFFGEMMA, takes_seed=True, seeds_every_request=True,
                                      takes_sampler_fields=True,
                                      takes_stop_token_ids=True, counts_tokens_per_chunk=False),
    ServerKind.VLLM: ServerRules(ServerKind.VLLM, takes_seed=False, seeds_every_request=False,
                                 takes_sampler_fields=False,
                                 takes_stop_token_ids=True, counts_tokens_per_chunk=True),
    ServerKind.OPENAI: ServerRules(ServerKind.OPENAI, takes_seed=True, seeds_every_request=False,
                                   takes_sampler_fields=False,
                                   takes_stop_token_ids=False, counts_tokens_per_chunk=False),
}

_OWNERS = {"diffgemma": ServerKind.DIFFGEMMA, "vllm": ServerKind.VLLM}


class RemoteSettingWarning(UserWarning):
    """A request setting the server cannot honour was left out (``RemoteEngine(on_unsupported="warn")``)."""


def server_kind(value: str | ServerKind | None) -> ServerKind | None:
    """``value`` as a :class:`ServerKind` (``None`` stays ``None``: detect it)."""
    if value is None or isinstance(value, ServerKind):
        return value
    try:
        return ServerKind(value)
    except ValueError:
        names = ", ".join(repr(kind.value) for kind in ServerKind)
        raise InvalidRequestError("server", f"must be one of {names} or None, got {value!r}") from None


def kind_of(models: Sequence[Any], model: str | None) -> ServerKind:
    """The kind of server whose ``/v1/models`` entries are ``models``, read from ``owned_by`` (of ``model``'s
    entry when it is listed, else of the first entry)."""
    entries = [entry for entry in models if getattr(entry, "id", None) == model] or list(models[:1])
    owner = getattr(entries[0], "owned_by", None) if entries else None
    return _OWNERS.get(owner, ServerKind.OPENAI) if isinstance(owner, str) else ServerKind.OPENAI


def unhonoured(params: SamplingParams, rules: ServerRules) -> list[tuple[str, str]]:
    """The caller's settings in ``params`` that a server of ``rules`` cannot honour, with why."""
    found: list[tuple[str, str]] = []
    if params.seed is not None and not rules.takes_seed:
        found.append(("seed", "vLLM refuses a per-request seed for diffusion models (HTTP 400, vLLM PR #45418); "
                              "its results are not reproducible per request"))
    if not rules.takes_sampler_fields:
        where = ("vLLM reads the sampler settings from the checkpoint's generation_config.json, not from requests"
                 if rules.kind is ServerKind.VLLM else "an OpenAI-compatible server has no such field")
        for name in BODY_SAMPLER_FIELDS:
            if getattr(params, name) is not None:
                found.append((name, where))
        if not params.adaptive_stopping:
            found.append(("adaptive_stopping", where))
    if not rules.takes_stop_token_ids:
        if params.stop_token_ids:
            found.append(("stop_token_ids", "not an OpenAI API field (vLLM and diffgemma serve take it)"))
        if params.ignore_eos:
            found.append(("ignore_eos", "not an OpenAI API field (vLLM and diffgemma serve take it)"))
    return found


def check_settings(params: SamplingParams, rules: ServerRules, on_unsupported: str, base_url: str) -> None:
    """Raise (``on_unsupported="error"``) or warn (``"warn"``) about settings the server cannot honour."""
    found = unhonoured(params, rules)
    if not found:
        return
    if on_unsupported == "error":
        name, why = found[0]
        raise InvalidRequestError(
            name, f"the {rules.kind.value} server at {base_url} cannot honour it: {why}. Leave it unset, or "
                  "build the RemoteEngine with on_unsupported='warn' to send requests without it")
    for name, why in found:
        message = f"{name} is not sent to the {rules.kind.value} server at {base_url}: {why}"
        logger.warning(message)
        warnings.warn(message, RemoteSettingWarning, stacklevel=4)


def body_fields(
    params: SamplingParams, rules: ServerRules, *, seed: int | None, overrides: Mapping[str, float]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request's fields for a server of ``rules``: ``(top-level keyword arguments, extra_body)``.

    Only what the server accepts: ``seed`` (``None``: none) to servers that take one, our sampler fields (with the
    regeneration's ``overrides``) only to ``diffgemma serve``, ``stop_token_ids`` / ``ignore_eos`` only to
    servers that know them, never a ``temperature``. ``stream_options`` asks for usage, and for a running
    token count on every chunk from servers that give one (block boundaries come from it).
    """
    stream_options: dict[str, Any] = {"include_usage": True}
    if rules.counts_tokens_per_chunk:
        stream_options["continuous_usage_stats"] = True
    top: dict[str, Any] = {"stream": True, "stream_options": stream_options}
    if rules.takes_seed and seed is not None:
        top["seed"] = seed
    extra: dict[str, Any] = {}
    if rules.takes_sampler_fields:
        extra.update({name: getattr(params, name) for name in BODY_SAMPLER_FIELDS if getattr(params, name) is not None})
        if not params.adaptive_stopping:
            extra["adaptive_stopping"] = False
        extra.update(overrides)
    elif overrides:
        logger.debug("regeneration overrides %s not sent: the %s server takes no sampler fields",
                     dict(overrides), rules.kind.value)
    if rules.takes_stop_token_ids:
        if params.stop_token_ids:
            extra["stop_token_ids"] = list(params.stop_token_ids)
        if params.ignore_eos:
            extra["ignore_eos"] = True
    return top, extra
