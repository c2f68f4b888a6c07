"""Composition: the ingest job, answers and chat, evaluation, the config file, and the `rag`
command line. The only layer that knows the core and every connector.

```python
from pipelines import RagPipeline, StoreSettings, ingest
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Eager, not lazy: once the module pipelines.ingest is imported, Python binds it to the package's
# attribute `ingest`, which would shadow the function of that name.
from pipelines.ingest import ingest
from rag._lazy import lazy_exports

_EXPORTS = {
    "ingest": "pipelines.ingest", "ingest_documents": "pipelines.ingest", "IngestReport": "pipelines.ingest",
    "StoreSettings": "pipelines.stores", "open_store": "pipelines.stores",
    "RagPipeline": "pipelines.answer", "ChatSession": "pipelines.answer",
    "RagConfig": "pipelines.config", "load_config": "pipelines.config",
    "eval_retrieval": "pipelines.evaluate",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from pipelines.answer import ChatSession, RagPipeline
    from pipelines.config import RagConfig, load_config
    from pipelines.evaluate import eval_retrieval
    from pipelines.ingest import IngestReport, ingest_documents
    from pipelines.stores import StoreSettings, open_store
