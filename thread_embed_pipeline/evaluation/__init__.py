"""Evaluation stage: eval-set protocols, embedders, retrieval scoring, statistics and reports.

Pure pandas/numpy functions (no dagster); import from the submodules. Heavy libraries
(sentence-transformers, bm25s, matplotlib, API clients) are imported lazily where needed.

Enters: the text stage's held-out conversations (or an external eval set) and models. Leaves: eval sets
(:mod:`.eval_sets` over :mod:`.tasks`), ranked results, metrics with CIs, the report. May import: the shared
modules, ``sources``, ``text`` and ``training`` (never ``search`` or ``release``, which build on it).
The CLI: ``python -m thread_embed_pipeline.evaluation``.
"""
