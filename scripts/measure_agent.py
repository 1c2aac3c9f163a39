"""Measure the docs' LangGraph agent on the ``demo`` model beyond the two cities its test checks.

The agent is the one of docs/langchain.md ("A LangGraph agent"): ``create_react_agent`` over
``ChatDiffusionGemma(max_tokens=64, seed=S)`` and a ``get_weather(city)`` tool, asked "Get the weather for
{city}.". A run is right when the agent calls ``get_weather`` exactly once with the city as written and then
answers with the tool's result, ``It is sunny in {city}.``, as its last message. The cities are the first
``--cities`` of the hand-written ``demo_eval_sets.PEOPLE`` (a list apart from the training generator), each
with seeds ``0 .. --seeds - 1``.

Not a test (a minute or two on a CPU): ``python scripts/measure_agent.py [--model DIR]``. The default test
run checks Riga and Porto at seed 0 (``tests/adapters/test_agents_e2e.py``); this says how far that holds.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_eval_sets  # noqa: E402  (scripts/demo_eval_sets.py: the hand-written PEOPLE)


def run_agent(model: str, city: str, seed: int, validators: list[str]) -> tuple[bool, str]:
    """One run of the docs' agent: (right, what it ended with)."""
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.prebuilt import create_react_agent

    from diffgemma_adapters.langchain import ChatDiffusionGemma
    from diffgemma_engine import InvalidRequestError

    calls: list[str] = []

    def get_weather(city: str) -> str:
        """Get the weather for a city."""
        calls.append(city)
        return f"It is sunny in {city}."

    agent = create_react_agent(ChatDiffusionGemma(model=model, max_tokens=64, seed=seed, validators=validators), [tool(get_weather)])
    try:
        state = agent.invoke({"messages": [("user", f"Get the weather for {city}.")]}, {"recursion_limit": 6})
    except InvalidRequestError:
        raise  # a bad setting (an unknown --validator) is the caller's mistake, not a wrong run
    except Exception as error:  # a typed failure (a repair that ran out, the recursion limit) is a wrong run
        return False, f"<{type(error).__name__}>"
    last = state["messages"][-1]
    answer = last.content.strip() if isinstance(last.content, str) else str(last.content)
    right = calls == [city] and isinstance(last, AIMessage) and not last.tool_calls and answer == f"It is sunny in {city}."
    return right, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a checkpoint directory or model name (default: demo)")
    parser.add_argument("--cities", type=int, default=6, help="the first N cities of demo_eval_sets.PEOPLE")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--validator", action="append", default=[], dest="validators",
                        help="a validator selection, as the CLI takes it (repeatable; e.g. default); none by default")  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="create_react_agent has been moved")
    cities = [city for _, city in demo_eval_sets.PEOPLE[: args.cities]]
    right = 0
    for city in cities:
        for seed in range(args.seeds):
            ok, answer = run_agent(args.model, city, seed, args.validators)
            right += ok
            print(f"{'right' if ok else 'wrong'}  {city:<12} seed {seed}: {answer[:60]!r}")
    total = len(cities) * args.seeds
    print(f"{args.model}: {right} of {total} runs right ({100 * right / total:.0f} %)")


if __name__ == "__main__":
    main()
