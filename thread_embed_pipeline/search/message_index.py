"""A workspace's whole history as a message index: every message embedded once, kept in LanceDB with an
approximate-nearest-neighbour index, searched message by message and answered thread by thread.

* **Rows.** One per message of a text-stage table (pseudonymised: nothing here is upstream of the text
  stage): ``message_id`` (``<conversation_id>#<message_idx>``), ``conversation_id``, ``position``,
  ``text`` (``schemas.format_message``), ``text_sha256`` and ``vector`` (float32, the index's dim).
* **Encoding** goes through an embedder whose vectors are cached by (model fingerprint, text)
  (:class:`~.evaluation.embedders.SentenceTransformerEmbedder` over an
  :class:`~.evaluation.embedding_cache.EmbeddingCache`): a re-exported workspace re-encodes only
  messages it has never seen, and an index rebuilt with other index parameters encodes nothing.
* **The index.** A LanceDB table (``<location>/messages.lance``; a folder, or any URI LanceDB opens:
  ``s3://…``, ``gs://…``, ``az://…``, ``db://…`` for LanceDB Cloud/Enterprise; embedded by default: no
  server). The model fingerprint, dim, precision and index parameters live in the table's schema
  metadata, so the table carries them wherever it is copied. From
  :attr:`IndexSettings.ann_min_rows` rows on, an ``IVF_HNSW_SQ`` index (HNSW graphs inside IVF partitions,
  over 8-bit scalar-quantised vectors, cosine); a query reads ``refine_factor`` times more candidates and
  re-ranks them on the stored float32 vectors. Smaller tables are searched exactly.
* **Incremental.** :func:`update_index` adds the new messages and deletes the vanished ones; LanceDB
  searches rows added after the index was trained by a flat scan, and ``optimize()`` folds them into the
  index without retraining it. Another model fingerprint or dim rebuilds the table.
* **Threads from messages.** :meth:`MessageIndex.thread_hits` ranks threads by their best message
  (max-sim's ``max``), fused with BM25 over the thread texts by the dev-chosen weight
  (:func:`.evaluation.fusion.convex_fuse`), over the union of the dense and the BM25 candidates.

``docs/search_scale.md`` has the measurements that chose the store and the defaults; ``docs/deploy.md``
says how to move the table to object storage or a LanceDB server.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from thread_embed_pipeline import storage
from thread_embed_pipeline.evaluation.embedding_cache import text_sha256
from thread_embed_pipeline.schemas import Log, format_message, is_missing

__all__ = ["IndexSettings", "MessageIndex", "ThreadHit", "default_index_dir", "message_rows", "update_index"]

TABLE = "messages"
META_KEY = b"thread_embed"  # the table's schema metadata: what built it
INDEX_TYPES = ("IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_PQ", "IVF_SQ", "IVF_FLAT")
PRECISION = "float32 rows, int8 (SQ) ANN index, float32 rescoring"


@dataclass(frozen=True)
class IndexSettings:
    """How the message index is built and searched (defaults chosen in docs/search_scale.md)."""

    index_type: str = "IVF_HNSW_SQ"
    ann_min_rows: int = 50_000  # below it, exact search (a flat scan is fast, and recall is 1.0)
    num_partitions: int | None = None  # IVF partitions; None: about one per 20,000 rows
    m: int = 20  # HNSW links per node
    ef_construction: int = 150
    ef: int = 64  # HNSW search width at query time (at least k * refine_factor)
    nprobes: int = 4  # IVF partitions read per query
    refine_factor: int = 4  # candidates re-ranked on float32 vectors, as a multiple of k
    candidates: int = 200  # messages a thread query reads before grouping them into threads

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {self.index_type!r}")
        small = {k: v for k, v in asdict(self).items() if isinstance(v, int) and k != "ann_min_rows" and v < 1}
        if small or self.ann_min_rows < 0:
            raise ValueError(f"index settings must be positive: {small or {'ann_min_rows': self.ann_min_rows}}")

    def partitions(self, rows: int) -> int:
        return self.num_partitions or max(1, round(rows / 20_000))


INDEX_ENV = "THREAD_EMBED_MESSAGE_INDEX"


def default_index_dir() -> Path | str:
    """Where the ``message_index`` asset keeps the index: ``THREAD_EMBED_MESSAGE_INDEX`` (a folder or a LanceDB
    URI such as ``s3://bucket/thread-embed``) when set, else ``<data dir>/search/messages/``."""
    return os.environ.get(INDEX_ENV) or storage.data_dir() / "search" / "messages"


def message_rows(text: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """One row per message of a text-stage table (``split`` None: every split), in thread order."""
    frame = text if split is None else text[text["split"] == split]
    frame = frame.sort_values(["conversation_id", "message_idx"], kind="stable")
    texts = [format_message(None if is_missing(a) else a, t) for a, t in zip(frame["author"], frame["text"])]
    rows = pd.DataFrame(
        {
            "message_id": frame["conversation_id"].astype(str) + "#" + frame["message_idx"].astype(str),
            "conversation_id": frame["conversation_id"].astype(str).to_numpy(),
            "position": frame.groupby("conversation_id", sort=False).cumcount().to_numpy(),
            "text": texts,
        }
    )
    if rows["message_id"].duplicated().any():
        dup = rows.loc[rows["message_id"].duplicated(), "message_id"].iloc[0]
        raise ValueError(f"message ids repeat (e.g. {dup}): (conversation_id, message_idx) must be unique")
    rows["text_sha256"] = [text_sha256(t) for t in rows["text"]]
    return rows.reset_index(drop=True)


def _quote(values: Sequence[str]) -> str:
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def _table(rows: pd.DataFrame, vectors: np.ndarray, meta: dict):
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    table = pa.Table.from_pandas(rows[["message_id", "conversation_id", "position", "text", "text_sha256"]], preserve_index=False)
    table = table.append_column("vector", pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]))
    return table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def _connect(location: Path | str):
    import lancedb

    if "://" not in str(location):
        Path(location).mkdir(parents=True, exist_ok=True)
    return lancedb.connect(str(location))


