"""The recommended retriever, for your own chat: BM25 + the fine-tuned model, fused as in the eval.

``HybridRetriever`` ranks documents (threads, conversation windows) for a query (a message or a
question) by ``weight * z(dense) + (1 - weight) * z(bm25)``: cosine similarity of the checkpoint's
embeddings (truncated to ``dim``, a Matryoshka dim) and BM25 scores from ``bm25s`` with exactly the
eval's tokenisation (``evaluation.retrieval.BM25_TOKENIZE_KWARGS``), each standardised over the
candidates (``evaluation.fusion.convex_fuse``). The weight is the one the eval report chose on the
dev split; ``eval_report`` stores it in ``data/reports/hybrid_retriever.json``.

Texts should look like the training text: one ``speaker: text`` line per message
(``schemas.format_window``), with speakers pseudonymised and URLs / e-mails / secrets redacted
(``text.prepare_text`` does that for a corpus-shaped frame; ``text.redact_text`` for one text).

    from thread_embed_pipeline.search import HybridRetriever
    retriever = HybridRetriever.from_checkpoint("models/thread-embed-minilm")
    retriever.index(["speaker_1: grub fails after the upgrade\\nspeaker_2: reinstall grub-pc", ...])
    retriever.search("speaker_3: grub error 17 after upgrading?", k=5)   # [(doc index, score), ...]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from thread_embed_pipeline import storage
from thread_embed_pipeline.evaluation.embedders import encode_texts, model_fingerprint, truncate_and_normalize
from thread_embed_pipeline.evaluation.fusion import convex_fuse
from thread_embed_pipeline.evaluation.maxsim import aggregate, best_messages, check_aggregation, flatten_messages, top_message_scores
from thread_embed_pipeline.evaluation.retrieval import bm25_index, bm25_query_tokens, bm25_scores
from thread_embed_pipeline.schemas import format_message, is_missing
from thread_embed_pipeline.storage import atomic_write_bytes, atomic_write_text

SETTINGS_FILE = "hybrid_retriever.json"


class SearchHit(NamedTuple):
    """One ranked document: its index in the indexed list, its fused score, and (max-sim) the position of
    its best-matching message among its messages (None when documents are encoded whole)."""

    document: int
    score: float
    message: int | None = None


class HybridRetriever:
    """BM25 + dense score fusion over an in-memory document list (see the module docstring).

    With ``maxsim`` (an aggregation of :mod:`.evaluation.maxsim`: ``max``, ``top2``, ``max+0.1doc``, ...)
    the dense score of a document is that of its messages, each encoded on its own: :meth:`index` then
    takes each document's messages, and a hit says which message matched."""

    def __init__(self, model, *, weight: float, dim: int | None = None, maxsim: str | None = None, batch_size: int = 64) -> None:
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"weight must be in [0, 1] (the dense share), got {weight}")
        full = int(model.get_embedding_dimension())
        if dim is not None and not 1 <= int(dim) <= full:
            raise ValueError(f"dim must be between 1 and the model's {full} dims, got {dim}")
        self.model = model
        self.weight = float(weight)
        self.dim = int(dim) if dim is not None else full
        self.maxsim = check_aggregation(maxsim) if maxsim is not None else None
        self.batch_size = batch_size
        # an evaluation embedder of the same model (``.embed(texts, dim)``, e.g. one over the embedding cache
        # that eval_report filled): when set, index-time encoding goes through it, so texts already
        # encoded for the eval are not encoded again
        self.embedder = None
        self._docs: list[str] = []
        self._doc_emb: np.ndarray | None = None
        self._msg_emb: np.ndarray | None = None
        self._starts: np.ndarray | None = None
        self._bm25 = None

    @classmethod
    def from_checkpoint(
        cls, checkpoint_dir: str | Path, *, settings: str | Path | None = None, device: str | None = None, **overrides
    ) -> "HybridRetriever":
        """The checkpoint with the weight, dim and max-sim aggregation that ``eval_report`` chose on dev.

        They are read from ``settings`` when given, else from a ``hybrid_retriever.json`` beside the
        checkpoint (a release folder carries one), else from the eval report's
        ``<data dir>/reports/hybrid_retriever.json``.
        """
        from thread_embed_pipeline.models import load_sentence_model

        candidates = [Path(settings)] if settings is not None else [Path(checkpoint_dir) / SETTINGS_FILE, storage.data_dir() / "reports" / SETTINGS_FILE]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            tried = " or ".join(str(c) for c in candidates)
            raise FileNotFoundError(f"no {SETTINGS_FILE} at {tried}: run eval_report (it chooses the weight on dev) or pass weight= to HybridRetriever")
        recorded = json.loads(path.read_text(encoding="utf-8"))
        expected = recorded.get("model_fingerprint")
        if expected and Path(checkpoint_dir).is_dir() and model_fingerprint(checkpoint_dir) != expected:
            raise ValueError(
                f"{path} holds the weight chosen for another checkpoint than {checkpoint_dir} (its model fingerprint differs): "
                "run eval_report on this checkpoint, or pass settings= or weight="
            )
        kwargs = {"weight": recorded["weight"], "dim": recorded.get("dim"), "maxsim": recorded.get("maxsim"), **overrides}
        return cls(load_sentence_model(str(checkpoint_dir), device=device), **kwargs)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.embedder is not None:
            return np.asarray(self.embedder.embed(list(texts), self.dim), dtype=np.float32)
        emb = encode_texts(self.model, list(texts), batch_size=self.batch_size)
        return truncate_and_normalize(np.asarray(emb, dtype=np.float32), self.dim)

    def _fit(self, embeddings, rows: int, what: str) -> np.ndarray:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != rows or embeddings.shape[1] < self.dim:
            raise ValueError(f"{what} must be {rows} rows of at least {self.dim} dims, got {embeddings.shape}")
        return truncate_and_normalize(embeddings, self.dim)

    def index(
        self, documents: Sequence[str], embeddings: np.ndarray | None = None, *, messages: Sequence[Sequence[str]] | None = None, message_embeddings: np.ndarray | None = None
    ) -> "HybridRetriever":
        """Index ``documents``; ``embeddings`` (one row per document, at least ``dim`` wide) skips encoding
        them. With ``maxsim``, ``messages`` (each document's messages) are required, and
        ``message_embeddings`` (one row per message, documents in order) skips encoding those."""
        documents = [str(d) for d in documents]
        if not documents:
            raise ValueError("nothing to index: documents is empty")
        self._docs = documents
        self._doc_emb = self._embed(documents) if embeddings is None else self._fit(embeddings, len(documents), "embeddings")
        self._bm25 = bm25_index(documents)
        if self.maxsim is not None:
            if messages is None or len(messages) != len(documents) or not all(len(m) for m in messages):
                raise ValueError(f"a max-sim retriever ({self.maxsim}) needs every document's messages (at least one each)")
            flat, self._starts = flatten_messages(messages)
            self._msg_emb = self._embed(flat) if message_embeddings is None else self._fit(message_embeddings, len(flat), "message_embeddings")
        return self

    def _scores(self, query: str) -> tuple[np.ndarray, np.ndarray | None]:
        if self._doc_emb is None:
            raise RuntimeError("call index(documents) before searching")
        q = self._embed([query])
        dense = self._doc_emb @ q[0]
        best = None
        if self.maxsim is not None:
            top = top_message_scores(q, self._msg_emb, self._starts)[0]
            dense = aggregate(top, dense, self.maxsim)
            best = best_messages(self._msg_emb @ q[0], self._starts)
        lexical = bm25_scores(self._bm25, bm25_query_tokens([query])[0], len(self._docs))
        return convex_fuse(lexical, dense, self.weight), best

    def scores(self, query: str) -> np.ndarray:
        """The fused score of every indexed document for one query."""
        return self._scores(query)[0]

    def hits(self, query: str, k: int = 10) -> list[SearchHit]:
        """The ``k`` best documents, best first, each with its best-matching message under max-sim."""
        fused, best = self._scores(query)
        top = np.argsort(-fused, kind="stable")[:k]
        return [SearchHit(int(i), float(fused[i]), None if best is None else int(best[i])) for i in top]

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` best documents as (index into the indexed list, fused score), best first."""
        return [(h.document, h.score) for h in self.hits(query, k)]


def write_retriever_settings(
    folder: str | Path, *, weight: float, dim: int, chosen_on: str, scope: str, fingerprint: str | None = None, maxsim: str | None = None
) -> Path:
    """Record the dev-chosen fusion weight (and max-sim aggregation, None: documents encoded whole) as
    ``<folder>/hybrid_retriever.json`` (read by :meth:`HybridRetriever.from_checkpoint`, which refuses it
    for a checkpoint whose ``evaluation.embedders.model_fingerprint`` is not ``fingerprint``)."""
    path = Path(folder) / SETTINGS_FILE
    dense = f"max-sim over each document's messages ({maxsim})" if maxsim else "cosine of the whole document's embedding"
    payload = {"weight": float(weight), "dim": int(dim), "maxsim": maxsim, "chosen_on": chosen_on, "scope": scope, "fusion": f"weight * z(dense) + (1 - weight) * z(bm25); dense: {dense}"}
    if fingerprint:
        payload["model_fingerprint"] = fingerprint
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


# --- chat search: an index of a source's threads, and the CLI --------------------------------------

INDEX_PRECISION = "float32"


def thread_documents(text: pd.DataFrame, split: str | None = "test") -> pd.DataFrame:
    """One document per conversation of a text-stage table (``split`` None: every split):
    ``conversation_id, split, n_messages, messages, text``: its messages (``format_message`` each, in
    message order) and ``text``, their ``format_window``."""
    frame = text if split is None else text[text["split"] == split]
    if frame.empty:
        raise ValueError(f"no conversation in split {split!r}" if split else "no conversation to index")
    frame = frame.sort_values(["conversation_id", "message_idx"], kind="stable")
    rows = []
    for cid, conv in frame.groupby("conversation_id", sort=True):
        messages = [format_message(None if is_missing(a) else a, t) for a, t in zip(conv["author"], conv["text"])]
        rows.append({"conversation_id": cid, "split": conv["split"].iat[0], "n_messages": len(conv), "messages": messages, "text": "\n".join(messages)})
    return pd.DataFrame(rows)


def index_path(name: str, split: str) -> Path:
    """Where the index of a source's (or corpus file's) ``split`` threads lives: ``<data dir>/search/<name>__<split>.parquet``."""
    return storage.data_dir() / "search" / f"{name}__{split}.parquet"


def _index_files(path: Path) -> tuple[Path, Path]:
    """(the threads' file, the messages' file) of an index: ``<name>.parquet`` and ``<name>.messages.parquet``."""
    path = Path(path)
    return path, path.with_name(path.stem + ".messages.parquet")


def load_or_build_index(path: Path, documents: pd.DataFrame, retriever: HybridRetriever, *, model_id: str, log=print) -> tuple[np.ndarray, np.ndarray | None]:
    """(the documents' embeddings, their messages' embeddings, None unless the retriever is max-sim), from
    the index files when they were built for the same model, dim and documents; else encoded and written
    (Parquet: the threads, one embedding per row, and beside them one row per message with its embedding;
    ``model_id`` / ``dim`` / ``precision`` / ``documents_sha256`` in their key-value metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thread_embed_pipeline.versioning import frame_fingerprint

    threads_path, messages_path = _index_files(path)
    want = {"model_id": model_id, "dim": str(retriever.dim), "precision": INDEX_PRECISION, "documents_sha256": frame_fingerprint(documents[["conversation_id", "text"]])}
    need_messages = retriever.maxsim is not None

    def current(p: Path):
        if not p.is_file():
            return None
        table = pq.read_table(p)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        return table if all(meta.get(k) == v for k, v in want.items()) else None

    threads, messages = current(threads_path), current(messages_path) if need_messages else None
    if threads is not None and (messages is not None or not need_messages):
        log(f"search index {threads_path}: {threads.num_rows} threads" + (f", {messages.num_rows} messages" if messages is not None else "") + f", {model_id} at {retriever.dim} dims ({INDEX_PRECISION})")
        stack = lambda t: np.stack(t.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)  # noqa: E731
        return stack(threads), stack(messages) if messages is not None else None
    log(f"building the search index of {len(documents)} threads ({model_id} at {retriever.dim} dims" + (", message by message" if need_messages else "") + f") into {threads_path}")
    emb = retriever._embed(documents["text"].tolist())
    table = pa.Table.from_pandas(documents.drop(columns="messages"), preserve_index=False).append_column("embedding", pa.array(list(emb), pa.list_(pa.float32())))
    atomic_write_bytes(threads_path, lambda tmp: pq.write_table(table.replace_schema_metadata(want), tmp))
    msg_emb = None
    if need_messages:
        exploded = documents[["conversation_id", "messages"]].explode("messages").rename(columns={"messages": "text"})
        exploded.insert(1, "position", exploded.groupby("conversation_id").cumcount())
        msg_emb = retriever._embed(exploded["text"].tolist())
        rows = pa.Table.from_pandas(exploded.reset_index(drop=True), preserve_index=False).append_column("embedding", pa.array(list(msg_emb), pa.list_(pa.float32())))
        atomic_write_bytes(messages_path, lambda tmp: pq.write_table(rows.replace_schema_metadata(want), tmp))
    return emb, msg_emb


def messages_to_read(messages: Sequence[str], query: str, n: int = 3, first: int | None = None) -> list[str]:
    """The ``n`` messages of a thread to read for ``query``: the best-matching one (``first``, max-sim) and
    those that share the most BM25 terms with the query, best match first, the rest in thread order."""
    wanted = set(bm25_query_tokens([query])[0])
    overlap = [len(wanted & set(bm25_query_tokens([m])[0])) for m in messages]
    others = [i for i in np.argsort([-o for o in overlap], kind="stable") if i != first]
    picked = sorted(others[: n - (first is not None)])
    return ([messages[first]] if first is not None else []) + [messages[i] for i in picked]


def build_search_index(text: pd.DataFrame, model_path: str | Path, out_path: str | Path, *, split: str = "test", cache=None, log=print) -> dict:
    """Index the ``split`` (or ``"all"``) threads of a text-stage table with the checkpoint's dev-chosen
    retriever (:meth:`HybridRetriever.from_checkpoint`) into ``out_path`` (see :func:`load_or_build_index`;
    an up-to-date index is reused). With ``cache`` (an :class:`~.evaluation.embedding_cache.EmbeddingCache`),
    texts are encoded through it, under the model's fingerprint: the messages eval_report has already
    encoded with the same model are read, not encoded again. Returns what the index records."""
    from thread_embed_pipeline.evaluation.embedders import load_local_embedder

    documents = thread_documents(text, None if split == "all" else split)
    retriever = HybridRetriever.from_checkpoint(model_path, device="cpu")
    if cache is not None:
        retriever.embedder = load_local_embedder(str(model_path), name="search_index", model=retriever.model, cache=cache, log=log, batch_size=retriever.batch_size)
    model_id = model_fingerprint(model_path)
    embeddings, message_embeddings = load_or_build_index(Path(out_path), documents, retriever, model_id=model_id, log=log)
    return {
        "path": str(out_path), "threads": len(documents), "messages": int(documents["n_messages"].sum()), "split": split,
        "model": Path(model_path).name, "model_fingerprint": model_id, "dim": retriever.dim, "precision": INDEX_PRECISION,
        "weight": retriever.weight, "maxsim": retriever.maxsim or "off",
        "bytes": int(embeddings.nbytes + (message_embeddings.nbytes if message_embeddings is not None else 0)),
    }
