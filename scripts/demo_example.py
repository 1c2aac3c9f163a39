"""The demo corpus's shared pieces: the :class:`Example` every family produces, and small helpers the
families share (a salt-free hash to a unit number, how a JSON value is said in a request, a schema in the
form pydantic writes one, the schema a system turn states)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Example:
    """One chat exchange. ``answers`` lists every right answer (several for "name a fruit").

    The conversation is ``system`` (optional), the user's ``prompt``, then ``history`` (later turns: an
    assistant tool call ``{"role": "assistant", "tool_calls": [[name, args]]}`` and the tool's result
    ``{"role": "tool", "name": ..., "content": ...}``); ``tools`` are the OpenAI-format tools offered.
    :func:`demo_data.chat_messages` renders it exactly as the adapters and the server do."""

    task: str  # "short", "json", "tool", "rag"
    kind: str  # the sub-task: "arithmetic", "opposite", ..., "person", "call", "answer", ...
    prompt: str
    answer: str  # the target text the model is trained on
    answers: tuple[str, ...] = ()
    system: str = ""
    tools: tuple[dict, ...] = ()
    history: tuple[dict, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def example_text(example: Example) -> str:
    """Every string a training example shows the model (turns, target, tools, history), for a search."""
    return "\n".join((example.system, example.prompt, example.answer, json.dumps(example.tools, ensure_ascii=False),
                      json.dumps(example.history, ensure_ascii=False)))  # fmt: skip


def stable_unit(text: str) -> float:
    """A number in [0, 1) from ``text``, the same on every machine and Python (no ``hash()`` salt)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def spoken(value: object) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def pydantic_schema(title: str, fields: Sequence[tuple[str, str, str]], doc: str = "") -> dict:
    """A schema as pydantic writes ``Model.model_json_schema()``: the docstring (if any) as ``description``,
    titles on the object and on the fields, and each field's ``description`` where it has one;
    ``fields`` are (key, JSON type, description or "")."""
    properties = {key: {**({"description": text} if text else {}), "title": key.replace("_", " ").title(), "type": kind}
                  for key, kind, text in fields}  # fmt: skip
    head = {"description": doc} if doc else {}
    return {**head, "properties": properties, "required": [key for key, _, _ in fields], "title": title, "type": "object"}


def stated_schema(example: Example) -> dict | None:
    """The JSON schema the example's system turn opens with (the adapters' schema line), or ``None``."""
    from diffgemma_adapters.formats import SCHEMA_INSTRUCTION

    if not example.system.startswith(SCHEMA_INSTRUCTION):
        return None
    schema, _ = json.JSONDecoder().raw_decode(example.system, len(SCHEMA_INSTRUCTION))
    return schema
