"""Embedders: anything that turns texts into L2-normalised vectors at a requested Matryoshka dim.

The retrieval code only needs :class:`Embedder`. Local sentence-transformers models encode every
unique text once at full dimension and truncate + re-normalise per dim (Matryoshka); API models
may request the dim from the service (``dimensions`` / ``output_dimension``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

Log = Callable[[str], None] | None


@runtime_checkable
class Embedder(Protocol):
    """``embed(texts, dim)`` → float32 array (len(texts), dim), each row L2-normalised."""

    name: str
    max_dim: int

    def embed(self, texts: Sequence[str], dim: int) -> np.ndarray: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def truncate_and_normalize(emb: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` components, re-normalised (how a Matryoshka embedding is used at a smaller size)."""
    if dim > emb.shape[-1]:
        raise ValueError(f"dim {dim} exceeds the embedding size {emb.shape[-1]}")
    return l2_normalize(emb[..., :dim])


class SentenceTransformerEmbedder:
    """A local sentence-transformers model: each unique text encoded once at full dim, memoised."""

    def __init__(self, model, name: str, *, batch_size: int = 64, log: Log = None) -> None:
        self.model = model
        self.name = name
        self.batch_size = batch_size
        self.log = log
        self.max_dim = int(model.get_embedding_dimension())
        self._full: dict[str, np.ndarray] = {}

    def _encode_missing(self, texts: Sequence[str]) -> None:
        missing = [t for t in dict.fromkeys(texts) if t not in self._full]
        if not missing:
            return
        from thread_embed_pipeline.evaluation.retrieval import encode_texts

        if self.log:
            self.log(f"[{self.name}] encoding {len(missing)} unique texts")
        vectors = encode_texts(self.model, missing, batch_size=self.batch_size, log=self.log)
        self._full.update(zip(missing, vectors))

    def embed(self, texts: Sequence[str], dim: int) -> np.ndarray:
        self._encode_missing(texts)
        full = np.stack([self._full[t] for t in texts]) if texts else np.zeros((0, self.max_dim), np.float32)
        return truncate_and_normalize(full, dim)
