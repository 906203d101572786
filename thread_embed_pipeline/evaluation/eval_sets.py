"""Retrieval evaluation sets built from the held-out corpus split.

Four tasks (``schemas.EVAL_TASKS``), all with one relevant document per query:

* ``thread``   -- query: the middle message of a conversation (``len // 2``, 0-based);
  document: the rest of that conversation, in order, with the query message removed
  (so the query never leaks into its target). Pool: the positive first, then seeded
  random distractors from *other* conversations of the same (source, task) set.
* ``response`` -- query: the first ``prefix_messages`` messages of a conversation;
  document: the next ``continuation_messages`` messages. Distractors are the
  continuation windows of other conversations.
* ``concurrent_thread`` -- the real disentanglement problem: which of the threads that
  are live in the channel *right now* does this message belong to? See
  :func:`build_concurrent_thread_eval_set`.
* ``thread_full_corpus`` -- the ``thread`` queries and documents, but every query is
  ranked against every document of the set (all eligible conversations of the source).

Texts are always built with :func:`schemas.format_message` / :func:`schemas.format_window`,
the one formatter shared with pair building.

Output rows follow ``EVAL_SET_COLUMNS`` (``eval_set`` is ``OWN_EVAL_SET``; ``relevant_ids``
is ``[positive_id]`` on query rows and ``[]`` on document rows). For ``thread``/``response``/
``thread_full_corpus``: one ``query`` row (``record_id`` ``"q:<conversation_id>"``,
``positive_id`` ``"d:<conversation_id>"``, ``candidate_ids`` positive-first) and one
``document`` row (``record_id`` ``"d:<conversation_id>"``) per conversation. For
``concurrent_thread`` documents are query-specific (see that builder).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from thread_embed_pipeline.evaluation.tasks.common import _empty_eval_set, document_id, eval_frame, query_id
from thread_embed_pipeline.evaluation.tasks.concurrent import _concurrent_timestamp_note, build_concurrent_thread_eval_set, concurrent_document_id, concurrent_query_id
from thread_embed_pipeline.evaluation.tasks.response import build_response_eval_set
from thread_embed_pipeline.evaluation.tasks.thread import build_thread_eval_set, build_thread_full_corpus_eval_set
from thread_embed_pipeline.schemas import DEFAULT_EVAL_TASKS, EVAL_SET_COLUMNS, EVAL_TASKS, OWN_EVAL_SET, timeline_of
from thread_embed_pipeline.text import TextSettings, prepare_text

__all__ = [
    "DEFAULT_EVAL_PROTOCOLS",
    "EVAL_PROTOCOLS",
    "build_protocol_eval_sets",
    "protocol_eval_set",
    "protocol_of",
    "eval_message_lines",
    "build_thread_eval_set",
    "build_thread_full_corpus_eval_set",
    "build_response_eval_set",
    "build_concurrent_thread_eval_set",
    "build_eval_sets",
    "concurrent_query_id",
    "concurrent_document_id",
    "eval_frame",
    "eval_texts",
    "query_id",
    "document_id",
    "timeline_of",
]


# --------------------------------------------------------------------------------------------
# thread / thread_full_corpus


# --------------------------------------------------------------------------------------------
# response


# --------------------------------------------------------------------------------------------
# concurrent_thread


# --------------------------------------------------------------------------------------------
# all tasks


def build_eval_sets(
    corpus_by_source: Mapping[str, pd.DataFrame],
    *,
    tasks: Iterable[str] = DEFAULT_EVAL_TASKS,
    split: str = "test",
    thread_min_messages: int = 8,
    prefix_messages: int = 5,
    continuation_messages: int = 5,
    response_min_messages: int = 12,
    pool_size: int = 100,
    concurrent_window_minutes: float = 30,
    concurrent_max_context_messages: int = 10,
    concurrent_min_prior_messages: int = 2,
    concurrent_min_candidates: int = 2,
    concurrent_pool_size: int | None = None,
    max_queries: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """All (source, task) eval sets concatenated, plus human-readable notes on what was skipped.

    Returns ``(eval_sets, notes)``. A (source, task) with fewer than 2 queries (after
    ``max_queries`` sampling) is skipped -- one query has no distractors -- and a note
    says so; ``concurrent_thread`` is skipped with a note for a source without timestamps
    (and a note counts conversations left out for lack of timestamps). ``pool_size``
    applies to ``thread``/``response``; ``concurrent_pool_size`` (None: every concurrent
    thread) to ``concurrent_thread``; ``thread_full_corpus`` has no pool. Columns are exactly
    ``EVAL_SET_COLUMNS``.
    """
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in EVAL_TASKS]
    if unknown:
        raise ValueError(f"unknown eval tasks {unknown}; expected a subset of {EVAL_TASKS}")
    frames: list[pd.DataFrame] = []
    notes: list[str] = []
    for source in sorted(corpus_by_source):
        corpus = corpus_by_source[source]
        for task in tasks:
            if task == "thread":
                df = build_thread_eval_set(
                    corpus,
                    source=source,
                    split=split,
                    min_messages=thread_min_messages,
                    pool_size=pool_size,
                    max_queries=max_queries,
                    seed=seed,
                )
                need = f"conversation(s) with >= {thread_min_messages} messages"
            elif task == "thread_full_corpus":
                df = build_thread_full_corpus_eval_set(
                    corpus,
                    source=source,
                    split=split,
                    min_messages=thread_min_messages,
                    max_queries=max_queries,
                    seed=seed,
                )
                need = f"conversation(s) with >= {thread_min_messages} messages"
            elif task == "response":
                df = build_response_eval_set(
                    corpus,
                    source=source,
                    split=split,
                    prefix_messages=prefix_messages,
                    continuation_messages=continuation_messages,
                    min_messages=response_min_messages,
                    pool_size=pool_size,
                    max_queries=max_queries,
                    seed=seed,
                )
                need = f"conversation(s) with >= {max(response_min_messages, prefix_messages + continuation_messages)} messages"
            else:  # concurrent_thread
                usable, note = _concurrent_timestamp_note(corpus, source=source, split=split)
                if note:
                    notes.append(note)
                if not usable:
                    continue
                df = build_concurrent_thread_eval_set(
                    corpus,
                    source=source,
                    split=split,
                    window_minutes=concurrent_window_minutes,
                    max_context_messages=concurrent_max_context_messages,
                    min_prior_messages=concurrent_min_prior_messages,
                    min_candidates=concurrent_min_candidates,
                    pool_size=concurrent_pool_size,
                    max_queries=max_queries,
                    seed=seed,
                )
                need = (
                    f"thread(s) with a message that has >= {concurrent_min_prior_messages} earlier messages in its thread "
                    f"and >= {concurrent_min_candidates} candidate threads (its own plus those active in the "
                    f"{concurrent_window_minutes:g} min before it)"
                )
            n_queries = int((df["record_type"] == "query").sum())
            if n_queries < 2:
                notes.append(f"skipped {source}/{task}: {n_queries} eligible {split} {need} (need >= 2)")
                continue
            frames.append(df)
    if not frames:
        return _empty_eval_set(), notes
    out = pd.concat(frames, ignore_index=True)
    return out[list(EVAL_SET_COLUMNS)], notes


def eval_texts(eval_sets: pd.DataFrame) -> set[str]:
    """Every query text and every relevant-document text (for train/eval leakage checks)."""
    if eval_sets.empty:
        return set()
    keys = [k for k in ("eval_set", "source", "task") if k in eval_sets.columns]
    queries = eval_sets[eval_sets["record_type"] == "query"]
    docs = eval_sets[eval_sets["record_type"] == "document"]
    if "relevant_ids" in queries.columns:
        rel = queries[keys + ["relevant_ids"]].explode("relevant_ids").rename(columns={"relevant_ids": "record_id"})
        rel = pd.concat([rel, queries[keys + ["positive_id"]].rename(columns={"positive_id": "record_id"})])
    else:
        rel = queries[keys + ["positive_id"]].rename(columns={"positive_id": "record_id"})
    rel = rel.dropna(subset=["record_id"]).astype(object).drop_duplicates()
    pos_docs = docs[keys + ["record_id", "text"]].astype(object).merge(rel, on=keys + ["record_id"], how="inner")
    return set(queries["text"].tolist()) | set(pos_docs["text"].tolist())


def eval_message_lines(eval_sets: pd.DataFrame, *, min_chars: int = 20) -> set[str]:
    """Every message line (``author: text``) of every eval text with at least ``min_chars``
    characters: what a training pair from a re-publishing dump must not contain."""
    if eval_sets.empty:
        return set()
    out: set[str] = set()
    for text in eval_sets["text"].dropna().unique():
        out.update(line for line in str(text).split("\n") if len(line.strip()) >= min_chars)
    return out


# --------------------------------------------------------------------------------------------
# protocols: the same queries and pools, with the speakers written by one scheme each

# protocol -> the text stage's speaker scheme. ``pseudonymised`` is what the model trains on and
# the only form that is exported; ``names_visible`` keeps the upstream names (internal, like the
# corpus); ``per_conversation`` is the reference project's scheme, for comparing with its numbers.
EVAL_PROTOCOLS: dict[str, str] = {"pseudonymised": "per_timeline", "names_visible": "original", "per_conversation": "per_conversation", "speaker_free": "per_timeline"}
# the main job's: what the model trains on, and what is exported. names_visible is one config away (configs/names_visible.yaml)
DEFAULT_EVAL_PROTOCOLS: tuple[str, ...] = ("pseudonymised",)
DEFAULT_PROTOCOL = "pseudonymised"
# protocols whose queries are typed the way a user searches: no "speaker_<k>: " prefix (documents keep theirs)
SPEAKER_FREE_PROTOCOLS: frozenset[str] = frozenset({"speaker_free"})
_SPEAKER_PREFIX = re.compile(r"^speaker_\d+: ", re.MULTILINE)


def without_speakers(text: str) -> str:
    """A query without the ``speaker_<k>: `` prefix of each of its lines (a user's search has no speaker)."""
    return _SPEAKER_PREFIX.sub("", text)


def protocol_eval_set(protocol: str) -> str:
    """The ``eval_set`` name of the own sets under ``protocol`` (the default protocol keeps ``OWN_EVAL_SET``)."""
    if protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown eval protocol {protocol!r}; expected one of {sorted(EVAL_PROTOCOLS)}")
    return OWN_EVAL_SET if protocol == DEFAULT_PROTOCOL else f"{OWN_EVAL_SET}-{protocol}"


def protocol_of(eval_set: str) -> str | None:
    """The protocol of an own eval set name; None for external sets."""
    for protocol in EVAL_PROTOCOLS:
        if eval_set == protocol_eval_set(protocol):
            return protocol
    return None


def build_protocol_eval_sets(
    corpus_by_source: Mapping[str, pd.DataFrame],
    *,
    protocols: Sequence[str] = DEFAULT_EVAL_PROTOCOLS,
    **kwargs,
) -> tuple[pd.DataFrame, list[str], dict[str, dict]]:
    """``build_eval_sets`` once per protocol on the corpus prepared by the text stage with that
    protocol's speaker scheme (everything else at the text stage's defaults, so the benchmark does
    not move when the *training* text is configured differently).

    Bots and too-short conversations are dropped and URLs, e-mails and secrets redacted in every
    protocol, so all protocols hold the same queries and pools and differ only in how speakers are
    written. Returns the concatenated sets (``eval_set`` = :func:`protocol_eval_set`), notes, and
    the text stage's accounting per protocol and source.
    """
    protocols = list(dict.fromkeys(protocols))
    if not protocols:
        raise ValueError("protocols is empty")
    for protocol in protocols:
        protocol_eval_set(protocol)  # validates the name
    frames, notes, accounting = [], [], {}
    for protocol in protocols:
        settings = TextSettings(speakers=EVAL_PROTOCOLS[protocol])
        prepared = {}
        for source, corpus in corpus_by_source.items():
            prepared[source], accounting[f"{protocol}/{source}"] = prepare_text(corpus, settings)
        sets, set_notes = build_eval_sets(prepared, **kwargs)
        sets["eval_set"] = protocol_eval_set(protocol)
        if protocol in SPEAKER_FREE_PROTOCOLS:
            queries = sets["record_type"] == "query"
            sets.loc[queries, "text"] = sets.loc[queries, "text"].map(without_speakers)
        frames.append(sets)
        if protocol == protocols[0]:
            notes.extend(set_notes)  # the same in every protocol
    return pd.concat(frames, ignore_index=True)[list(EVAL_SET_COLUMNS)], notes, accounting
