"""A persistent embedding cache: (model, dim, sha256(text)) -> float32 vector, in DuckDB.

Only the SHA-256 of each text is stored, never the text itself. ``model`` is a namespace
chosen by the embedder (``"openai:text-embedding-3-small"``, ``"voyage:voyage-3-large"``,
``"local:<fingerprint>"``) and must change whenever the vectors would.

Reads and writes are batched through Arrow tables registered with DuckDB (one query per
call, ~10k texts in well under a second); writes run in one transaction, so an interrupted
run leaves either all or none of a batch. The file can be reopened any number of times by
one process at a time (DuckDB holds a file lock while a connection is open).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache", "text_sha256"]

_TABLE = "embeddings"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    model VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    text_sha256 VARCHAR NOT NULL,
    vector FLOAT[] NOT NULL,
    PRIMARY KEY (model, dim, text_sha256)
)
"""


def text_sha256(text: str) -> str:
    """Hex SHA-256 of the UTF-8 bytes of ``text`` (the cache key; the text is never stored)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """DuckDB-backed ``(model, dim, sha256(text)) -> vector`` store; ``path=None`` keeps it in memory.

    >>> cache = EmbeddingCache(None)
    >>> cache.put_many("m", 2, ["a"], np.array([[0.6, 0.8]], np.float32))
    >>> cache.get_many("m", 2, ["a", "b"])["a"].tolist()
    [0.6000000238418579, 0.800000011920929]
    """

    def __init__(self, path: Path | str | None = None) -> None:
        import duckdb

        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path) if self.path is not None else ":memory:")
        self._lock = threading.Lock()
        self._con.execute(_SCHEMA).fetchall()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path) if self.path else ':memory:'})"

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connection(self):
        if self._con is None:
            raise RuntimeError(f"{self!r} is closed")
        return self._con

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute(f"SELECT count(*) FROM {_TABLE}").fetchall()[0][0])

    def count(self, model: str | None = None, dim: int | None = None) -> int:
        """Number of cached vectors, optionally for one model (and dim)."""
        sql, params = f"SELECT count(*) FROM {_TABLE} WHERE TRUE", []
        if model is not None:
            sql, params = sql + " AND model = ?", [*params, model]
        if dim is not None:
            sql, params = sql + " AND dim = ?", [*params, int(dim)]
        with self._lock:
            return int(self._connection().execute(sql, params).fetchall()[0][0])

    def get_many(self, model: str, dim: int, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors (float32, shape ``(dim,)``) of those ``texts`` that are cached; others are absent."""
        import pyarrow as pa

        unique = list(dict.fromkeys(texts))
        if not unique:
            return {}
        text_of = {text_sha256(t): t for t in unique}
        query = pa.table({"text_sha256": pa.array(list(text_of), pa.string())})
        name = f"_cache_query_{id(query):x}"
        with self._lock:
            con = self._connection()
            con.register(name, query)
            try:
                result = con.sql(
                    f"SELECT e.text_sha256, e.vector FROM {_TABLE} e JOIN {name} q USING (text_sha256) "
                    "WHERE e.model = ? AND e.dim = ?",
                    params=[model, int(dim)],
                ).to_arrow_table()
            finally:
                con.unregister(name)
        if result.num_rows == 0:
            return {}
        shas = result.column("text_sha256").to_pylist()
        vectors = result.column("vector").combine_chunks()
        flat = vectors.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        lengths = np.diff(vectors.offsets.to_numpy())
        if (lengths != dim).any():  # never written by put_many; refuse rather than misuse
            raise ValueError(f"embedding cache {self!r} holds vectors of the wrong length for ({model!r}, {dim})")
        matrix = flat.reshape(len(shas), dim)
        return {text_of[s]: matrix[i].copy() for i, s in enumerate(shas)}

    def put_many(self, model: str, dim: int, texts: Sequence[str], vectors: np.ndarray | Sequence) -> None:
        """Store ``vectors[i]`` for ``texts[i]`` (replacing any previous entry), in one transaction."""
        import pyarrow as pa

        texts = list(texts)
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(texts), int(dim)):
            raise ValueError(f"expected vectors of shape ({len(texts)}, {dim}), got {matrix.shape}")
        if not texts:
            return
        if not np.isfinite(matrix).all():
            raise ValueError(f"refusing to cache non-finite vectors for {model!r}")
        # De-duplicate (last wins): one INSERT may not touch the same key twice.
        row_of = {text_sha256(t): i for i, t in enumerate(texts)}
        rows = np.fromiter(row_of.values(), dtype=np.int64, count=len(row_of))
        matrix = np.ascontiguousarray(matrix[rows])
        n = len(rows)
        offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
        table = pa.table(
            {
                "text_sha256": pa.array(list(row_of), pa.string()),
                "vector": pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel(), pa.float32())),
            }
        )
        name = f"_cache_insert_{id(table):x}"
        with self._lock:
            con = self._connection()
            con.register(name, table)
            try:
                con.begin()
                try:
                    con.execute(
                        f"INSERT OR REPLACE INTO {_TABLE} SELECT ?, ?, text_sha256, vector FROM {name}",
                        [model, int(dim)],
                    ).fetchall()  # drain: DuckDB refuses new work while a result is pending
                    con.commit()
                except BaseException:
                    con.rollback()
                    raise
            finally:
                con.unregister(name)
