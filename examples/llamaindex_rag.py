"""Retrieval-augmented answers with LlamaIndex and DiffusionGemma, fully offline.

A ``VectorStoreIndex`` over a few short documents, with ``MockEmbedding`` (no embedding model needed) and
``Settings.llm = DiffusionGemma()``, answering a sync, a streaming and an async query.

The default ``demo`` model was trained on extractive questions: a context of short factual sentences (in
LlamaIndex's own question-answering prompt) and a question that reuses one sentence's wording with the
answer left out ("The shared engine batches concurrent requests." -> "What does the shared engine
batch?"); the answer copies the missing span (90 % exact spans on held-out contexts of that shape, but
2 % on questions written as people write them, see docs/demo-model.md), and the script prints whether
each answer is the expected span.

Run:  python examples/llamaindex_rag.py [MODEL]
Needs the ``llamaindex`` extra: pip install "diffgemma-plugins[llamaindex]".
"""

from __future__ import annotations

import asyncio
import sys

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding

from diffgemma_adapters.llamaindex import DiffusionGemma

DOCUMENTS = [
    "The shared engine batches concurrent requests.",
    "The validator checks every committed block.",
    "The demo model runs on one CPU.",
    "Tomasz lives in Riga.",
]
QUESTION = "What does the shared engine batch?"
EXPECTED = "concurrent requests"


def is_expected(answer: str) -> bool:
    return answer.strip().rstrip(".").strip().lower() == EXPECTED


def main(model: str | None) -> None:
    llm = DiffusionGemma(model=model, max_tokens=32, seed=0)  # one canvas: the answer is a short span
    Settings.llm = llm
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.tokenizer = llm.get_token_ids  # size prompts with the model's own tokenizer
    index = VectorStoreIndex.from_documents([Document(text=text) for text in DOCUMENTS])
    # MockEmbedding ranks documents arbitrarily, so retrieve them all: the answer's sentence is then
    # always in the context, with the others as distractors.
    top_k = len(DOCUMENTS)

    print("question:    ", QUESTION, "| expected:", repr(EXPECTED))
    answer = index.as_query_engine(similarity_top_k=top_k).query(QUESTION)
    print("query:       ", repr(answer.response), "| expected span:", is_expected(answer.response))
    print("sources:     ", [node.node.get_content() for node in answer.source_nodes])

    streaming = index.as_query_engine(similarity_top_k=top_k, streaming=True).query(QUESTION)
    print("streaming:   ", end=" ")
    for delta in streaming.response_gen:  # one delta per committed block
        if delta:
            print(repr(delta), end=" ", flush=True)
    print()

    async_answer = asyncio.run(index.as_query_engine(similarity_top_k=top_k).aquery(QUESTION))
    print("aquery:      ", repr(async_answer.response))
    print("same answer: ", async_answer.response == answer.response)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)  # None: the default demo model
