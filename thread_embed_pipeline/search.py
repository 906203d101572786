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
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from thread_embed_pipeline import storage
from thread_embed_pipeline.schemas import format_window, is_missing
from thread_embed_pipeline.storage import atomic_write_bytes, atomic_write_text
from thread_embed_pipeline.evaluation.embedders import model_fingerprint, truncate_and_normalize
from thread_embed_pipeline.evaluation.fusion import convex_fuse
from thread_embed_pipeline.evaluation.retrieval import bm25_index, bm25_query_tokens, bm25_scores

SETTINGS_FILE = "hybrid_retriever.json"


class HybridRetriever:
    """BM25 + dense score fusion over an in-memory document list (see the module docstring)."""

    def __init__(self, model, *, weight: float, dim: int | None = None, batch_size: int = 64) -> None:
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"weight must be in [0, 1] (the dense share), got {weight}")
        full = int(model.get_embedding_dimension())
        if dim is not None and not 1 <= int(dim) <= full:
            raise ValueError(f"dim must be between 1 and the model's {full} dims, got {dim}")
        self.model = model
        self.weight = float(weight)
        self.dim = int(dim) if dim is not None else full
        self.batch_size = batch_size
        self._docs: list[str] = []
        self._doc_emb: np.ndarray | None = None
        self._bm25 = None

    @classmethod
    def from_checkpoint(
        cls, checkpoint_dir: str | Path, *, settings: str | Path | None = None, device: str | None = None, **overrides
    ) -> "HybridRetriever":
        """The checkpoint with the weight and dim that ``eval_report`` chose on dev.

        They are read from ``settings`` when given, else from a ``hybrid_retriever.json`` beside the
        checkpoint (a release folder carries one), else from the eval report's
        ``<data dir>/reports/hybrid_retriever.json``.
        """
        from thread_embed_pipeline.training import load_sentence_model

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
        kwargs = {"weight": recorded["weight"], "dim": recorded.get("dim"), **overrides}
        return cls(load_sentence_model(str(checkpoint_dir), device=device), **kwargs)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return truncate_and_normalize(np.asarray(emb, dtype=np.float32), self.dim)

    def index(self, documents: Sequence[str], embeddings: np.ndarray | None = None) -> "HybridRetriever":
        """Index ``documents``; ``embeddings`` (one row per document, at least ``dim`` wide) skips encoding them."""
        documents = [str(d) for d in documents]
        if not documents:
            raise ValueError("nothing to index: documents is empty")
        if embeddings is not None and (len(embeddings) != len(documents) or np.asarray(embeddings).shape[1] < self.dim):
            raise ValueError(f"embeddings must be {len(documents)} rows of at least {self.dim} dims, got {np.asarray(embeddings).shape}")
        self._docs = documents
        self._doc_emb = self._embed(documents) if embeddings is None else truncate_and_normalize(np.asarray(embeddings, dtype=np.float32), self.dim)
        self._bm25 = bm25_index(documents)
        return self

    def scores(self, query: str) -> np.ndarray:
        """The fused score of every indexed document for one query."""
        if self._doc_emb is None:
            raise RuntimeError("call index(documents) before searching")
        dense = self._doc_emb @ self._embed([query])[0]
        lexical = bm25_scores(self._bm25, bm25_query_tokens([query])[0], len(self._docs))
        return convex_fuse(lexical, dense, self.weight)

    def search(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` best documents as (index into the indexed list, fused score), best first."""
        fused = self.scores(query)
        top = np.argsort(-fused, kind="stable")[:k]
        return [(int(i), float(fused[i])) for i in top]


def write_retriever_settings(
    folder: str | Path, *, weight: float, dim: int, chosen_on: str, scope: str, fingerprint: str | None = None
) -> Path:
    """Record the dev-chosen fusion weight as ``<folder>/hybrid_retriever.json`` (read by
    :meth:`HybridRetriever.from_checkpoint`, which refuses it for a checkpoint whose
    ``evaluation.embedders.model_fingerprint`` is not ``fingerprint``)."""
    path = Path(folder) / SETTINGS_FILE
    payload = {"weight": float(weight), "dim": int(dim), "chosen_on": chosen_on, "scope": scope, "fusion": "weight * z(dense cosine) + (1 - weight) * z(bm25)"}
    if fingerprint:
        payload["model_fingerprint"] = fingerprint
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


# --- chat search: an index of a source's threads, and the CLI --------------------------------------

INDEX_PRECISION = "float32"


def thread_documents(text: pd.DataFrame, split: str | None = "test") -> pd.DataFrame:
    """One document per conversation of a text-stage table (``split`` None: every split):
    ``conversation_id, split, n_messages, text`` with ``text`` its ``format_window`` in message order."""
    frame = text if split is None else text[text["split"] == split]
    if frame.empty:
        raise ValueError(f"no conversation in split {split!r}" if split else "no conversation to index")
    frame = frame.sort_values(["conversation_id", "message_idx"], kind="stable")
    rows = [
        {"conversation_id": cid, "split": conv["split"].iat[0], "n_messages": len(conv), "text": format_window([None if is_missing(a) else a for a in conv["author"]], conv["text"].tolist())}
        for cid, conv in frame.groupby("conversation_id", sort=True)
    ]
    return pd.DataFrame(rows)


def load_or_build_index(path: Path, documents: pd.DataFrame, retriever: HybridRetriever, *, model_id: str, log=print) -> np.ndarray:
    """The documents' embeddings from the index file ``path`` when it was built for the same model,
    dim and documents; else encode them and write the index (Parquet: the documents, one embedding per
    row, and ``model_id`` / ``dim`` / ``precision`` / ``documents_sha256`` in its key-value metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thread_embed_pipeline.versioning import frame_fingerprint

    want = {"model_id": model_id, "dim": str(retriever.dim), "precision": INDEX_PRECISION, "documents_sha256": frame_fingerprint(documents[["conversation_id", "text"]])}
    if Path(path).is_file():
        table = pq.read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        if all(meta.get(k) == v for k, v in want.items()):
            log(f"search index {path}: {table.num_rows} threads, {model_id} at {retriever.dim} dims ({INDEX_PRECISION})")
            return np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    log(f"building the search index of {len(documents)} threads ({model_id} at {retriever.dim} dims) into {path}")
    emb = retriever._embed(documents["text"].tolist())
    table = pa.Table.from_pandas(documents, preserve_index=False).append_column("embedding", pa.array(list(emb), pa.list_(pa.float32())))
    atomic_write_bytes(path, lambda tmp: pq.write_table(table.replace_schema_metadata(want), tmp))
    return emb


def messages_to_read(thread: str, query: str, n: int = 3) -> list[str]:
    """The ``n`` lines (messages) of a thread that share the most BM25 terms with the query, in thread order."""
    lines = thread.split("\n")
    wanted = set(bm25_query_tokens([query])[0])
    overlap = [len(wanted & set(bm25_query_tokens([line])[0])) for line in lines]
    best = sorted(np.argsort([-o for o in overlap], kind="stable")[:n])
    return [lines[i] for i in best]


def index_path(name: str, split: str) -> Path:
    """Where the index of a source's (or corpus file's) ``split`` threads lives: ``<data dir>/search/<name>__<split>.parquet``."""
    return storage.data_dir() / "search" / f"{name}__{split}.parquet"


def build_search_index(text: pd.DataFrame, model_path: str | Path, out_path: str | Path, *, split: str = "test", log=print) -> dict:
    """Index the ``split`` (or ``"all"``) threads of a text-stage table with the checkpoint's dev-chosen
    retriever (:meth:`HybridRetriever.from_checkpoint`) into ``out_path`` (see :func:`load_or_build_index`;
    an up-to-date index is reused). Returns what the index records."""
    documents = thread_documents(text, None if split == "all" else split)
    retriever = HybridRetriever.from_checkpoint(model_path, device="cpu")
    model_id = model_fingerprint(model_path)
    embeddings = load_or_build_index(Path(out_path), documents, retriever, model_id=model_id, log=log)
    return {
        "path": str(out_path), "threads": len(documents), "messages": int(documents["n_messages"].sum()), "split": split,
        "model": Path(model_path).name, "model_fingerprint": model_id, "dim": retriever.dim, "precision": INDEX_PRECISION,
        "weight": retriever.weight, "bytes": int(embeddings.nbytes),
    }


def _default_model() -> str:
    release = storage.data_dir() / "release" / "model"
    if (release / "modules.json").is_file():
        return str(release)
    summary = storage.data_dir() / "model.json"
    if summary.is_file():
        return json.loads(summary.read_text(encoding="utf-8"))["checkpoint_dir"]
    raise FileNotFoundError(f"no model: materialise `model` (or `release/model`), or pass --model (looked in {release} and {summary})")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m thread_embed_pipeline.search "how do I fix a broken apt install" --source irc_disentangle --k 5``."""
    import argparse

    from thread_embed_pipeline.text import TextSettings, prepare_text, redact_text

    parser = argparse.ArgumentParser(prog="python -m thread_embed_pipeline.search", description="Find the threads a message belongs to or answers it: the dev-chosen BM25 + dense hybrid over a source's threads.")
    parser.add_argument("query", help="a message or question")
    parser.add_argument("--source", default="irc_disentangle", help="a source whose text stage is in the data folder (data/text/<source>.parquet)")
    parser.add_argument("--corpus", help="a corpus Parquet file (the corpus schema) to search instead; it goes through the text stage first")
    parser.add_argument("--split", default="test", help="which conversations to index: train, dev, test (default) or all")
    parser.add_argument("--k", type=int, default=5, help="how many threads to show")
    parser.add_argument("--messages", type=int, default=3, help="messages to read per thread")
    parser.add_argument("--model", help="a checkpoint folder or model name (default: data/release/model, else the model asset's checkpoint)")
    parser.add_argument("--weight", type=float, help="the dense share of the fusion (default: the dev-chosen weight in hybrid_retriever.json)")
    parser.add_argument("--dim", type=int, help="the Matryoshka dim (default: the dev-chosen one, else the model's)")
    args = parser.parse_args(argv)
    if args.k < 1 or args.messages < 1:
        parser.error("--k and --messages must be at least 1")

    if args.corpus:
        text, _ = prepare_text(pd.read_parquet(args.corpus), TextSettings())
        name = Path(args.corpus).stem
    else:
        path = storage.data_dir() / "text" / f"{args.source}.parquet"
        if not path.is_file():
            parser.error(f"{path} does not exist: materialise {args.source}/text first, or pass --corpus")
        text, name = pd.read_parquet(path), args.source
    documents = thread_documents(text, None if args.split == "all" else args.split)
    model_path = args.model or _default_model()
    overrides = {k: v for k, v in (("dim", args.dim),) if v is not None}
    if args.weight is not None:
        from thread_embed_pipeline.training import load_sentence_model

        retriever = HybridRetriever(load_sentence_model(model_path, device="cpu"), weight=args.weight, **overrides)
    else:
        retriever = HybridRetriever.from_checkpoint(model_path, device="cpu", **overrides)
    model_id = model_fingerprint(model_path) if Path(model_path).is_dir() else model_path
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731 - results on stdout, progress on stderr
    embeddings = load_or_build_index(index_path(name, args.split), documents, retriever, model_id=model_id, log=log)
    retriever.index(documents["text"].tolist(), embeddings)
    query, _ = redact_text(args.query)
    for rank, (i, score) in enumerate(retriever.search(query, k=args.k), start=1):
        doc = documents.iloc[i]
        print(f"{rank}. {doc['conversation_id']}  (score {score:.3f}, {doc['n_messages']} messages, {doc['split']})")
        for line in messages_to_read(doc["text"], query, args.messages):
            print(f"     {line[:200]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
