"""Gemma 4's native value syntax for tool calls: reading a value, and checking a value that is still being written.

Values are written like JSON except that object keys are bare and strings are delimited by ``<|"|>``. The
reader also accepts JSON-quoted strings and quoted keys, so a JSON-speaking model is understood too. Shared by
the adapters (which parse calls) and the ``builtin.tool_call`` validator (which checks them block by block).
"""

from __future__ import annotations

import json
import re
from typing import Any

TOOL_OPEN, TOOL_CLOSE = "<|tool>", "<tool|>"
CALL_OPEN, CALL_CLOSE = "<|tool_call>", "<tool_call|>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<|tool_response>", "<tool_response|>"
QUOTE = '<|"|>'

_SCALAR = re.compile(r"[^,}\]]*")


class _Parser:
    """A recursive-descent reader of native (or JSON) values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{what} at offset {self.pos} of {self.text!r}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def expect(self, token: str) -> None:
        self.skip()
        if not self.peek(token):
            raise self.fail(f"expected {token!r}")
        self.pos += len(token)

    def value(self) -> Any:
        self.skip()
        if self.peek("{"):
            return self.object()
        if self.peek("["):
            return self.array()
        if self.peek(QUOTE):
            return self.native_string()
        if self.peek('"'):
            return self.json_string()
        return self.scalar()

    def object(self) -> dict[str, Any]:
        self.expect("{")
        result: dict[str, Any] = {}
        self.skip()
        if self.peek("}"):
            self.pos += 1
            return result
        while True:
            key = self.key()
            self.expect(":")
            result[key] = self.value()
            self.skip()
            if self.peek(","):
                self.pos += 1
                continue
            self.expect("}")
            return result

    def array(self) -> list[Any]:
        self.expect("[")
        result: list[Any] = []
        self.skip()
        if self.peek("]"):
            self.pos += 1
            return result
        while True:
            result.append(self.value())
            self.skip()
            if self.peek(","):
                self.pos += 1
                continue
            self.expect("]")
            return result

    def key(self) -> str:
        self.skip()
        if self.peek(QUOTE):
            return self.native_string()
        if self.peek('"'):
            return self.json_string()
        end = self.text.find(":", self.pos)
        if end == -1:
            if not any(c in self.text[self.pos :] for c in "{}[],"):
                self.pos = len(self.text)  # a key still being written
            raise self.fail("expected a key")
        key = self.text[self.pos : end].strip()
        if not key or any(c in key for c in "{}[],"):
            raise self.fail("expected a key")
        self.pos = end
        return key

    def native_string(self) -> str:
        self.pos += len(QUOTE)
        end = self.text.find(QUOTE, self.pos)
        if end == -1:
            self.pos = len(self.text)  # more text could still close it
            raise self.fail("unterminated string")
        value, self.pos = self.text[self.pos : end], end + len(QUOTE)
        return value

    def json_string(self) -> str:
        try:
            value, end = json.JSONDecoder().raw_decode(self.text, self.pos)
        except ValueError as error:
            if error.args[0].startswith("Unterminated string"):
                self.pos = len(self.text)  # more text could still close it
            raise self.fail(f"bad JSON string ({error.args[0]})") from None
        self.pos = end
        return value

    def scalar(self) -> Any:
        match = _SCALAR.match(self.text, self.pos)
        word = match.group(0).strip() if match else ""
        if not word:
            raise self.fail("expected a value")
        delimiter = match.group(0).find(QUOTE)
        if delimiter != -1:  # `<<|"|>Riga<|"|>`: a bare word running into a string is neither
            self.pos += delimiter
            raise self.fail("a string delimiter inside a bare value")
        self.pos = match.end()
        if word in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[word]
        try:
            return json.loads(word)
        except ValueError:
            return word  # a bare word is read as a string, as Gemma sometimes writes enum values


def parse_value(text: str) -> Any:
    """Parse one native (or JSON) value; raises ``ValueError`` on anything else."""
    parser = _Parser(text)
    value = parser.value()
    parser.skip()
    if parser.pos != len(text):
        raise parser.fail("unexpected trailing text")
    return value


def value_prefix_end(text: str) -> tuple[int | None, int | None]:
    """Read one value at the start of ``text``, which may stop part-way through it.

    Returns ``(end, None)`` when the value is complete (``end``: the offset just after it), ``(None, None)``
    when ``text`` is a prefix of some value, and ``(None, offset)`` with the first offset that no
    continuation can make valid otherwise (lenient like :func:`parse_value`: bare words are strings).
    """
    parser = _Parser(text)
    try:
        parser.value()
    except ValueError:
        return (None, None) if parser.pos >= len(text) else (None, parser.pos)
    return parser.pos, None
