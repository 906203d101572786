"""Embedders: anything that turns texts into L2-normalised vectors at a requested Matryoshka dim.

The retrieval code only needs :class:`Embedder`. Local sentence-transformers models encode every
unique text once at full dimension and truncate + re-normalise per dim (Matryoshka); API models
may request the dim from the service (``dimensions`` / ``output_dimension``; see
:mod:`thread_embed_pipeline.evaluation.api_embedders`). Both can persist vectors in an
:class:`~thread_embed_pipeline.evaluation.embedding_cache.EmbeddingCache`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from thread_embed_pipeline.versioning import file_fingerprint

from thread_embed_pipeline.schemas import Log

if TYPE_CHECKING:  # pragma: no cover
    from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache



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


# Files sentence-transformers writes on save that do not change what a model computes: its model card
# and its library-version stamps.
_FINGERPRINT_SKIP = {"README.md", "config_sentence_transformers.json", "hybrid_retriever.json"}
_FINGERPRINT_SKIP_DIRS = {"onnx"}  # exports of the same weights: an ONNX file is keyed by its own hash


def model_fingerprint(model_dir: Path | str, *, max_seq_length: int | None = None) -> str:
    """A hex SHA-256 identifying a saved sentence-transformers model's outputs.

    Hashes every file under ``model_dir`` (relative path + content; weights such as
    ``model.safetensors``, tokenizer, module configs), skipping only docs and version
    stamps (``README.md``, ``config_sentence_transformers.json``, dot-files), the retriever settings
    beside it (``hybrid_retriever.json``) and its ONNX exports (``onnx/``), plus ``max_seq_length``
    when given: a release folder and the checkpoint it was copied from have one fingerprint. Any retraining or tokenizer/pooling change yields a
    new fingerprint, so cached vectors of an old model are never reused for a new one.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"model directory {root} does not exist")
    h = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in _FINGERPRINT_SKIP
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.relative_to(root).parts[0] not in _FINGERPRINT_SKIP_DIRS
    )
    if not any(p.suffix in {".safetensors", ".bin", ".pt"} for p in files):
        raise FileNotFoundError(f"no model weights (model.safetensors, ...) under {root}")
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + file_fingerprint(path).encode() + b"\0")
    h.update(f"max_seq_length={max_seq_length}".encode())
    return h.hexdigest()


# Texts per forward pass when scoring local models. 32, not 64: on 2 AVX2-only cores (AMD EPYC) the
# eval texts encode 16% faster at 256 tokens (9.2 vs 7.9 texts/s, docs/main_job_timings.md).
ENCODE_BATCH_SIZE = 32


class SentenceTransformerEmbedder:
    """A local sentence-transformers model: each unique text encoded once at full dim, memoised.

    With ``cache`` (an :class:`EmbeddingCache`) and ``cache_key`` (e.g.
    :func:`model_fingerprint` of the model directory), full-dim vectors are also persisted,
    keyed by ``("local:<cache_key>:msl=<max_seq_length>", max_dim, sha256(text))``: a later
    run (or another instance) with the same fingerprint encodes only texts never seen before;
    a different model has a different key and shares nothing. Smaller dims are always derived
    by truncation + re-normalisation, never cached separately. A ``cache`` without a
    ``cache_key`` is ignored (with a log line): vectors are only reused under a fingerprint.
    """

    def __init__(
        self,
        model,
        name: str,
        *,
        batch_size: int = ENCODE_BATCH_SIZE,
        log: Log = None,
        cache: EmbeddingCache | None = None,
        cache_key: str | None = None,
    ) -> None:
        if cache is not None and not cache_key:
            # No fingerprint, no safe reuse: run uncached rather than risk another model's vectors.
            if log:
                log(f"[{name}] not using the embedding cache: no cache_key (model fingerprint) given")
            cache = None
        self.model = model
        self.name = name
        self.batch_size = batch_size
        self.log = log
        self.max_dim = int(model.get_embedding_dimension())
        self.cache = cache
        self.cache_key = cache_key
        self._full: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(name={self.name!r}, max_dim={self.max_dim}, cache_key={self.cache_key!r})"

    @property
    def cache_model(self) -> str | None:
        """The ``model`` column this embedder uses in the cache (None without a cache)."""
        if self.cache is None:
            return None
        return f"local:{self.cache_key}:msl={getattr(self.model, 'max_seq_length', None)}"

    def _encode_missing(self, texts: Sequence[str]) -> None:
        missing = [t for t in dict.fromkeys(texts) if t not in self._full]
        if not missing:
            return
        if self.cache is not None:
            hits = self.cache.get_many(self.cache_model, self.max_dim, missing)
            self._full.update(hits)
            if hits and self.log:
                self.log(f"[{self.name}] {len(hits)} of {len(missing)} unique texts found in the embedding cache")
            missing = [t for t in missing if t not in hits]
            if not missing:
                return
        if self.log:
            self.log(f"[{self.name}] encoding {len(missing)} unique texts")
        vectors = np.asarray(encode_texts(self.model, missing, batch_size=self.batch_size, log=self.log), dtype=np.float32)
        if self.cache is not None:
            self.cache.put_many(self.cache_model, self.max_dim, missing, vectors)
        self._full.update(zip(missing, vectors))

    def embed(self, texts: Sequence[str], dim: int) -> np.ndarray:
        texts = list(texts)
        if not 1 <= dim <= self.max_dim:
            raise ValueError(f"[{self.name}] dim {dim} out of range 1..{self.max_dim}")
        self._encode_missing(texts)
        full = np.stack([self._full[t] for t in texts]) if texts else np.zeros((0, self.max_dim), np.float32)
        return truncate_and_normalize(full, dim)


