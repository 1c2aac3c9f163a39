"""Retrieval-augmented answers with LlamaIndex and DiffusionGemma, fully offline.

A ``VectorStoreIndex`` over a few documents, with ``MockEmbedding`` (no embedding model needed) and
``Settings.llm = DiffusionGemma(...)``, answering a sync, a streaming and an async query.

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
    "DiffusionGemma writes a whole block of tokens at once and refines it over a few denoising steps.",
    "The shared engine batches concurrent requests from every framework on one copy of the weights.",
    "Validators check each block before it is committed and repair bad tokens in place.",
]


def main(model: str | None) -> None:
    # One canvas per answer keeps the script quick; the demo model was not trained on RAG prompts, so its
    # answers here show the wiring, not quality (see docs/demo-model.md).
    llm = DiffusionGemma(model=model, max_tokens=32, seed=0)
    Settings.llm = llm
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.tokenizer = llm.get_token_ids  # size prompts with the model's own tokenizer
    index = VectorStoreIndex.from_documents([Document(text=text) for text in DOCUMENTS])

    answer = index.as_query_engine().query("How are requests batched?")
    print("query:       ", repr(answer.response))
    print("sources:     ", [node.node.get_content()[:40] for node in answer.source_nodes])

    streaming = index.as_query_engine(streaming=True).query("How are requests batched?")
    print("streaming:   ", end=" ")
    for delta in streaming.response_gen:  # one delta per committed block
        if delta:
            print(repr(delta), end=" ", flush=True)
    print()

    async_answer = asyncio.run(index.as_query_engine().aquery("How are requests batched?"))
    print("aquery:      ", repr(async_answer.response))
    print("same answer: ", async_answer.response == answer.response)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
