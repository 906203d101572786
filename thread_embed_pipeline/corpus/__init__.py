"""The corpus stage: raw rows in (a source's parsed records, ``schemas.RAW_SCHEMA``), conversations out
(``schemas.CORPUS_COLUMNS``: one row per message with its conversation, split and record type; bots, edits,
deletions and over-long messages dropped and counted).

* :mod:`.builder`: the one Arrow builder (:func:`corpus_table`, :func:`build_corpus`).
* :mod:`.streaming`: the same builder over a raw Parquet file, in pieces (:func:`build_corpus_stream`).

May import: the shared modules (``schemas``, ``storage``, ``versioning``, ``models``) and ``sources``.
"""

from __future__ import annotations

from thread_embed_pipeline.corpus.builder import CORPUS_PANDAS_SCHEMA, DROP_REASONS, MAX_MESSAGE_CHARS, RECORD_TYPES, build_corpus, corpus_frame, corpus_table, file_stem, gold_clusters, link_components
from thread_embed_pipeline.corpus.streaming import build_corpus_stream

__all__ = ["CORPUS_PANDAS_SCHEMA", "DROP_REASONS", "MAX_MESSAGE_CHARS", "RECORD_TYPES", "build_corpus", "build_corpus_stream", "corpus_frame", "corpus_table", "file_stem", "gold_clusters", "link_components"]
