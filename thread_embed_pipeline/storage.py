"""Where the project keeps its data, models and the default dataset mirror, and how it replaces files (atomically).

Everything is relative to the project root unless an environment variable says otherwise, so no
machine-specific path is ever written into the repository.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def data_dir() -> Path:
    """Asset storage (Parquet, JSON, the DuckDB warehouse, reports): ``THREAD_EMBED_DATA_DIR`` or ``data/``."""
    return _env_path("THREAD_EMBED_DATA_DIR", PROJECT_ROOT / "data")


def models_dir() -> Path:
    """Trained checkpoints: ``THREAD_EMBED_MODELS_DIR`` or ``models/``."""
    return _env_path("THREAD_EMBED_MODELS_DIR", PROJECT_ROOT / "models")


DEFAULT_MIRROR = PROJECT_ROOT.parent / "shared" / "datasets"


def default_mirror_dir() -> str | None:
    """The local dataset mirror: ``THREAD_EMBED_MIRROR``, else ``../shared/datasets`` next to the project.

    ``THREAD_EMBED_MIRROR=none`` (or empty) switches the mirror off: sources are downloaded upstream.
    """
    value = os.environ.get("THREAD_EMBED_MIRROR")
    if value is None:
        return str(DEFAULT_MIRROR)
    if value.strip().lower() in ("", "none", "off"):
        return None
    return value


def max_files_per_folder() -> int | None:
    """``THREAD_EMBED_MAX_FILES_PER_FOLDER``: read only the first N file groups of each source folder
    (a quick slice of the real data for smoke tests and the UI test); unset: everything."""
    value = os.environ.get("THREAD_EMBED_MAX_FILES_PER_FOLDER", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"THREAD_EMBED_MAX_FILES_PER_FOLDER must be a positive integer, got {value!r}")
    return int(value)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary file beside ``path`` to write to; renamed onto ``path`` when the block succeeds.

    The one way this project replaces a file: a reader sees the old version or the new one, never a
    half-written file. On failure the temporary file is removed and ``path`` is untouched; after a
    success, temporary files of the same target left by a killed earlier write are removed too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def atomic_write_bytes(path: Path | str, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a temporary file, which then replaces ``path`` (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8, ``\\n`` line ends) atomically."""
    return atomic_write_bytes(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


def replace_dir(staging: Path, out: Path) -> Path:
    """Put the complete folder ``staging`` at ``out`` (a sibling), replacing what was there: the old
    folder is moved aside first and removed after, so ``out`` is never half-written."""
    staging, out = Path(staging), Path(out)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
    return out


# ---- Parquet written in row groups, on a background thread, atomically

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

class Progress:
    """Logs ``done`` units and their rate at most every ``every_s`` seconds (and when ``force``d)."""

    def __init__(self, log: Callable[[str], None], what: str, every_s: float = 10.0) -> None:
        self.log, self.what, self.every_s = log, what, every_s
        self.start = self.last = time.perf_counter()

    def tick(self, done: int, unit: str = "rows", force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= self.every_s:
            rate = done / max(now - self.start, 1e-9)
            self.log(f"{self.what}: {done:,} {unit} ({rate:,.0f}/s)")
            self.last = now
