"""Everything that talks to a system outside the process: Qdrant (one base, the Edge and
qdrant-client engines) and LLM servers (OpenAI-compatible, Ollama) or a local transformers LM.
Each implements a protocol of the core (`rag.search.store.VectorStore`, `rag.answer.llm.LLMBackend`).

```python
from connectors import OpenAICompatibleBackend
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag._lazy import lazy_exports

_EXPORTS = {
    "EdgeStore": "connectors.qdrant.edge", "ClientStore": "connectors.qdrant.client",
    "OpenAICompatibleBackend": "connectors.llm.openai", "OllamaBackend": "connectors.llm.ollama",
    "LocalTransformersBackend": "connectors.llm.local",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from connectors.llm.local import LocalTransformersBackend
    from connectors.llm.ollama import OllamaBackend
    from connectors.llm.openai import OpenAICompatibleBackend
    from connectors.qdrant.client import ClientStore
    from connectors.qdrant.edge import EdgeStore
