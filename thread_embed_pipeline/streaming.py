"""Out-of-core raw -> corpus -> pairs for every source: record batches in, Parquet row groups out
(a file source is a stream of one piece).

Memory is bounded by the batch size, not the dataset:

* :func:`write_raw_stream` writes a source's raw pieces (``spec.pieces``: a file source's files
  parsed whole, or a streamed source's sampled upstream records chunk by chunk) to a Parquet file
  as row groups (``pyarrow.parquet.ParquetWriter``).
* :func:`build_corpus_stream` reads the raw Parquet back in batches, never splitting an upstream
  record (a document / exchange / server slice: its rows share ``file`` and ``line``) across two
  calls, runs :func:`corpus.corpus_table` on each piece (conversations never cross upstream
  records) and appends the result.
* :func:`build_pairs_stream` reads the corpus in batches, never splitting a conversation, keeps
  a seeded sample of conversations, and builds pairs (and chat hard negatives) per piece.

Every writer goes to a temporary file next to the target and is renamed into place at the end,
so a killed run leaves the previous version intact. Accounting balances like the in-memory
stages: ``read == kept + sum(dropped)``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thread_embed_pipeline.storage import atomic_path
from thread_embed_pipeline.schemas import Log
from thread_embed_pipeline.corpus import CORPUS_PANDAS_SCHEMA, DROP_REASONS, corpus_frame, corpus_table
from thread_embed_pipeline.hard_negatives import add_chat_hard_negatives
from thread_embed_pipeline.pairs import PairBuilderSettings, build_pairs
from thread_embed_pipeline.text import TextSettings, prepare_text
from thread_embed_pipeline.schemas import CORPUS_COLUMNS, NEGATIVE_COLUMN, PAIR_STRATEGIES, RAW_SCHEMA, hash_fraction
from thread_embed_pipeline.sources.hf import Sampling
from thread_embed_pipeline.sources.catalog import Source


ROW_GROUP_ROWS = 100_000


# dictionary encoding only where values repeat (a chat text column would pay for nothing)
DICTIONARY_COLUMNS = ("source", "file", "split_hint", "channel", "author", "record_type", "platform", "split")


class _BackgroundParquetWriter:
    """A ParquetWriter fed through a queue of at most ``depth`` tables, written on a thread:
    encoding and compression (which release the GIL) overlap with the next batch's parsing,
    and memory stays bounded."""

    def __init__(self, path: str, schema: pa.Schema, depth: int = 2) -> None:
        import queue
        import threading

        self._writer = pq.ParquetWriter(
            path,
            schema,
            compression="zstd",
            compression_level=1,
            use_dictionary=[c for c in DICTIONARY_COLUMNS if c in schema.names],
        )
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._writer.write_table(item[0], row_group_size=item[1])
                except BaseException as err:  # surfaced in write()/close()
                    self._error = err

    def write_table(self, table: pa.Table, row_group_size: int | None = None) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((table, row_group_size))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._writer.close()
        if self._error is not None:
            raise self._error


@contextmanager
def atomic_parquet_writer(path: Path, schema: pa.Schema) -> Iterator[_BackgroundParquetWriter]:
    """A (background) ParquetWriter on a temporary file beside ``path``, renamed onto ``path`` on success only."""
    with atomic_path(path) as tmp:
        writer = _BackgroundParquetWriter(str(tmp), schema)
        try:
            yield writer
            writer.close()
        except BaseException:
            try:
                writer.close()
            except BaseException:
                pass
            raise


class _Progress:
    def __init__(self, log: Log, what: str, every_s: float = 10.0) -> None:
        self.log, self.what, self.every_s = log, what, every_s
        self.start = self.last = time.perf_counter()

    def tick(self, done: int, unit: str = "rows", force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= self.every_s:
            rate = done / max(now - self.start, 1e-9)
            self.log(f"{self.what}: {done:,} {unit} ({rate:,.0f}/s)")
            self.last = now


def write_raw_stream(
    spec: Source,
    root: Path,
    files: list[str],
    sampling: Sampling,
    out_path: Path,
    *,
    batch_rows: int | None = None,
    log: Log = print,
    opener=None,
) -> dict:
    """Write the raw rows of ``spec``'s stream over ``files`` (under ``root``) to ``out_path`` (Parquet).

    The pieces come from ``spec.pieces``: a file source's files parsed whole (one piece), or a
    streamed source's sampled upstream records, ``batch_rows`` (default: the source's) at a time
    (``opener(rel)`` opens a data file as a binary stream: ``ResolvedFiles.open``, local or Hub).

    Returns ``{"units_read", "units_kept", "read" (raw rows), "kept", "dropped_total",
    "by_record_type": {...}, "counts": {...} (what the reader counted besides rows), "files"}``; units are
    upstream records (or servers, or files).
    """
    units_read = units_kept = rows = 0
    by_type: dict[str, int] = {}
    counts: dict[str, int] = {}
    progress = _Progress(log, f"raw/{spec.name}")
    with atomic_parquet_writer(out_path, RAW_SCHEMA) as writer:
        pending: list[pa.Table] = []
        pending_rows = 0
        for piece in spec.pieces(root, files, sampling, batch_rows=batch_rows, opener=opener):
            units_read += piece.units_read
            units_kept += piece.units_kept
            for key, n in (piece.counts or {}).items():
                counts[key] = counts.get(key, 0) + int(n)
            table = piece.table
            if table is None:
                continue
            for item in pc.value_counts(table.column("record_type")).to_pylist():
                by_type[str(item["values"])] = by_type.get(str(item["values"]), 0) + int(item["counts"])
            rows += table.num_rows
            pending.append(table)
            pending_rows += table.num_rows
            if pending_rows >= ROW_GROUP_ROWS:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                pending, pending_rows = [], 0
            progress.tick(rows, "messages")
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
    progress.tick(rows, "messages", force=True)
    return {
        "files": len(files),
        "units_read": units_read,
        "units_kept": units_kept,
        "read": rows,
        "kept": rows,
        "dropped_total": 0,
        "by_record_type": dict(sorted(by_type.items())),
        "counts": dict(sorted(counts.items())),
    }


def _aligned_batches(path: Path, keys: list[str], batch_rows: int | None) -> Iterator[pa.Table]:
    """Arrow tables of a Parquet file in which the rows of one ``keys`` value are never split
    (the file holds each key's rows contiguously). ``batch_rows=None``: the whole file, one piece."""
    if batch_rows is None:
        yield pq.read_table(path)
        return
    carry: pa.Table | None = None
    # pre_buffer=False: with read-ahead buffering, iter_batches holds on to more and more memory
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_rows):
        table = pa.Table.from_batches([batch])
        if carry is not None and carry.num_rows:
            table = pa.concat_tables([carry, table])
        if not table.num_rows:
            continue
        tail = np.ones(table.num_rows, dtype=bool)
        for k in keys:
            column = table.column(k)
            last = column[table.num_rows - 1]
            same = pc.is_null(column) if not last.is_valid else pc.fill_null(pc.equal(column, last), False)
            tail &= np.asarray(same, dtype=bool)
        # the trailing run of the last key waits for the next batch
        cut = table.num_rows
        while cut > 0 and tail[cut - 1]:
            cut -= 1
        if cut == 0:
            carry = table
            continue
        carry = table.slice(cut)
        yield table.slice(0, cut)
    if carry is not None and carry.num_rows:
        yield carry


