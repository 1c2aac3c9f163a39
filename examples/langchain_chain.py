"""An LCEL chain on DiffusionGemma, in-process and offline: invoke, batch, stream and astream_events.

Run:  python examples/langchain_chain.py [MODEL]
MODEL is a built-in name, a checkpoint directory or a hub id (default: the packaged default model; the
built-in ``tiny-random`` has random weights, so its answers are noise, but every call works the same).
Needs the ``langchain`` extra: pip install "diffgemma-plugins[langchain]".
"""

from __future__ import annotations

import asyncio
import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from diffgemma_adapters.langchain import ChatDiffusionGemma


def main(model: str | None) -> None:
    chat = ChatDiffusionGemma(model=model, max_tokens=64, seed=0)
    # The default demo model answers short questions of its training shapes; it never saw a system turn.
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = prompt | chat | StrOutputParser()

    print("invoke:", repr(chain.invoke({"question": "What is three plus four?"})))

    # All inputs are in flight at once: the engine denoises them together, step by step.
    answers = chain.batch([{"question": "Opposite of dark?"}, {"question": "What colour is a banana?"}])
    print("batch: ", [repr(answer) for answer in answers])

    # One chunk per committed canvas (block), append-only; the concatenation equals invoke's answer.
    print("stream:", end=" ")
    for piece in chain.stream({"question": "Make a JSON record for a person named Sven aged 36 who lives in Oslo."}):
        if piece:  # the closing chunk (usage, finish reason) carries no text
            print(repr(piece), end=" ", flush=True)
    print()

    async def events() -> None:
        async for event in chain.astream_events({"question": "Name a fruit."}, version="v2"):
            if event["event"] == "on_chat_model_end":
                message = event["data"]["output"]
                print("astream_events: usage", message.usage_metadata,
                      "finish_reason", message.response_metadata["finish_reason"])

    asyncio.run(events())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
