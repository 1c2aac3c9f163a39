"""Incremental structure scanners: a bracket/fence stack and a JSON prefix recogniser.

Both work character by character on immutable states, so a validator can keep the committed state
in its transactional ``ctx.state`` and scan only each new block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {closer: opener for opener, closer in OPENERS.items()}


@dataclass(frozen=True)
class BracketState:
    """Open brackets (with their absolute character offsets), fence and string state after some text."""

    stack: tuple[tuple[str, int], ...] = ()
    in_fence: bool = False
    quote: str = ""  # the open string delimiter, "" outside strings
    escaped: bool = False
    line_start: bool = True
    ticks: int = 0  # backticks seen at the start of the current line
    consumed: int = 0  # characters scanned so far


@dataclass(frozen=True)
class BracketProblem:
    offset: int  # absolute character offset
    code: str
    message: str


def scan_brackets(state: BracketState, text: str) -> tuple[BracketState, list[BracketProblem]]:
    """Advance ``state`` over ``text``. Strings ("..." everywhere, '...' and `...` in fences) are skipped.

    Problems: a closer that does not match the innermost opener (``mismatched_bracket``), and a
    closer with nothing open inside a fence (``unmatched_closer``). Outside fences such closers are
    ignored: prose uses them for list markers ("1)") and smileys.
    """
    stack = list(state.stack)
    in_fence, quote, escaped = state.in_fence, state.quote, state.escaped
    line_start, ticks = state.line_start, state.ticks
    problems: list[BracketProblem] = []
    base = state.consumed
    for index, char in enumerate(text):
        offset = base + index
        if char == "\n":
            quote, escaped, line_start, ticks = "", False, True, 0
            continue
        if line_start:
            if char == "`":
                ticks += 1
                if ticks == 3:
                    in_fence, quote, line_start, ticks = not in_fence, "", False, 0
                continue
            if char in " \t" and not ticks:
                continue
            line_start = False
            if ticks == 1:
                quote = "`"
            ticks = 0
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if char in ('"', "`") or (char == "'" and in_fence):
            quote = char
        elif char in OPENERS:
            stack.append((char, offset))
        elif char in CLOSERS:
            if stack and stack[-1][0] == CLOSERS[char]:
                stack.pop()
            elif stack:
                expected = OPENERS[stack[-1][0]]
                message = f"{char!r} where {expected!r} was expected"
                problems.append(BracketProblem(offset, "mismatched_bracket", message))
                openers = [opener for opener, _ in stack]
                if CLOSERS[char] in openers:  # resynchronise: the brackets opened since then were left open
                    del stack[len(openers) - 1 - openers[::-1].index(CLOSERS[char]) :]
            elif in_fence:
                problems.append(BracketProblem(offset, "unmatched_closer", f"{char!r} closes nothing"))
    new_state = BracketState(tuple(stack), in_fence, quote, escaped, line_start, ticks, base + len(text))
    return new_state, problems


# ---- JSON ----------------------------------------------------------------------------------------

_WHITESPACE = " \t\n\r"
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_NUMBER_END_STATES = frozenset({"zero", "int", "frac", "exp_digits"})
_ESCAPES = frozenset('"\\/bfnrtu')


@dataclass(frozen=True)
class JsonState:
    """Where a JSON prefix stands.

    ``mode`` is one of: ``start`` (nothing yet), ``fence_ticks`` / ``fence_header`` (inside an opening
    code fence), ``value`` (a value must follow), ``first_value_or_end`` (just after ``[``),
    ``first_key_or_end`` (just after ``{``), ``key`` (after ``,`` in an object), ``colon``,
    ``after_value``, ``string``, ``string_escape``, ``string_hex``, ``number``, ``literal``,
    ``done`` (the top-level value is complete), ``close_ticks`` / ``closed`` (a closing fence).
    """

    mode: str = "start"
    stack: tuple[str, ...] = ()
    is_key: bool = False
    literal: str = ""  # the characters of true/false/null still expected
    number: str = ""  # the number sub-state
    hex_left: int = 0
    fenced: bool = False
    ticks: int = 0
    error: str = ""
    consumed: int = 0

    @property
    def complete(self) -> bool:
        """Whether the text scanned so far is a whole JSON document (plus a closing fence if fenced)."""
        if self.error:
            return False
        if self.mode == "number" and not self.stack and self.number in _NUMBER_END_STATES:
            return not self.fenced
        return self.mode == "closed" or (self.mode == "done" and not self.fenced)

    @property
    def started(self) -> bool:
        return self.mode not in ("start", "fence_ticks", "fence_header")


class JsonPrefixScanner:
    """Checks that text is a prefix of some JSON document (optionally inside a ```json fence)."""

    def __init__(self, *, allow_code_fence: bool = True) -> None:
        self.allow_code_fence = allow_code_fence

    def scan(self, state: JsonState, text: str) -> tuple[JsonState, int | None]:
        """Advance ``state`` over ``text``; return the new state and the index in ``text`` of the first
        character that makes the document impossible to complete (``None`` if there is none)."""
        if state.error:
            return state, None
        current = _Cursor(state, self.allow_code_fence)
        for index, char in enumerate(text):
            if not current.feed(char):
                return replace(current.freeze(state.consumed + index), error=current.error), index
        return current.freeze(state.consumed + len(text)), None


class _Cursor:
    """The mutable working copy of a :class:`JsonState` while one text is scanned."""

    def __init__(self, state: JsonState, allow_code_fence: bool) -> None:
        self.mode, self.stack = state.mode, list(state.stack)
        self.is_key, self.literal, self.number = state.is_key, state.literal, state.number
        self.hex_left, self.fenced, self.ticks = state.hex_left, state.fenced, state.ticks
        self.allow_code_fence = allow_code_fence
        self.error = ""

    def freeze(self, consumed: int) -> JsonState:
        return JsonState(
            self.mode, tuple(self.stack), self.is_key, self.literal, self.number,
            self.hex_left, self.fenced, self.ticks, self.error, consumed,
        )  # fmt: skip

    def fail(self, message: str) -> bool:
        self.error = message
        return False

    def feed(self, char: str) -> bool:
        handler = getattr(self, f"_{self.mode}")
        return handler(char)

    # -- before and after the document --

    def _start(self, char: str) -> bool:
        if char in _WHITESPACE:
            return True
        if char == "`" and self.allow_code_fence:
            self.mode, self.ticks, self.fenced = "fence_ticks", 1, True
            return True
        return self._value(char)

    def _fence_ticks(self, char: str) -> bool:
        if char != "`":
            return self.fail("a code fence needs three backticks")
        self.ticks += 1
        if self.ticks == 3:
            self.mode = "fence_header"
        return True

    def _fence_header(self, char: str) -> bool:
        if char == "\n":
            self.mode = "value"
        elif not (char.isalnum() or char in " \t\r-_"):
            return self.fail(f"unexpected {char!r} in the code fence's info string")
        return True

    def _done(self, char: str) -> bool:
        if char in _WHITESPACE:
            return True
        if char == "`" and self.fenced:
            self.mode, self.ticks = "close_ticks", 1
            return True
        return self.fail(f"unexpected {char!r} after the end of the JSON document")

    def _close_ticks(self, char: str) -> bool:
        if char != "`":
            return self.fail("a closing code fence needs three backticks")
        self.ticks += 1
        if self.ticks == 3:
            self.mode = "closed"
        return True

    def _closed(self, char: str) -> bool:
        return char in _WHITESPACE or self.fail(f"unexpected {char!r} after the closing code fence")

    # -- values --

    def _value(self, char: str) -> bool:
        if char in _WHITESPACE:
            return True
        if char == "{":
            self.stack.append("{")
            self.mode = "first_key_or_end"
        elif char == "[":
            self.stack.append("[")
            self.mode = "first_value_or_end"
        elif char == '"':
            self.mode, self.is_key = "string", False
        elif char == "-" or char.isdigit() and char.isascii():
            self.mode = "number"
            self.number = "sign" if char == "-" else ("zero" if char == "0" else "int")
        elif char in _LITERALS:
            self.mode, self.literal = "literal", _LITERALS[char][1:]
        else:
            return self.fail(f"expected a JSON value, got {char!r}")
        return True

    def _first_value_or_end(self, char: str) -> bool:
        if char == "]":
            return self._close("[")
        return self._value(char)

    def _first_key_or_end(self, char: str) -> bool:
        if char == "}":
            return self._close("{")
        return self._key(char)

    def _key(self, char: str) -> bool:
        if char in _WHITESPACE:
            return True
        if char == '"':
            self.mode, self.is_key = "string", True
            return True
        return self.fail(f"expected an object key, got {char!r}")

    def _colon(self, char: str) -> bool:
        if char in _WHITESPACE:
            return True
        if char == ":":
            self.mode = "value"
            return True
        return self.fail(f"expected ':' after an object key, got {char!r}")

    def _after_value(self, char: str) -> bool:
        if char in _WHITESPACE:
            return True
        if not self.stack:
            return self._done(char)
        if char == ",":
            self.mode = "key" if self.stack[-1] == "{" else "value"
            return True
        if char in "]}":
            return self._close(CLOSERS[char])
        return self.fail(f"expected ',' or a closing bracket, got {char!r}")

    def _close(self, opener: str) -> bool:
        if not self.stack or self.stack[-1] != opener:
            return self.fail(f"{OPENERS[opener]!r} does not close the open container")
        self.stack.pop()
        self._value_ended()
        return True

    def _value_ended(self) -> None:
        self.mode = "after_value" if self.stack else "done"

    # -- scalars --

    def _string(self, char: str) -> bool:
        if char == '"':
            if self.is_key:
                self.mode = "colon"
            else:
                self._value_ended()
        elif char == "\\":
            self.mode = "string_escape"
        elif ord(char) < 0x20:
            return self.fail(f"control character {char!r} inside a string")
        return True

    def _string_escape(self, char: str) -> bool:
        if char not in _ESCAPES:
            return self.fail(f"invalid escape '\\{char}'")
        if char == "u":
            self.mode, self.hex_left = "string_hex", 4
        else:
            self.mode = "string"
        return True

    def _string_hex(self, char: str) -> bool:
        if char not in "0123456789abcdefABCDEF":
            return self.fail(f"invalid \\u escape digit {char!r}")
        self.hex_left -= 1
        if self.hex_left == 0:
            self.mode = "string"
        return True

    def _literal(self, char: str) -> bool:
        if char != self.literal[0]:
            return self.fail(f"unexpected {char!r} inside a literal")
        self.literal = self.literal[1:]
        if not self.literal:
            self._value_ended()
        return True

    def _number(self, char: str) -> bool:
        state = self.number
        digit = char.isdigit() and char.isascii()
        following = _NUMBER_STEPS.get(state, {})
        key = "digit" if digit else char if char in ".eE+-" else ""
        if key in ("e", "E"):
            key = "exp"
        if state == "sign" and char == "0":
            self.number = "zero"
            return True
        if key in following:
            nxt = following[key]
            if nxt == "!":
                return self.fail(f"a number cannot continue with {char!r} here")
            self.number = nxt
            return True
        if state not in _NUMBER_END_STATES:
            return self.fail(f"incomplete number before {char!r}")
        self.number = ""
        self._value_ended()
        return self.feed(char)


_NUMBER_STEPS: dict[str, dict[str, str]] = {
    "sign": {"digit": "int"},
    "zero": {".": "dot", "exp": "exp", "digit": "!"},
    "int": {"digit": "int", ".": "dot", "exp": "exp"},
    "dot": {"digit": "frac"},
    "frac": {"digit": "frac", "exp": "exp"},
    "exp": {"digit": "exp_digits", "+": "exp_sign", "-": "exp_sign"},
    "exp_sign": {"digit": "exp_digits"},
    "exp_digits": {"digit": "exp_digits"},
}


def strip_code_fence(text: str) -> str:
    """The JSON document inside an optional ```json fence."""
    stripped = text.strip()
    if not stripped.startswith("```"):
        return stripped
    body = stripped.split("\n", 1)[1] if "\n" in stripped else ""
    body = body.rstrip()
    return body[:-3] if body.endswith("```") else body
