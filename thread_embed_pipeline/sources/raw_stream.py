"""A source's raw stage, out of core: its pieces (a file source's files parsed whole, or a streamed
source's sampled upstream records chunk by chunk) appended to one Parquet file as row groups, through
the background writer of :mod:`thread_embed_pipeline.storage`. Killed runs leave the previous file whole.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from thread_embed_pipeline import storage
from thread_embed_pipeline.schemas import RAW_SCHEMA, Log
from thread_embed_pipeline.sources.catalog import Source
from thread_embed_pipeline.sources.hf import Sampling
from thread_embed_pipeline.storage import Progress, atomic_parquet_writer


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
    progress = Progress(log, f"raw/{spec.name}")
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
            if pending_rows >= storage.ROW_GROUP_ROWS:
                writer.write_table(pa.concat_tables(pending), row_group_size=storage.ROW_GROUP_ROWS)
                pending, pending_rows = [], 0
            progress.tick(rows, "messages")
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=storage.ROW_GROUP_ROWS)
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