def load_local_embedder(
    spec: str,
    *,
    name: str | None = None,
    model=None,
    cache: EmbeddingCache | None = None,
    log: Log = None,
    batch_size: int = ENCODE_BATCH_SIZE,
    device: str | None = None,
) -> SentenceTransformerEmbedder:
    """The one way a local model becomes an embedder: a checkpoint folder, a bundled model or a Hub id.

    ``model`` is the loaded SentenceTransformer when the caller has one (else it is loaded with
    ``training.load_sentence_model`` on ``device``); ``name`` is its name in the report (default:
    ``spec``). With ``cache``, the model's files are fingerprinted (:func:`model_fingerprint`, with
    the loaded ``max_seq_length``) -- a folder or bundled model directly, a Hub id through its local
    snapshot, an ONNX file (``<folder>/onnx/<file>.onnx``) through its folder plus the file's name --
    and the fingerprint keys the cache. If the files cannot be found the model runs
    uncached (and says so through ``log``).
    """
    from thread_embed_pipeline.models import split_onnx_spec
    from thread_embed_pipeline.models import load_sentence_model, resolve_model_path

    model = model if model is not None else load_sentence_model(spec, device=device)
    cache_key = None
    if cache is not None:
        try:
            onnx = split_onnx_spec(spec)
            model_dir = onnx[0] if onnx else Path(resolve_model_path(spec))
            if not model_dir.is_dir():
                from huggingface_hub import snapshot_download

                model_dir = Path(snapshot_download(spec, local_files_only=True))
            cache_key = model_fingerprint(model_dir, max_seq_length=getattr(model, "max_seq_length", None))
            if onnx:  # the folder's fingerprint leaves onnx/ out: the file and its content are part of the key
                cache_key = f"{cache_key}:{onnx[1]}:{file_fingerprint(onnx[0] / onnx[1])}"
        except Exception as exc:  # noqa: BLE001 -- caching is an optimisation only
            cache = None
            if log:
                log(f"[{spec}] not caching embeddings: cannot fingerprint the model files ({type(exc).__name__}: {exc})")
    return SentenceTransformerEmbedder(model, name=name or spec, batch_size=batch_size, log=log, cache=cache, cache_key=cache_key)


# characters per token of English chat text for a WordPiece tokenizer (a budget estimate, not a count)
CHARS_PER_TOKEN = 4.0
MAX_BATCH_TEXTS = 512


def token_budget_batches(lengths: Sequence[int], *, batch_size: int, max_tokens: int) -> list[tuple[int, int]]:
    """``[start, end)`` batches over texts sorted longest first (``lengths`` in characters): each holds at
    most ``batch_size * max_tokens`` (estimated) tokens of padded input, so at most ``batch_size`` texts at
    full length and up to :data:`MAX_BATCH_TEXTS` short ones."""
    budget = batch_size * max_tokens
    out, start = [], 0
    while start < len(lengths):
        longest = min(max_tokens, int(lengths[start] / CHARS_PER_TOKEN) + 2)  # the first is the longest
        size = max(1, min(MAX_BATCH_TEXTS, budget // max(longest, 1)))
        out.append((start, min(start + size, len(lengths))))
        start += size
    return out


def encode_texts(
    model,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    log: Log = None,
    log_every: int = 20,
) -> np.ndarray:
    """Full-dimension, L2-normalised float32 embeddings of a SentenceTransformer, one row per input text.

    Each unique text is encoded once (longest first, for efficient padding) and mapped back. Batches
    are sized by a token budget, ``batch_size`` texts at the model's ``max_seq_length``: short texts (chat
    messages) go many to a batch, where padding and per-batch overhead would otherwise dominate.
    ``log(msg)`` is called every ``log_every`` batches and at the end. (The helper behind
    :class:`~.embedders.SentenceTransformerEmbedder`.)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = list(texts)
    unique: list[str] = list(dict.fromkeys(texts))
    if not unique:
        dim = model.get_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    order = sorted(range(len(unique)), key=lambda i: -len(unique[i]))
    batches = token_budget_batches([len(unique[i]) for i in order], batch_size=batch_size, max_tokens=int(getattr(model, "max_seq_length", None) or 512))
    parts: list[np.ndarray] = []
    done = 0
    for b, (start, end) in enumerate(batches, start=1):
        batch_texts = [unique[i] for i in order[start:end]]
        emb = model.encode(batch_texts, batch_size=len(batch_texts), show_progress_bar=False, convert_to_numpy=True)
        parts.append(np.asarray(emb, dtype=np.float32))
        done = end
        if log is not None and (b % max(1, log_every) == 0 or b == len(batches)):
            log(f"encoded {done}/{len(unique)} unique texts ({b}/{len(batches)} batches)")
    sorted_emb = np.concatenate(parts, axis=0)
    unique_emb = np.empty_like(sorted_emb)
    unique_emb[np.asarray(order)] = sorted_emb
    row_of = {t: i for i, t in enumerate(unique)}
    return l2_normalize(unique_emb[[row_of[t] for t in texts]])
