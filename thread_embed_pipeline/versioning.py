"""Content fingerprints (what an asset wrote, what a source holds) and the stages' code versions.

A stage's data version is a hash of its output's content, so rebuilding an asset that comes out the
same changes nothing downstream; a stage's code version is bumped by hand whenever its logic changes
what it writes, so every asset of that stage (and, as their outputs change, everything below) is
rebuilt. Both are read by the automation condition in ``assets/automation.py``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa

# Bump the version of a stage when its code changes its output (e.g. a parser fix, a new pair rule).
CODE_VERSIONS: dict[str, str] = {
    "raw": "1",  # sources/*.py parsers, streaming.write_raw_stream
    "corpus": "1",  # corpus.py, streaming.corpus_piece_arrow
    "text": "1",  # text/ (pseudonyms, mentions, redaction, bot and short-conversation drops)
    "pairs": "2",  # pairs.py, hard_negatives.py (v2: built from text/<source>)
    "eval_sets": "2",  # (v2: protocols, dev split)  # evaluation/eval_sets.py, evaluation/external.py
    "training_pairs": "1",  # pairs.select_training_pairs
    "model": "2",  # training.py (v2: time budget)
    "eval_report": "2",  # (v2: dev-tuned score fusion)  # evaluation/retrieval.py, metrics.py, statistics.py, report.py
}

CHUNK = 1 << 20


def code_version(stage: str) -> str:
    return f"{stage}-v{CODE_VERSIONS[stage]}"


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the frame's Arrow IPC serialisation: same columns, dtypes and values -> same hash."""
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def files_content_fingerprint(paths: Iterable[Path]) -> str:
    """sha256 over the names and contents of several files (a checkpoint's weights)."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        h.update(path.name.encode() + b"\0" + file_fingerprint(path).encode())
    return h.hexdigest()


def files_fingerprint(root: Path, rel_paths: Iterable[str]) -> tuple[str, dict]:
    """A cheap fingerprint of a folder's files (path, size, mtime): what a refresh looks at to decide
    whether a source changed without reading it. Returns (hash, {"files", "bytes", "missing",
    "newest_mtime"}), the last as seconds since the epoch (None without files)."""
    h = hashlib.sha256()
    files = total = missing = 0
    newest: float | None = None
    for rel in sorted(rel_paths):
        path = Path(root) / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            missing += 1
            h.update(f"{rel}\0missing\n".encode())
            continue
        files += 1
        total += st.st_size
        newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest(), {"files": files, "bytes": total, "missing": missing, "newest_mtime": newest}


def value_fingerprint(value) -> str:
    """Data version of an asset value: a DataFrame's content or a (Parquet) file's bytes."""
    if isinstance(value, pd.DataFrame):
        return frame_fingerprint(value)
    if isinstance(value, Path):
        return file_fingerprint(value)
    raise TypeError(f"no fingerprint for {type(value).__name__}")
