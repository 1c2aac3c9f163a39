"""Tool calls for the demo corpus: generated tools in OpenAI format (declared as LangChain, the OpenAI
documentation or LlamaIndex's ``FunctionTool`` write them), requests that name a tool and every argument
value, the call in the chat template's syntax, and answers that copy a tool's result.

Half the training calls use made-up tools (nouns from syllables; :func:`tool_split` keeps 15 % of them, by
hash, for held-out evaluation only) with requests that repeat the tool's words; the other half use the
everyday tools of :mod:`demo_catalogue`, asked for in free sentences."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from diffgemma_adapters.formats import format_tool_call

import demo_catalogue
import demo_values
from demo_example import Example, spoken, stable_unit

TOOL_VERBS = ("get", "find", "book", "send", "convert", "set", "add", "check", "create", "delete", "list",
              "translate", "search", "update", "cancel", "order", "schedule", "lookup", "compute", "fetch")  # fmt: skip
PARAM_WORDS = ("city", "date", "amount", "count", "name", "email", "query", "unit", "language", "text", "input",
               "customer_name", "price", "size", "colour", "time", "place", "title", "user", "code", "number",
               "label", "country", "item", "note", "topic", "level", "days", "value", "target")  # fmt: skip
INTEGER_PARAMS = {"count", "amount", "size", "days", "number", "level", "input", "value"}
TOOL_SPLIT_FRACTION = 0.15  # of generated tool nouns, kept for held-out evaluation only
LLAMAINDEX_STYLE_FRACTION = 0.25  # of tool names (by hash): declared as a LlamaIndex FunctionTool declares one
EVERYDAY_FRACTION = 0.5  # of training calls and answers: an everyday tool of demo_catalogue, asked for freely
PYTHON_TYPES = {"string": "str", "integer": "int", "number": "float"}


def tool_split(noun: str) -> str:
    return "heldout" if stable_unit(f"tool-split:{noun}") < TOOL_SPLIT_FRACTION else "train"


def _tool_noun(rng: random.Random, split: str) -> str:
    while True:
        noun = "_".join(demo_values.word(rng) for _ in range(rng.choice((1, 1, 2))))
        if tool_split(noun) == split:
            return noun


def openai_tool(name: str, description: str, params: Sequence[tuple[str, str, str]], langchain_order: bool = True) -> dict:
    """An OpenAI-format tool, its parameter keys in the order LangChain's ``convert_to_openai_tool`` writes
    them (``properties``, ``required``, ``type``) or in the OpenAI documentation's (``type`` first)."""
    properties = {}
    for param, kind, text in params:
        properties[param] = {**({"description": text} if text else {}), "type": kind}
    required = [p for p, _, _ in params]
    if langchain_order:
        parameters = {"properties": properties, "required": required, "type": "object"}
    else:
        parameters = {"type": "object", "properties": properties, "required": required}
    function = {"name": name, **({"description": description} if description else {}), "parameters": parameters}
    return {"type": "function", "function": function}


def python_signature(params: Sequence[tuple[str, str, str]]) -> str:
    """The parameter list of a Python function taking ``params``: ``city: str, days: int``."""
    return ", ".join(f"{param}: {PYTHON_TYPES[kind]}" for param, kind, _ in params)


def llamaindex_tool(name: str, description: str, params: Sequence[tuple[str, str, str]]) -> dict:
    """The declaration LlamaIndex's ``FunctionTool.from_defaults(fn).metadata.to_openai_tool()`` gives for a
    Python function ``name`` with these typed parameters and ``description`` as its docstring: the signature
    heads the description, every property has a title, parameters have no descriptions, and ``required``
    is left out when there are no parameters."""
    text = f"{name}({python_signature(params)}) -> str" + (f"\n{description}" if description else "")
    properties = {param: {"title": param.replace("_", " ").title(), "type": kind} for param, kind, _ in params}
    required = {"required": [param for param, _, _ in params]} if params else {}
    parameters = {"properties": properties, **required, "type": "object"}
    return {"type": "function", "function": {"name": name, "description": text, "parameters": parameters}}


@dataclass(frozen=True)
class ToolSpec:
    verb: str
    noun: str
    params: tuple[tuple[str, str, str], ...]  # (name, JSON type, description)

    @property
    def name(self) -> str:
        return f"{self.verb}_{self.noun}"

    @property
    def declared_by_llamaindex(self) -> bool:
        """Declared as LlamaIndex's ``FunctionTool`` declares it (by hash: no draw from the stream)."""
        return declared_by_llamaindex(self.name)

    def openai(self, rng: random.Random) -> dict:
        words = self.noun.replace("_", " ")
        description = rng.choice((f"{self.verb.title()} the {words}.", f"{self.verb.title()} a {words} for the user.",
                                  f"Use this to {self.verb} {words}.", ""))  # fmt: skip
        return declaration(rng, self.name, description, self.params)


def declared_by_llamaindex(name: str) -> bool:
    """Whether the tool ``name`` is declared LlamaIndex's way (a fixed share of names, by hash)."""
    return stable_unit(f"llamaindex-style:{name}") < LLAMAINDEX_STYLE_FRACTION


def declaration(rng: random.Random, name: str, description: str, params: Sequence[tuple[str, str, str]]) -> dict:
    """The tool as LangChain, the OpenAI documentation or (for :func:`declared_by_llamaindex` names)
    LlamaIndex declares it."""
    langchain_order = rng.random() < 0.6
    if declared_by_llamaindex(name):
        return llamaindex_tool(name, description, params)
    return openai_tool(name, description, params, langchain_order=langchain_order)


