"""A checkpoint's own chat template, rendered client-side without torch or transformers.

A continuation (validation by continuation) sends the conversation so far as a raw completion prompt, so
the client must write the turns exactly as the server's chat template would. :class:`ChatTemplate` reads
the template from a local checkpoint directory or its tokenizer files (``chat_template.jinja``, or the
``chat_template`` entry of ``tokenizer_config.json``) and renders it with jinja2 in a sandbox, the way
Hugging Face tokenizers do: ``messages``, ``tools``, ``add_generation_prompt`` and the special tokens
(``bos_token``, ``eos_token``, ...) from ``tokenizer_config.json`` as variables, ``raise_exception`` and
``strftime_now`` as functions, ``trim_blocks`` / ``lstrip_blocks`` on. The leading BOS is left out of the
result: servers add it to a completion prompt themselves.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffgemma_engine.api.errors import InvalidRequestError

__all__ = ["ChatTemplate"]

TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"
_SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")


class ChatTemplate:
    """A jinja2 chat template and the special tokens it refers to.

    Args:
        template: the template's source text.
        special_tokens: variables such as ``{"bos_token": "<bos>"}``; ``bos_token`` is also the prefix cut
            from rendered prompts.
    """

    def __init__(self, template: str, special_tokens: Mapping[str, str] | None = None) -> None:
        if not isinstance(template, str) or not template.strip():
            raise InvalidRequestError("chat_template", "must be a non-empty jinja2 template")
        self.source = template
        self.special_tokens = dict(special_tokens or {})
        self._compiled = _environment().from_string(template)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> ChatTemplate:
        """The template of a local checkpoint directory, or of one template file (``.jinja``) or
        ``tokenizer_config.json``. A file's directory is searched for the other."""
        location = Path(path)
        folder = location if location.is_dir() else location.parent
        if not location.exists():
            raise InvalidRequestError("chat_template", f"{location} does not exist")
        config = _read_json(folder / TOKENIZER_CONFIG)
        special = {name: _token_text(config.get(name)) for name in _SPECIAL_TOKENS if _token_text(config.get(name))}
        template_file = location if location.is_file() and location.suffix == ".jinja" else folder / TEMPLATE_FILE
        if template_file.is_file():
            return cls(template_file.read_text(encoding="utf-8"), special)
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: the "default" one
            named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, Mapping)}
            template = named.get("default")
        if not isinstance(template, str):
            raise InvalidRequestError("chat_template", f"no {TEMPLATE_FILE} and no chat_template in {folder}")
        return cls(template, special)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **variables: Any,
    ) -> str:
        """The prompt the template makes of ``messages``, without the leading BOS."""
        text = self._compiled.render(
            messages=[dict(message) for message in messages],
            tools=list(tools) if tools else None,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
            **variables,
        )
        bos = self.special_tokens.get("bos_token")
        return text[len(bos):] if bos and text.startswith(bos) else text

    def __call__(self, messages: Sequence[Mapping[str, Any]]) -> str:
        return self.render(messages)


def _environment() -> Any:
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise InvalidRequestError("messages", f"the chat template refused them: {message}")

    def strftime_now(format_string: str) -> str:
        return datetime.datetime.now().strftime(format_string)

    def to_json(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
        return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    environment.filters["tojson"] = to_json
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    return environment


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InvalidRequestError("chat_template", f"cannot read {path}: {error}") from None
    return value if isinstance(value, dict) else {}


def _token_text(value: Any) -> str | None:
    if isinstance(value, Mapping):  # {"content": "<bos>", ...}, as older tokenizer configs write it
        value = value.get("content")
    return value if isinstance(value, str) and value else None
