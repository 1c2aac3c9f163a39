"""Measure structured output on the default ``demo`` model: LangChain ``with_structured_output(Person)`` and
LlamaIndex ``structured_predict(Person, ...)`` on 40 JSON-record prompts with held-out names.

Not a test (it takes a minute or two on a CPU): ``python scripts/measure_structured_output.py``. A response
counts as valid when the adapter returns a ``Person`` (the JSON validator passed and pydantic accepted it);
"copied" additionally means the record has the prompt's name and age (and city, when the prompt names one).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_data  # noqa: E402  (scripts/demo_data.py: the demo corpus and its held-out names)


class Person(BaseModel):
    name: str
    age: int
    city: str


def prompts(count: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    examples = [demo_data._person_example(rng, demo_data.HELDOUT_NAMES) for _ in range(count)]
    return [(example.prompt, json.loads(example.answer)) for example in examples]


def score(name: str, outputs: list, cases: list[tuple[str, dict]]) -> None:
    valid = [out for out in outputs if isinstance(out, Person)]
    copied = 0
    for out, (prompt, target) in zip(outputs, cases):
        if isinstance(out, Person) and out.name == target["name"] and out.age == target["age"]:
            copied += out.city == target["city"] or target["city"] not in prompt
    errors = sorted({type(out).__name__ for out in outputs if not isinstance(out, Person)})
    print(f"{name}: {len(valid)}/{len(outputs)} valid Person ({100 * len(valid) / len(outputs):.1f}%), "
          f"{copied}/{len(outputs)} copy the prompt's fields; failures: {errors or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--model", default=None, help="default: the packaged demo model")
    args = parser.parse_args()
    cases = prompts(args.count, args.seed)

    from diffgemma_adapters.langchain import ChatDiffusionGemma

    chat = ChatDiffusionGemma(model=args.model, max_tokens=64, seed=0)
    structured = chat.with_structured_output(Person)
    outputs = structured.batch([prompt for prompt, _ in cases], return_exceptions=True)
    score("LangChain with_structured_output(Person)", outputs, cases)

    from llama_index.core.prompts import PromptTemplate

    from diffgemma_adapters.llamaindex import DiffusionGemma

    llm = DiffusionGemma(model=args.model, max_tokens=64, seed=0)
    template = PromptTemplate("{question}")
    outputs = []
    for prompt, _ in cases:
        try:
            outputs.append(llm.structured_predict(Person, template, question=prompt))
        except Exception as error:  # noqa: BLE001 - a failure is a data point here
            outputs.append(error)
    score("LlamaIndex structured_predict(Person)", outputs, cases)


if __name__ == "__main__":
    main()
