"""Tool calling on DiffusionGemma: a forced call, the tool runs, its result goes back, the model answers.

With ``tool_choice`` naming a tool, the call is real: the model's turn starts with the call marker and the
name, and the ``builtin.tool_call`` validator repairs the call in place until it names a bound tool and its
arguments match the tool's JSON schema. The same loop runs on LangChain and on a LlamaIndex
``FunctionAgent``. It uses a tool without arguments (whose only valid call the adapter writes whole) and
``tiny-random`` by default: the wiring is the point, not the answer. The ``demo`` model makes calls of the
shape it was trained on ("Get the weather for Riga." with a ``get_weather(city)`` tool: the LangGraph agent in
docs/langchain.md), 62 % right on held-out tools and 0 % on requests written as people write them (see
docs/demo-model.md).

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

from diffgemma_adapters.langchain import ChatDiffusionGemma
from diffgemma_adapters.llamaindex import DiffusionGemma


def current_time() -> str:
    """The current time."""
    return "12:34"


def main(model: str) -> None:
    chat = ChatDiffusionGemma(model=model, max_tokens=16, seed=0)
    tools = {"current_time": tool(current_time)}
    messages = [HumanMessage("What time is it?")]
    call = chat.bind_tools(list(tools.values()), tool_choice="current_time").invoke(messages)
    print("LangChain tool calls:", call.tool_calls)
    messages.append(call)
    for tool_call in call.tool_calls:
        messages.append(tools[tool_call["name"]].invoke(tool_call))  # a ToolMessage
    answer = chat.bind_tools(list(tools.values())).invoke(messages)
    print("LangChain answer:    ", repr(answer.content), "tool calls:", answer.tool_calls)

    llm = DiffusionGemma(model=model, max_tokens=16, seed=0)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(current_time)], llm=llm, initial_tool_choice="current_time")

    async def run_agent():  # a workflow runs inside an event loop
        return await agent.run("What time is it?")

    output = asyncio.run(run_agent())
    print("FunctionAgent tools: ", [(c.tool_name, c.tool_output.content) for c in output.tool_calls])
    print("FunctionAgent answer:", repr(output.response.content))
    if not output.tool_calls or not call.tool_calls:
        raise SystemExit("no tool call was made")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tiny-random")
