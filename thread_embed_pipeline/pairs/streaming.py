"""The text and pairs stages, out of core: the corpus read in batches, never splitting a conversation;
a seeded sample of conversations kept; pairs (and chat hard negatives) built per piece and appended.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from thread_embed_pipeline.corpus.builder import corpus_frame
from thread_embed_pipeline.corpus.streaming import aligned_batches
from thread_embed_pipeline.pairs.builders import PairBuilderSettings, build_pairs
from thread_embed_pipeline.pairs.hard_negatives import add_chat_hard_negatives
from thread_embed_pipeline.schemas import CORPUS_COLUMNS, NEGATIVE_COLUMN, PAIR_STRATEGIES, Log, hash_fraction
from thread_embed_pipeline.storage import Progress
from thread_embed_pipeline.text import TextSettings, prepare_text


def build_pairs_stream(
    corpus_path: Path,
    *,
    seed: int,
    settings: PairBuilderSettings | None = None,
    strategies: tuple[str, ...] = PAIR_STRATEGIES,
    conversation_fraction: float = 1.0,
    max_conversations: int | None = None,
    hard_negatives: bool = False,
    hard_negative_window_minutes: int = 30,
    text_settings: TextSettings | None = None,
    batch_rows: int | None = 200_000,
    log: Log = print,
) -> tuple[pd.DataFrame, dict]:
    """Pairs of a seeded sample of the corpus's conversations, built piece by piece.

    With ``text_settings`` each piece goes through the text stage (``text.prepare_text``) first:
    pseudonyms are then numbered per channel log *within a piece* (a piece never splits a
    conversation, but may split a log), and its accounting is summed into ``stats["text"]``.

    A conversation is kept when ``hash(seed, conversation_id) < conversation_fraction``, up to
    ``max_conversations`` (in file order). Returns the pairs and ``{"conversations_read",
    "conversations_sampled", "skipped_short_conversations", "skipped_identical_sides", "pairs":
    {strategy: n}, "hard_negatives": {...}}``.
    """
    if not 0.0 < conversation_fraction <= 1.0:
        raise ValueError(f"conversation_fraction must be in (0, 1], got {conversation_fraction}")
    frames: list[pd.DataFrame] = []
    stats = {"conversations_read": 0, "conversations_sampled": 0, "skipped_short_conversations": 0, "skipped_identical_sides": 0, "pairs": {s: 0 for s in strategies}}
    negatives: dict = {}
    text_totals: dict = {}
    progress = Progress(log, "pairs")
    taken = 0
    for table in aligned_batches(Path(corpus_path), ["conversation_id"], batch_rows):
        ids = pc.unique(table.column("conversation_id")).to_pylist()
        stats["conversations_read"] += len(ids)
        if conversation_fraction < 1.0:
            ids = [c for c in ids if hash_fraction(f"{seed}:conv:{c}") < conversation_fraction]
        if max_conversations is not None:
            ids = list(ids)[: max(0, max_conversations - taken)]
        taken += len(ids)
        stats["conversations_sampled"] += len(ids)
        if len(ids):
            # only the sampled conversations leave Arrow
            sub = corpus_frame(table.filter(pc.is_in(table.column("conversation_id"), value_set=pa.array(ids, pa.string()))))
            if text_settings is not None:
                sub, text_acc = prepare_text(sub, text_settings)
                _merge_text_accounting(text_totals, text_acc)
            pairs, st = build_pairs(sub, seed=seed, settings=settings, strategies=strategies)
            stats["skipped_short_conversations"] += st["skipped_short_conversations"]
            stats["skipped_identical_sides"] += st["skipped_identical_sides"]
            for k, v in st["pairs"].items():
                stats["pairs"][k] = stats["pairs"].get(k, 0) + v
            if hard_negatives and len(pairs):
                pairs, counts = add_chat_hard_negatives(pairs, sub, seed=seed, window_minutes=hard_negative_window_minutes)
                _merge_counts(negatives, counts)
            frames.append(pairs)
        progress.tick(stats["conversations_read"], "conversations")
        if max_conversations is not None and taken >= max_conversations:
            break
    stats["hard_negatives"] = negatives
    stats["text"] = text_totals
    if frames:
        out = pd.concat(frames, ignore_index=True)
    else:
        out, _ = build_pairs(pd.DataFrame(columns=list(CORPUS_COLUMNS)), seed=seed, strategies=strategies)
        if hard_negatives:
            out[NEGATIVE_COLUMN] = pd.Series(dtype=object)
    return out, stats


def _merge_text_accounting(into: dict, acc: dict) -> None:
    for key in ("read", "kept", "mentions_rewritten", "speakers_pseudonymised"):
        into[key] = into.get(key, 0) + int(acc[key])
    for group in ("dropped", "redacted"):
        for reason, n in acc[group].items():
            into.setdefault(group, {})[reason] = into.get(group, {}).get(reason, 0) + int(n)
    into["scheme"] = acc["scheme"]


def _merge_counts(into: dict, counts: dict) -> None:
    for strategy, c in counts.items():
        slot = into.setdefault(strategy, {"with_negative": 0, "without": 0, "without_by_reason": {}})
        slot["with_negative"] += int(c.get("with_negative", 0))
        slot["without"] += int(c.get("without", 0))
        for reason, v in c.get("without_by_reason", {}).items():
            slot["without_by_reason"][reason] = slot["without_by_reason"].get(reason, 0) + int(v)
