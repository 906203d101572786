"""Message-level late interaction ("max-sim"): a document that is a set of messages is scored by its
messages, not by one truncated encoding of their concatenation.

A thread of 30 messages is ~700-900 tokens; a 256-token encoder reads its first third, and BM25 reads
all of it. Encoding each message on its own and scoring a thread by ``max_j cos(query, message_j)`` is
the late interaction of ColBERT (Khattab & Zaharia, SIGIR 2020) at message rather than token
granularity: every message counts, and a message is the unit a chat user searches for.

Aggregations (:data:`AGGREGATIONS`), all computed from the same message embeddings and the document's
own (truncated) embedding, so trying them costs nothing extra; which one the report uses is chosen
on the dev split (:func:`choose_aggregation`):

* ``max``: the best message;
* ``top2`` / ``top3``: the mean of the 2 / 3 best messages (a thread that matches in several places);
* ``max+0.1doc`` / ``max+0.2doc`` / ``max+0.3doc``: the best message plus that share of the whole
  document's cosine (the thread's gist breaks ties between threads with one good message each).

A document without message boundaries (an external set's) is not scored this way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AGGREGATIONS: tuple[str, ...] = ("max", "top2", "top3", "max+0.1doc", "max+0.2doc", "max+0.3doc")
DEFAULT_AGGREGATION = "max"
SUFFIX = "·maxsim"  # a dense model's max-sim rows: "fine_tuned·maxsim"
TOP_K = 3  # the most messages an aggregation reads per document


def maxsim_name(model: str) -> str:
    return f"{model}{SUFFIX}"


def is_maxsim(model: str) -> bool:
    return model.endswith(SUFFIX) or f"{SUFFIX}@" in model


def base_model(model: str) -> str:
    """``fine_tuned·maxsim`` -> ``fine_tuned`` (other names unchanged)."""
    return model[: -len(SUFFIX)] if model.endswith(SUFFIX) else model


def check_aggregation(name: str) -> str:
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown max-sim aggregation {name!r}; expected one of {AGGREGATIONS}")
    return name


def top_message_scores(query_emb: np.ndarray, message_emb: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The ``TOP_K`` best message cosines of every document for every query: ``(queries, documents, TOP_K)``,
    best first, ``-inf`` where a document has fewer messages.

    ``message_emb`` holds every document's messages, one document after another; ``starts[d]`` is the row
    of document ``d``'s first message (every document has at least one). L2-normalised rows: dot = cosine.
    """
    starts = np.asarray(starts, dtype=np.int64)
    n_docs = len(starts)
    sims = np.asarray(query_emb, dtype=np.float32) @ np.asarray(message_emb, dtype=np.float32).T  # (q, m)
    out = np.full((sims.shape[0], n_docs, TOP_K), -np.inf, dtype=np.float32)
    if not n_docs or not sims.size:
        return out
    sizes = np.diff(np.append(starts, sims.shape[1]))
    if (sizes < 1).any():
        raise ValueError("every document needs at least one message")
    doc_of = np.repeat(np.arange(n_docs), sizes)
    work = sims.copy()
    for k in range(TOP_K):
        best = np.maximum.reduceat(work, starts, axis=1)  # (q, d): each document's best left
        out[:, :, k] = best
        if k + 1 == TOP_K:
            break
        # knock out that best (its first position in the document, should two messages tie) and go again
        hit = work == best[:, doc_of]
        running = np.cumsum(hit, axis=1)
        before_doc = running[:, starts] - hit[:, starts]  # hits before each document's first message
        first = hit & (running - before_doc[:, doc_of] == 1)
        work[first] = -np.inf
    return out


def best_messages(sims: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For one query's message cosines (documents' messages one after another, ``starts`` as in
    :func:`top_message_scores`), the position of each document's best message within the document."""
    starts = np.asarray(starts, dtype=np.int64)
    sizes = np.diff(np.append(starts, len(sims)))
    doc_of = np.repeat(np.arange(len(starts)), sizes)
    order = np.lexsort((-np.asarray(sims), doc_of))  # by document, best message first
    return order[starts] - starts


def aggregate(top: np.ndarray, doc_cosine: np.ndarray, aggregation: str) -> np.ndarray:
    """Document scores from :func:`top_message_scores` (``(..., TOP_K)``) and the documents' own cosines
    (``doc_cosine``, the same leading shape) by one of :data:`AGGREGATIONS`."""
    check_aggregation(aggregation)
    best = top[..., 0]
    if aggregation == "max":
        return best
    if aggregation.startswith("top"):
        k = int(aggregation[3:])
        kept = top[..., :k]
        finite = np.isfinite(kept)
        return np.where(finite, kept, 0.0).sum(axis=-1) / np.maximum(finite.sum(axis=-1), 1)
    share = float(aggregation[len("max+") : -len("doc")])
    return best + share * np.asarray(doc_cosine, dtype=np.float32)


def choose_aggregation(dev_mrr10: dict[str, float]) -> str:
    """The aggregation with the best dev MRR@10 (ties: the earlier, simpler one in :data:`AGGREGATIONS`)."""
    if not dev_mrr10:
        return DEFAULT_AGGREGATION
    return max(AGGREGATIONS, key=lambda a: (round(dev_mrr10.get(a, -1.0), 12), -AGGREGATIONS.index(a)))


def flatten_messages(docs: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """(every document's messages one after another, the start row of each document)."""
    messages: list[str] = []
    starts = np.empty(len(docs), dtype=np.int64)
    for d, doc in enumerate(docs):
        starts[d] = len(messages)
        messages.extend(doc)
    return messages, starts