def _read_meta(db) -> dict:
    if TABLE not in db.list_tables().tables:
        return {}
    return json.loads((db.open_table(TABLE).schema.metadata or {}).get(META_KEY, b"{}"))


def update_index(
    location: Path | str,
    rows: pd.DataFrame,
    encode: Callable[[list[str]], np.ndarray],
    *,
    model_id: str,
    dim: int,
    settings: IndexSettings = IndexSettings(),
    log: Log = None,
) -> dict:
    """Bring the index at ``location`` (a folder or a LanceDB URI) up to date with ``rows`` (:func:`message_rows`); ``encode(texts)`` returns
    their L2-normalised vectors at ``dim``. The same model (``model_id``) and dim: only new or changed
    messages are encoded and added, vanished ones deleted (``mode`` "incremental"); otherwise, or with no
    index yet, the table is rebuilt (``mode`` "rebuild"). Returns what changed and what it cost."""
    say = log or (lambda _m: None)
    start = time.perf_counter()
    db = _connect(location)
    meta = _read_meta(db)
    same = meta.get("model_id") == model_id and meta.get("dim") == int(dim)
    record = {"model_id": model_id, "dim": int(dim), "precision": PRECISION, "settings": asdict(settings)}
    encode_s = 0.0

    def encoded(texts: list[str]) -> np.ndarray:
        nonlocal encode_s
        t0 = time.perf_counter()
        vectors = np.asarray(encode(texts), dtype=np.float32) if texts else np.zeros((0, dim), np.float32)
        encode_s += time.perf_counter() - t0
        if vectors.shape != (len(texts), dim):
            raise ValueError(f"encode returned {vectors.shape}, expected {(len(texts), dim)}")
        return vectors

    if same:
        table = db.open_table(TABLE)
        have = table.search().select(["message_id", "text_sha256"]).limit(None).to_pandas()
        known = dict(zip(have["message_id"], have["text_sha256"]))
        wanted = dict(zip(rows["message_id"], rows["text_sha256"]))
        stale = [m for m, sha in known.items() if wanted.get(m) != sha]  # vanished, or edited
        new = rows[[known.get(m) != sha for m, sha in zip(rows["message_id"], rows["text_sha256"])]]
        say(f"message index {location}: {len(known)} messages, {len(new)} new or changed, {len(stale)} to delete")
        for i in range(0, len(stale), 1000):
            table.delete(f"message_id IN ({_quote(stale[i:i + 1000])})")
        if len(new):
            table.add(_table(new, encoded(new["text"].tolist()), meta))
        indexed = bool(table.list_indices())
        if indexed and (len(new) or stale):
            table.optimize()  # folds the new rows into the trained index; no retraining
        elif not indexed and table.count_rows() >= settings.ann_min_rows:
            _create_ann(table, settings)
        mode, added, removed = "incremental", len(new), len(stale)
    else:
        why = "no index yet" if not meta else f"model or dim changed ({meta.get('model_id', '?')[:12]} at {meta.get('dim')} -> {model_id[:12]} at {dim})"
        say(f"building the message index of {len(rows)} messages in {location} ({why})")
        table = db.create_table(TABLE, data=_table(rows, encoded(rows["text"].tolist()), record), mode="overwrite")
        if len(rows) >= settings.ann_min_rows:
            _create_ann(table, settings)
        mode, added, removed = "rebuild", len(rows), 0
    summary = {
        "mode": mode, "messages": int(table.count_rows()), "added": int(added), "removed": int(removed),
        "model_id": model_id, "dim": int(dim), "precision": PRECISION, "ann": bool(table.list_indices()),
        "settings": asdict(settings), "encode_s": round(encode_s, 2), "seconds": round(time.perf_counter() - start, 2),
        # on disk, for a local index (a remote one: None)
        "bytes": sum(p.stat().st_size for p in (Path(location) / f"{TABLE}.lance").rglob("*") if p.is_file()) if "://" not in str(location) else None,
    }
    say(f"message index {mode}: {summary['messages']} messages (+{added} / -{removed}) in {summary['seconds']:.1f} s, {summary['encode_s']:.1f} s of it encoding")
    return summary


