"""Search: a query in, the threads it belongs to (or that answer it) out, each with the message that matched.

* :mod:`.retriever`: :class:`HybridRetriever` (BM25 fused with the dense model, max-sim over a thread's
  messages, the dev-chosen weight) and the per-source thread index (``search_index/<source>``).
* :mod:`.message_index`: the workspace's message index (LanceDB, ANN with rescoring, incremental updates).
* :mod:`.cli`: ``python -m thread_embed_pipeline.search``.

May import: the shared modules, ``text`` and ``evaluation`` (the eval's tokenisation, fusion and max-sim).
"""

from __future__ import annotations

from thread_embed_pipeline.search.retriever import INDEX_PRECISION, SETTINGS_FILE, HybridRetriever, SearchHit, build_search_index, index_path, load_or_build_index, messages_to_read, thread_documents, write_retriever_settings

__all__ = ["HybridRetriever", "INDEX_PRECISION", "SETTINGS_FILE", "SearchHit", "build_search_index", "index_path", "load_or_build_index", "messages_to_read", "thread_documents", "write_retriever_settings"]
