"""The corpus stage, out of core: the raw Parquet read back in batches, never splitting an upstream record
(a document / exchange / server slice: its rows share ``file`` and ``line``) across two calls;
:func:`~thread_embed_pipeline.corpus.builder.corpus_table` on each piece (conversations never cross
upstream records); the pieces appended as row groups. Accounting balances like the in-memory stage:
``read == kept + sum(dropped)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thread_embed_pipeline import storage
from thread_embed_pipeline.corpus.builder import CORPUS_PANDAS_SCHEMA, DROP_REASONS, corpus_table
from thread_embed_pipeline.schemas import Log
from thread_embed_pipeline.storage import Progress, atomic_parquet_writer


def aligned_batches(path: Path, keys: list[str], batch_rows: int | None) -> Iterator[pa.Table]:
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
    progress = Progress(log, f"corpus/{source}")
    with atomic_parquet_writer(out_path, CORPUS_PANDAS_SCHEMA) as writer:
        for piece in aligned_batches(Path(raw_path), list(cut_keys), batch_rows):
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
                writer.write_table(table, row_group_size=storage.ROW_GROUP_ROWS)
            progress.tick(read, "raw rows")
    progress.tick(read, "raw rows", force=True)
    assert read == kept + sum(dropped.values())
    return {"read": read, "kept": kept, "dropped": dropped, "messages": messages, "conversations": conversations, "linked": linked}