def _tool_spec(rng: random.Random, split: str, verb: str | None = None) -> ToolSpec:
    noun = _tool_noun(rng, split)
    count = rng.choice((0, 1, 1, 1, 2, 2, 3))
    names = rng.sample(PARAM_WORDS, count)
    params = []
    for param in names:
        kind = "integer" if param in INTEGER_PARAMS and rng.random() < 0.8 else rng.choice(("string", "string", "number"))
        text = rng.choice(("", "", f"The {param.replace('_', ' ')}.", f"{param.replace('_', ' ').title()} to use."))
        params.append((param, kind, text))
    return ToolSpec(verb or rng.choice(TOOL_VERBS), noun, tuple(params))


def tool_args(rng: random.Random, spec: ToolSpec) -> dict:
    args: dict[str, object] = {}
    for param, kind, _ in spec.params:
        if kind == "integer":
            args[param] = demo_values.number(rng)
        elif kind == "number":
            args[param] = demo_values.decimal(rng) if rng.random() < 0.6 else demo_values.number(rng)
        else:
            args[param] = demo_values.any_value(rng)
    return args


def tool_request(rng: random.Random, spec: ToolSpec, args: dict) -> str:
    """A user request that names the tool (by its name or its words) and every argument value."""
    words = spec.noun.replace("_", " ")
    pairs = [(param.replace("_", " "), spoken(value)) for param, value in args.items()]
    said = ", ".join(f"{param} {value}" for param, value in pairs)
    if not pairs:
        return rng.choice((f"What is the value of {spec.name}()? Use the tool.", f"Please {spec.verb} the {words}.",
                           f"Call {spec.name}.", f"Can you {spec.verb} {words} for me?", f"Use the {spec.name} tool."))  # fmt: skip
    first = pairs[0][1]
    options = [
        f"Please {spec.verb} the {words} with {said}.",
        f"Use the {spec.name} tool: {said}.",
        f"Call {spec.name} with " + ", ".join(f"{p}={v}" for p, v in pairs) + ".",
        f"Can you {spec.verb} {words}? " + " ".join(f"{p.capitalize()}: {v}." for p, v in pairs),
        f"I need you to {spec.verb} {words} ({said}).",
    ]
    if len(pairs) == 1:
        options += [f"What is the value of {spec.name}({first})? Use the tool.",
                    f"{spec.verb.capitalize()} the {words} for {first}.",
                    f"{spec.verb.capitalize()} a {words} named '{first}'.",
                    f"Create a {words} named '{first}' - use {spec.name}."]  # fmt: skip
    return rng.choice(options)


def tool_result(rng: random.Random) -> str:
    value = demo_values.any_value(rng)
    return rng.choice((value, value, f"{value}.", str(demo_values.number(rng)), f"It is {value}."))


def answer_from_result(result: str) -> str:
    return result if result.endswith((".", "!", "?")) else f"{result}."


@dataclass(frozen=True)
class Request:
    """A request for one tool among those offered: the call it needs, and the tools' declarations."""

    text: str
    name: str
    args: dict
    tools: tuple[dict, ...]


def _made_up_request(rng: random.Random, split: str) -> Request:
    target = _tool_spec(rng, split)
    others = [_tool_spec(rng, "train") for _ in range(rng.choice((0, 1, 1, 2)))]
    tools = [target, *others]
    rng.shuffle(tools)
    args = tool_args(rng, target)
    return Request(tool_request(rng, target, args), target.name, args, tuple(t.openai(rng) for t in tools))


def _trained_name(name: str) -> bool:
    return tool_split(name.partition("_")[2]) == "train"


def _everyday_declaration(rng: random.Random, tool: demo_catalogue.EverydayTool) -> dict:
    return declaration(rng, tool.name, tool.description, tool.spec_params)


def _everyday_request(rng: random.Random) -> Request:
    """An everyday tool asked for freely, offered beside 0-2 others (everyday or made-up)."""
    target = demo_catalogue.draw_tool(rng, _trained_name)
    args = demo_catalogue.draw_args(rng, target)
    text = demo_catalogue.everyday_request(rng, target, args)
    tools = [_everyday_declaration(rng, target)]
    for _ in range(rng.choice((0, 1, 1, 2))):
        other = demo_catalogue.draw_tool(rng, _trained_name) if rng.random() < 0.7 else None
        if other is None:
            tools.append(_tool_spec(rng, "train").openai(rng))
        elif other.domain is not target.domain:
            tools.append(_everyday_declaration(rng, other))
    rng.shuffle(tools)
    return Request(text, target.name, args, tuple(tools))


def _request(rng: random.Random, split: str) -> Request:
    if split == "train" and rng.random() < EVERYDAY_FRACTION:
        return _everyday_request(rng)
    return _made_up_request(rng, split)


def tool_call_example(rng: random.Random, split: str = "train") -> Example:
    """Declared tools and a request: the answer is the call of the requested tool with copied arguments."""
    request = _request(rng, split)
    call = format_tool_call(request.name, request.args)
    return Example("tool", "call", request.text, call, (call,), tools=request.tools)


def tool_answer_example(rng: random.Random, split: str = "train") -> Example:
    """The same conversation after the call and the tool's result: the answer copies the result."""
    request = _request(rng, split)
    everyday = request.name in demo_catalogue.NAMES
    result = demo_catalogue.everyday_result(rng) if everyday and rng.random() < 0.6 else tool_result(rng)
    answer = answer_from_result(result)
    history = ({"role": "assistant", "content": "", "tool_calls": [[request.name, request.args]]},
               {"role": "tool", "name": request.name, "content": result})  # fmt: skip
    return Example("tool", "answer", request.text, answer, (answer,), tools=request.tools, history=history)
