"""Evaluation stage: eval-set protocols, embedders, retrieval scoring, statistics and reports.

Pure pandas/numpy functions (no dagster); import from the submodules. Heavy libraries
(sentence-transformers, bm25s, matplotlib, API clients) are imported lazily where needed.
"""
