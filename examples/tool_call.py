"""Tool calling on DiffusionGemma: the model calls a tool, the tool runs, its result goes back, the model answers.

The request names the action and the value ("Get the weather for Riga."), the shape the default ``demo``
model was trained on: it should call ``get_weather`` with ``{"city": "Riga"}`` and then answer with the
tool's result. The loop runs three times:

1. LangChain ``bind_tools`` without forcing: the model decides to call the tool;
2. LangChain ``bind_tools(..., tool_choice="get_weather")``: the call is forced - the model's turn starts
   with the call marker and the name, and the ``builtin.tool_call`` validator repairs the arguments in
   place until they match the tool's JSON schema; the model still writes the city;
3. a LlamaIndex ``FunctionAgent`` (no forcing).

Each run prints the call, the tool's result and the final answer; a correct run calls ``get_weather`` with
``city="Riga"`` and answers with the result. ``tiny-random`` (random weights) shows the wiring only.

Run:  python examples/tool_call.py [MODEL]
Needs the ``langchain`` and ``llamaindex`` extras: pip install "diffgemma-plugins[langchain,llamaindex]".
"""

from __future__ import annotations

import asyncio
import sys

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from pydantic import ValidationError

from diffgemma_adapters.langchain import ChatDiffusionGemma
from diffgemma_adapters.llamaindex import DiffusionGemma

REQUEST = "Get the weather for Riga."
EXPECTED_ARGS = {"city": "Riga"}


def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"It is sunny in {city}."


def langchain_round(chat: ChatDiffusionGemma, tool_choice: str | None) -> None:
    tools = {"get_weather": tool(get_weather)}
    messages = [HumanMessage(REQUEST)]
    call = chat.bind_tools(list(tools.values()), tool_choice=tool_choice).invoke(messages)
    print(f"LangChain (tool_choice={tool_choice!r})")
    print("  tool calls:  ", [(c["name"], c["args"]) for c in call.tool_calls])
    if not call.tool_calls:
        print("  no call; text:", repr(call.content), "invalid calls:", call.invalid_tool_calls)
        return
    messages.append(call)
    for tool_call in call.tool_calls:
        try:
            result = tools[tool_call["name"]].invoke(tool_call)  # a ToolMessage
        except ValidationError as error:  # a call whose arguments do not fit the tool (an unforced call)
            print("  the call's arguments do not fit the tool:", error.errors()[0]["msg"])
            return
        print("  tool result: ", repr(result.content))
        messages.append(result)
    answer = chat.bind_tools(list(tools.values())).invoke(messages)  # not forced: the model answers
    print("  answer:      ", repr(answer.content), "| right call:", call.tool_calls[0]["args"] == EXPECTED_ARGS)


def llamaindex_round(model: str | None) -> None:
    llm = DiffusionGemma(model=model, max_tokens=64, seed=0)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(get_weather)], llm=llm)

    async def run_agent():  # a workflow runs inside an event loop
        return await agent.run(REQUEST)

    output = asyncio.run(run_agent())
    print("LlamaIndex FunctionAgent")
    print("  tool calls:  ", [(c.tool_name, c.tool_kwargs) for c in output.tool_calls])
    print("  tool results:", [c.tool_output.content for c in output.tool_calls])
    print("  answer:      ", repr(output.response.content))


def main(model: str | None) -> None:
    # return_flagged: a forced call that cannot be repaired comes back in invalid_tool_calls (printed)
    # instead of raising, so the script shows what any model wrote (tiny-random's calls never validate).
    chat = ChatDiffusionGemma(model=model, max_tokens=64, seed=0, on_validation_failure="return_flagged")
    langchain_round(chat, tool_choice=None)
    langchain_round(chat, tool_choice="get_weather")
    llamaindex_round(model)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)  # None: the default demo model
