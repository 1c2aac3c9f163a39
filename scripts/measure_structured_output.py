"""Measure structured output on the default ``demo`` model, on every path: LangChain
``with_structured_output(Person)``, LlamaIndex ``structured_predict(Person, ...)`` and the ``openai`` client's
``chat.completions.parse(response_format=Person)`` against ``diffgemma serve`` (in this process, on loopback).

Two prompt sets of 40 each: ``heldout`` draws the demo corpus's held-out names through its own generator
(``scripts/demo_json.py``); ``handwritten`` is ``demo_eval_sets.PEOPLE``, a list written by hand, with ordinary
names and cities from many countries (accented, hyphenated, several words) in one sentence pattern, unrelated to
the training generator.

Not a test (minutes on a CPU): ``python scripts/measure_structured_output.py [--model DIR] [--sets heldout,handwritten]``.
A response counts as valid when the path returns a ``Person`` (the JSON validator passed and pydantic
accepted it); "copied" additionally means the record has the prompt's name and age (and city, when the
prompt names one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import sys
import threading
import time
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_json  # noqa: E402  (scripts/demo_json.py: the corpus's person records and held-out names)
import demo_eval_sets  # noqa: E402  (scripts/demo_eval_sets.py: the hand-written PEOPLE)


class Person(BaseModel):
    name: str
    age: int
    city: str


def heldout_prompts(count: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    examples = [demo_json._person_example(rng, demo_json.HELDOUT_NAMES) for _ in range(count)]
    return [(example.prompt, json.loads(example.answer)) for example in examples]


def handwritten_prompts(count: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        name, city = demo_eval_sets.PEOPLE[index % len(demo_eval_sets.PEOPLE)]
        age = rng.randint(18, 90)
        prompt = f"Make a JSON record for a person named {name} aged {age} who lives in {city}."
        cases.append((prompt, {"name": name, "age": age, "city": city}))
    return cases


PROMPT_SETS = {"heldout": heldout_prompts, "handwritten": handwritten_prompts}


def score(name: str, outputs: list, cases: list[tuple[str, dict]]) -> None:
    valid = [out for out in outputs if isinstance(out, Person)]
    copied = 0
    for out, (prompt, target) in zip(outputs, cases):
        if isinstance(out, Person) and out.name == target["name"] and out.age == target["age"]:
            copied += out.city == target["city"] or target["city"] not in prompt
    errors = sorted({type(out).__name__ for out in outputs if not isinstance(out, Person)})
    print(f"{name}: {len(valid)}/{len(outputs)} valid Person ({100 * len(valid) / len(outputs):.1f}%), "
          f"{copied}/{len(outputs)} copy the prompt's fields; failures: {errors or 'none'}")


def measure(label: str, cases: list[tuple[str, dict]], model: str | None, base_url: str) -> None:
    from diffgemma_adapters.langchain import ChatDiffusionGemma

    chat = ChatDiffusionGemma(model=model, max_tokens=64, seed=0)
    structured = chat.with_structured_output(Person)
    outputs = structured.batch([prompt for prompt, _ in cases], return_exceptions=True)
    score(f"[{label}] LangChain with_structured_output(Person)", outputs, cases)

    from llama_index.core.prompts import PromptTemplate

    from diffgemma_adapters.llamaindex import DiffusionGemma

    llm = DiffusionGemma(model=model, max_tokens=64, seed=0)
    template = PromptTemplate("{question}")
    outputs = []
    for prompt, _ in cases:
        try:
            outputs.append(llm.structured_predict(Person, template, question=prompt))
        except Exception as error:  # noqa: BLE001 - a failure is a data point here
            outputs.append(error)
    score(f"[{label}] LlamaIndex structured_predict(Person)", outputs, cases)

    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    outputs = []
    for prompt, _ in cases:
        try:
            completion = client.chat.completions.parse(
                model=model or "demo", messages=[{"role": "user", "content": prompt}], response_format=Person,
                max_tokens=64, seed=0,
            )
            outputs.append(completion.choices[0].message.parsed or ValueError("no parsed message"))
        except Exception as error:  # noqa: BLE001 - a failure is a data point here
            outputs.append(error)
    score(f"[{label}] openai .parse(response_format=Person) against diffgemma serve", outputs, cases)


@contextlib.contextmanager
def local_server(model: str | None):
    """``diffgemma serve`` over the shared engine, on a free loopback port, for the duration."""
    import uvicorn

    from diffgemma_adapters.server import create_app
    from diffgemma_engine import get_engine

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(get_engine(model)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--model", default=None, help="a checkpoint directory or model name; default: the packaged demo model")
    parser.add_argument("--sets", default="heldout,handwritten", help=f"comma-separated: {', '.join(PROMPT_SETS)}")
    args = parser.parse_args()
    with local_server(args.model) as base_url:
        for label in args.sets.split(","):
            measure(label, PROMPT_SETS[label](args.count, args.seed), args.model, base_url)


if __name__ == "__main__":
    main()
