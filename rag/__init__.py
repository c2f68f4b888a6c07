"""The core: one package per stage of the flow, and the names a pipeline is built from.

    text/        clean-up, sentences, token counts
    ingest/      loaders (files -> Document), chunking (Document -> Chunk)
    embed/       the sentence encoder, device choice, tiled similarity, clustering
    search/      the store protocol, fusion, the hybrid retriever
    answer/      the LLM protocol, prompt assembly, citation checks, extracts
    evaluation/  retrieval metrics, BEIR folders, STS
    training/    fine-tuning loop, losses, training data, adaptation, mining

```python
from rag import SentenceEncoder, Chunker, Retriever, PromptAssembler
```
The core imports no connector or pipeline; `connectors` and `pipelines` build on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag._lazy import lazy_exports

_EXPORTS = {
    # data models
    "Document": "rag.models", "Page": "rag.models", "Chunk": "rag.models", "Passage": "rag.models",
    "Answer": "rag.models",
    # errors
    "RagError": "rag.errors", "ConfigError": "rag.errors", "LoadError": "rag.errors",
    "StoreLockedError": "rag.errors", "StoreWriteError": "rag.errors", "ModelMismatchError": "rag.errors",
    "CollectionNotFoundError": "rag.errors", "LLMError": "rag.errors",
    # stages
    "load": "rag.ingest.loaders", "find_files": "rag.ingest.loaders",
    "Chunker": "rag.ingest.chunking",
    "SentenceEncoder": "rag.embed.encoder",
    "cluster": "rag.embed.clustering", "Cluster": "rag.embed.clustering",
    "community_detection": "rag.embed.clustering",
    "VectorStore": "rag.search.store", "CollectionInfo": "rag.search.store",
    "TextIndexSettings": "rag.search.store",
    "Retriever": "rag.search.retrieval", "SearchResponse": "rag.search.retrieval",
    "SearchResult": "rag.search.retrieval",
    "LLMBackend": "rag.answer.llm", "ChatMessage": "rag.answer.llm", "GenerationSettings": "rag.answer.llm",
    "PromptAssembler": "rag.answer.prompt", "PromptTemplate": "rag.answer.prompt",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from rag.answer.llm import ChatMessage, GenerationSettings, LLMBackend
    from rag.answer.prompt import PromptAssembler, PromptTemplate
    from rag.embed.clustering import Cluster, cluster, community_detection
    from rag.embed.encoder import SentenceEncoder
    from rag.errors import (CollectionNotFoundError, ConfigError, LLMError, LoadError, ModelMismatchError, RagError,
                            StoreLockedError, StoreWriteError)
    from rag.ingest.chunking import Chunker
    from rag.ingest.loaders import find_files, load
    from rag.models import Answer, Chunk, Document, Page, Passage
    from rag.search.retrieval import Retriever, SearchResponse, SearchResult
    from rag.search.store import CollectionInfo, TextIndexSettings, VectorStore
