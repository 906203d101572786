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

import numpy as np

from thread_embed_pipeline import storage
from thread_embed_pipeline.storage import atomic_write_text
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

    def index(self, documents: Sequence[str]) -> "HybridRetriever":
        documents = [str(d) for d in documents]
        if not documents:
            raise ValueError("nothing to index: documents is empty")
        self._docs = documents
        self._doc_emb = self._embed(documents)
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
