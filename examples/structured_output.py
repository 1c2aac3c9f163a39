"""Structured output on DiffusionGemma: a Pydantic record from LangChain and from LlamaIndex, offline.

The schema goes to the ``builtin.json`` validator, which checks every block against it while it is
generated and repairs invalid tokens in place; the prompt is yours alone (the same request as
``response_format`` on ``diffgemma serve``). The default ``demo`` model was trained on exactly this kind
of record, so it answers well here.

Run:  python examples/structured_output.py [MODEL]
Needs the ``langchain`` and ``llamaindex`` extras: pip install "diffgemma-plugins[langchain,llamaindex]".
"""

from __future__ import annotations

import sys

from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel

from diffgemma_adapters.langchain import ChatDiffusionGemma
from diffgemma_adapters.llamaindex import DiffusionGemma


class Person(BaseModel):
    name: str
    age: int
    city: str


def main(model: str | None) -> None:
    chat = ChatDiffusionGemma(model=model, max_tokens=64, seed=0)
    person = chat.with_structured_output(Person).invoke(
        "Make a JSON record for a person named Sven aged 36 who lives in Oslo."
    )
    print("LangChain: ", repr(person))

    # include_raw=True never raises on bad output: the error comes back as parsing_error instead.
    result = chat.with_structured_output(Person, include_raw=True).invoke(
        "Make a JSON record for a person named Ida aged 41."
    )
    print("include_raw:", repr(result["parsed"]), "error:", result["parsing_error"])

    llm = DiffusionGemma(model=model, max_tokens=64, seed=0)
    template = PromptTemplate("Make a JSON record for a person named {name} aged {age} who lives in {city}.")
    print("LlamaIndex:", repr(llm.structured_predict(Person, template, name="Maja", age=29, city="Paris")))
    for partial in llm.stream_structured_predict(Person, template, name="Olle", age=52, city="Rome"):
        pass  # partial objects per committed block; the last one is the validated record
    print("streamed:  ", repr(partial))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