def _create_ann(table, settings: IndexSettings) -> None:
    from lancedb import index

    kinds = {"IVF_HNSW_SQ": index.IvfHnswSq, "IVF_HNSW_PQ": index.IvfHnswPq, "IVF_PQ": index.IvfPq, "IVF_SQ": index.IvfSq, "IVF_FLAT": index.IvfFlat}
    kwargs = {"distance_type": "cosine", "num_partitions": settings.partitions(table.count_rows())}
    if "HNSW" in settings.index_type:
        kwargs.update(m=settings.m, ef_construction=settings.ef_construction)
    table.create_index("vector", config=kinds[settings.index_type](**kwargs), replace=True)


@dataclass(frozen=True)
class ThreadHit:
    conversation_id: str
    score: float  # the fused score
    dense: float  # the thread's best message cosine
    message: int  # the position of that message in its thread
    text: str  # that message


class MessageIndex:
    """An index written by :func:`update_index`, opened for search."""

    def __init__(self, location: Path | str, *, settings: IndexSettings | None = None) -> None:
        import lancedb

        self.location = location
        db = lancedb.connect(str(location))
        meta = _read_meta(db)
        if not meta:
            raise FileNotFoundError(f"no message index at {location} (no {TABLE} table built by update_index): materialise message_index")
        self.model_id, self.dim = meta["model_id"], int(meta["dim"])
        self.settings = settings or IndexSettings(**meta.get("settings", {}))
        self.table = db.open_table(TABLE)
        self._bm25 = None

    def with_settings(self, **changes) -> "MessageIndex":
        """The same table searched with other query-time settings (``ef``, ``nprobes``, ``refine_factor``...)."""
        other = object.__new__(MessageIndex)
        other.__dict__.update(self.__dict__)
        other.settings = replace(self.settings, **changes)
        return other

    def search_messages(self, query_vector: np.ndarray, k: int = 10, *, exact: bool = False, columns: Sequence[str] = ("message_id", "conversation_id", "position")) -> pd.DataFrame:
        """The ``k`` nearest messages (cosine, best first): ``columns`` plus ``score``. ``exact``: a flat scan."""
        query = self.table.search(np.asarray(query_vector, dtype=np.float32)).distance_type("cosine").select([*columns, "_distance"]).limit(k)
        if exact or not self.table.list_indices():
            query = query.bypass_vector_index()
        else:
            # HNSW must hold at least the k * refine_factor candidates it hands to the re-ranking
            ef = max(self.settings.ef, k * self.settings.refine_factor)
            query = query.nprobes(self.settings.nprobes).ef(ef).refine_factor(self.settings.refine_factor)
        found = query.to_pandas()
        found["score"] = 1.0 - found.pop("_distance")
        return found

    def _threads(self):
        """(conversation ids, their texts, a BM25 index over them), built once per open index."""
        if self._bm25 is None:
            from thread_embed_pipeline.evaluation.retrieval import bm25_index

            rows = self.table.search().select(["conversation_id", "position", "text"]).limit(None).to_pandas().sort_values(["conversation_id", "position"], kind="stable")
            texts = rows.groupby("conversation_id", sort=True)["text"].agg("\n".join)
            self._bm25 = (texts.index.to_list(), texts.to_list(), bm25_index(texts.to_list()))
        return self._bm25

    def thread_messages(self, conversation_ids: Sequence[str]) -> dict[str, list[str]]:
        """Each thread's messages, in order."""
        rows = self.table.search().where(f"conversation_id IN ({_quote(conversation_ids)})").select(["conversation_id", "position", "text"]).limit(None).to_pandas()
        rows = rows.sort_values(["conversation_id", "position"], kind="stable")
        return {cid: group["text"].tolist() for cid, group in rows.groupby("conversation_id", sort=False)}

    def thread_hits(self, query: str, query_vector: np.ndarray, *, weight: float, k: int = 10, pool: int = 50) -> list[ThreadHit]:
        """The ``k`` best threads for ``query``: the threads of its ``settings.candidates`` nearest messages and
        BM25's ``pool`` best threads; each scored by its best message's cosine (over all its messages) and by
        BM25, fused as ``weight * z(dense) + (1 - weight) * z(BM25)`` over that union."""
        from thread_embed_pipeline.evaluation.fusion import convex_fuse
        from thread_embed_pipeline.evaluation.retrieval import bm25_query_tokens, bm25_scores

        ids, _texts, bm25 = self._threads()
        lexical_all = bm25_scores(bm25, bm25_query_tokens([query])[0], len(ids))
        near = self.search_messages(query_vector, self.settings.candidates)
        dense_first = list(dict.fromkeys(near["conversation_id"]))[:pool]
        lexical_first = [ids[i] for i in np.argsort(-lexical_all, kind="stable")[:pool] if lexical_all[i] > 0]
        union = list(dict.fromkeys([*dense_first, *lexical_first]))
        if not union:
            return []
        rows = self.table.search().where(f"conversation_id IN ({_quote(union)})").select(["conversation_id", "position", "text", "vector"]).limit(None).to_arrow()
        vectors = np.asarray(rows.column("vector").combine_chunks().flatten(), dtype=np.float32).reshape(rows.num_rows, -1)
        cos = vectors @ np.asarray(query_vector, dtype=np.float32)
        frame = pd.DataFrame({"conversation_id": rows.column("conversation_id").to_pylist(), "position": rows.column("position").to_pylist(), "cos": cos})
        best = frame.loc[frame.groupby("conversation_id", sort=False)["cos"].idxmax()].set_index("conversation_id")
        dense = best.loc[union, "cos"].to_numpy(dtype=np.float32)
        where = {cid: i for i, cid in enumerate(ids)}
        fused = convex_fuse(np.array([lexical_all[where[c]] for c in union], dtype=np.float32), dense, weight)
        texts = dict(zip(zip(rows.column("conversation_id").to_pylist(), rows.column("position").to_pylist()), rows.column("text").to_pylist()))
        order = np.argsort(-fused, kind="stable")[:k]
        return [ThreadHit(union[i], float(fused[i]), float(dense[i]), int(best.at[union[i], "position"]), texts[(union[i], int(best.at[union[i], "position"]))]) for i in order]