def build_corpus_stream(
    raw_path: Path,
    out_path: Path,
    *,
    source: str,
    platform: str,
    cut_keys: tuple[str, ...] = ("file", "line"),
    batch_rows: int | None = 200_000,
    link=None,
    log: Log = print,
) -> dict:
    """``corpus.corpus_table`` over a raw Parquet file, piece by piece; writes ``out_path``.

    ``link(piece) -> (piece, counts)``, when given, rewrites each raw piece's links first (the
    disentangler's predicted ``parent_ids`` for a user export without native threads); its counts are
    summed into ``"linked"``.

    ``batch_rows=None``: the whole file is one piece (a file source), so the output is sorted by
    ``conversation_id`` throughout. The file carries pandas metadata, so ``pd.read_parquet`` gives
    the corpus dtypes (``corpus.corpus_frame``).

    Returns the summed accounting ``{"read", "kept", "dropped": {reason: n}, "messages/<split>",
    "conversations/<split>"}``.
    """
    read = kept = 0
    dropped = {r: 0 for r in DROP_REASONS}
    messages: dict[str, int] = {}
    conversations: dict[str, int] = {}
    linked: dict[str, int] = {}
    progress = _Progress(log, f"corpus/{source}")
    with atomic_parquet_writer(out_path, CORPUS_PANDAS_SCHEMA) as writer:
        for piece in _aligned_batches(Path(raw_path), list(cut_keys), batch_rows):
            if link is not None:
                piece, link_counts = link(piece)
                for key, n in link_counts.items():
                    linked[key] = linked.get(key, 0) + int(n)
            table, acc = corpus_table(piece, source=source, platform=platform)
            table = table.replace_schema_metadata(CORPUS_PANDAS_SCHEMA.metadata)
            read += acc["read"]
            kept += acc["kept"]
            for r, v in acc["dropped"].items():
                dropped[r] = dropped.get(r, 0) + v
            if table.num_rows:
                per_split = table.group_by("split").aggregate([("conversation_id", "count"), ("conversation_id", "count_distinct")])
                for row in per_split.to_pylist():
                    messages[row["split"]] = messages.get(row["split"], 0) + row["conversation_id_count"]
                    conversations[row["split"]] = conversations.get(row["split"], 0) + row["conversation_id_count_distinct"]
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            progress.tick(read, "raw rows")
    progress.tick(read, "raw rows", force=True)
    assert read == kept + sum(dropped.values())
    return {"read": read, "kept": kept, "dropped": dropped, "messages": messages, "conversations": conversations, "linked": linked}


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
    progress = _Progress(log, "pairs")
    taken = 0
    for table in _aligned_batches(Path(corpus_path), ["conversation_id"], batch_rows):
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
