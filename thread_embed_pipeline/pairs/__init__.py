"""The pairs stage: the text stage's conversations in, training pairs out (``schemas.PAIR_COLUMNS``:
anchor, positive, an optional hard negative, the strategy that made the pair and the message spans of
both sides).

* :mod:`.builders`: thread, query-response and temporal-adjacency pairs, seeded; the training selection.
* :mod:`.hard_negatives`: chat hard negatives (a concurrent thread's message, same channel and time).
* :mod:`.streaming`: text + pairs over a corpus Parquet file, in pieces (:func:`build_pairs_stream`).

May import: the shared modules, ``sources``, ``corpus`` and ``text``.
"""

from __future__ import annotations

from thread_embed_pipeline.pairs.builders import PairBuilderSettings, TrainingPairStats, build_pairs, select_training_pairs
from thread_embed_pipeline.pairs.hard_negatives import WITHOUT_REASONS, add_chat_hard_negatives
from thread_embed_pipeline.pairs.streaming import build_pairs_stream

__all__ = ["PairBuilderSettings", "TrainingPairStats", "WITHOUT_REASONS", "add_chat_hard_negatives", "build_pairs", "build_pairs_stream", "select_training_pairs"]
