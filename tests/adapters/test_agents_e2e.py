"""Agents end to end against the engine (tiny-random): a forced first tool call, the tool runs, its result
is fed back to the model, and the model's next turn is the final answer."""

from __future__ import annotations

import pytest
from adapter_support import RecordingEngine

from diffgemma_adapters.formats import RESPONSE_OPEN

CALLS: list[str] = []


def current_time() -> str:
    """The current time."""
    CALLS.append("current_time")
    return "12:34"


def _prompt(engine: RecordingEngine, index: int) -> str:
    request = engine.requests[index]
    return request.prompt if request.prompt is not None else engine.render_chat(request.messages)


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_react_agent_runs_a_tool_and_answers(shared_engine):
    pytest.importorskip("langgraph")
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langgraph.prebuilt import create_react_agent

    from diffgemma_adapters.langchain import ChatDiffusionGemma

    engine = RecordingEngine(shared_engine)
    chat = ChatDiffusionGemma(engine=engine, max_tokens=16, max_denoising_steps=4, seed=0)
    tools = [tool(current_time)]

    def model(state, runtime):  # the first turn must call the tool; later turns are free
        called = any(isinstance(message, ToolMessage) for message in state["messages"])
        return chat.bind_tools(tools, tool_choice=None if called else "current_time")

    agent = create_react_agent(model, tools)
    messages = agent.invoke({"messages": [("user", "What time is it?")]}, {"recursion_limit": 6})["messages"]
    assert CALLS == ["current_time"]
    first_call = next(m for m in messages if isinstance(m, AIMessage))
    assert first_call.tool_calls[0]["name"] == "current_time"
    result = next(m for m in messages if isinstance(m, ToolMessage))
    assert result.content == "12:34" and result.tool_call_id == first_call.tool_calls[0]["id"]
    assert isinstance(messages[-1], AIMessage) and not messages[-1].tool_calls  # the final answer
    assert len(engine.requests) == 2
    assert f"{RESPONSE_OPEN}response:current_time" in _prompt(engine, 1)  # the result was fed back
    assert "12:34" in _prompt(engine, 1)


async def test_llamaindex_function_agent_runs_a_tool_and_answers(shared_engine):
    pytest.importorskip("llama_index.core")
    from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
    from llama_index.core.tools import FunctionTool

    from diffgemma_adapters.llamaindex import DiffusionGemma

    engine = RecordingEngine(shared_engine)
    llm = DiffusionGemma(engine=engine, max_tokens=16, max_denoising_steps=4, seed=0)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(current_time)], llm=llm, initial_tool_choice="current_time")
    handler = agent.run("What time is it?")
    results = [event async for event in handler.stream_events() if isinstance(event, ToolCallResult)]
    output = await handler
    assert CALLS == ["current_time"]
    assert [r.tool_name for r in results] == ["current_time"] and str(results[0].tool_output) == "12:34"
    assert [call.tool_name for call in output.tool_calls] == ["current_time"]  # all the run made
    assert output.response.role == "assistant"  # the final answer (a second call would have a third request)
    assert len(engine.requests) == 2
    assert f"{RESPONSE_OPEN}response:current_time" in _prompt(engine, 1)
    assert "12:34" in _prompt(engine, 1)


# -- the shipped demo model: the documented examples give the right answer ------------------------------


def get_weather(city: str) -> str:
    """Get the weather for a city."""
    CALLS.append(f"get_weather({city})")
    return f"It is sunny in {city}."


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
@pytest.mark.parametrize("validators", [(), ("default",)], ids=["no-validators", "default-validators"])
@pytest.mark.parametrize("city", ["Riga", "Porto"])
def test_langgraph_agent_on_the_demo_model_calls_the_tool_and_answers_from_its_result(city, validators):
    """The docs' LangGraph example, unforced, on the default model: it chooses the tool itself. With the
    default validators too: the tool-call markers it writes are response syntax, not leaked control tokens."""
    pytest.importorskip("langgraph")
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.prebuilt import create_react_agent

    from diffgemma_adapters.langchain import ChatDiffusionGemma

    agent = create_react_agent(ChatDiffusionGemma(model="demo", max_tokens=64, seed=0, validators=list(validators)), [tool(get_weather)])
    messages = agent.invoke({"messages": [("user", f"Get the weather for {city}.")]}, {"recursion_limit": 6})["messages"]
    assert CALLS == [f"get_weather({city})"]
    assert isinstance(messages[-1], AIMessage) and not messages[-1].tool_calls
    assert messages[-1].content.strip() == f"It is sunny in {city}."


def test_llamaindex_rag_on_the_demo_model_answers_with_the_span():
    """The docs' offline RAG example on the default model (MockEmbedding; every document retrieved)."""
    pytest.importorskip("llama_index.core")
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    from diffgemma_adapters.llamaindex import DiffusionGemma

    llm = DiffusionGemma(model="demo", max_tokens=32, seed=0)
    documents = ["The shared engine batches concurrent requests.", "The validator checks every committed block.",
                 "Tomasz lives in Riga."]  # fmt: skip
    index = VectorStoreIndex.from_documents([Document(text=t) for t in documents], embed_model=MockEmbedding(embed_dim=8))
    engine = index.as_query_engine(llm=llm, similarity_top_k=len(documents))
    answers = {q: engine.query(q).response.strip() for q in ("What does the shared engine batch?", "Where does Tomasz live?")}
    assert answers == {"What does the shared engine batch?": "concurrent requests.", "Where does Tomasz live?": "Riga."}
