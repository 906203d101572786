"""External evaluation sets: read and write the pool JSONL format and BEIR folders.

Both map onto the ``EVAL_SET_COLUMNS`` table (see ``docs/eval_formats.md``):

* **pool JSONL** -- one JSON object per line,
  ``{"query": str, "corpus": [str, ...], "relevant_idx": int, "source": str, "conversation_id": str}``:
  a query ranked against its own candidate pool, ``corpus[relevant_idx]`` the one relevant text.
  Read as ``task="pool"``; documents are deduplicated by text within (eval_set, source).
* **BEIR** -- a folder with ``corpus.jsonl`` (``_id``, ``text``, optional ``title``),
  ``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id corpus-id score``).
  Read as ``task="beir"``: full-corpus retrieval, every query against every document.

Malformed input raises :class:`EvalSetFormatError` naming the file and the 1-based line.
Writers are atomic (temporary file + ``os.replace``). No dagster here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from thread_embed_pipeline.storage import atomic_write_text
from thread_embed_pipeline.evaluation.eval_sets import eval_frame
from thread_embed_pipeline.schemas import EVAL_SET_COLUMNS, missing_columns

__all__ = [
    "EvalSetFormatError",
    "POOL_TASK",
    "BEIR_TASK",
    "read_pool_jsonl",
    "read_beir",
    "read_external_eval_set",
    "export_pool_jsonl",
    "export_beir",
    "pool_document_id",
]

POOL_TASK = "pool"
BEIR_TASK = "beir"
_POOL_KEYS = ("query", "corpus", "relevant_idx", "source", "conversation_id")
_QRELS_HEADER = ("query-id", "corpus-id", "score")


class EvalSetFormatError(ValueError):
    """A malformed external eval-set file; the message is ``"<path>:<line>: <what was expected>"``.

    ``line`` is 1-based; None for problems with the file as a whole (message ``"<path>: <what>"``).
    """

    def __init__(self, path: str | os.PathLike, line: int | None, what: str):
        self.path = Path(path)
        self.line = line
        self.what = what
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {what}")


# --------------------------------------------------------------------------------------------
# helpers


def pool_document_id(text: str) -> str:
    """Deterministic id of a pool-format document: ``d:`` + the first 16 hex digits of its SHA-1."""
    return "d:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; anything but a JSON object is an error."""
    with path.open("r", encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise EvalSetFormatError(path, lineno, f"expected one JSON object per line (invalid JSON: {exc.msg})") from None
            if not isinstance(obj, dict):
                raise EvalSetFormatError(path, lineno, f"expected a JSON object, got {_type_name(obj)}")
            yield lineno, obj


def _require(path: Path, lineno: int, obj: dict, key: str, kind: str):
    """``obj[key]`` checked against ``kind``: "str", "int" (not bool), "id" (str or int), "str_list"."""
    if key not in obj:
        raise EvalSetFormatError(path, lineno, f'expected key "{key}" ({kind})')
    value = obj[key]
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "id": isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)),
        "str_list": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]
    if not ok:
        expected = {"str": "a string", "int": "an integer", "id": "a string or integer id", "str_list": "a list of strings"}[kind]
        raise EvalSetFormatError(path, lineno, f'expected "{key}" to be {expected}, got {_type_name(value)}')
    return value


def _row(*, eval_set, source, task, record_type, record_id, conversation_id, text, positive_id=None, candidate_ids=(), relevant_ids=()) -> dict:
    return {
        "eval_set": eval_set,
        "source": source,
        "task": task,
        "record_type": record_type,
        "record_id": record_id,
        "conversation_id": conversation_id,
        "text": text,
        "positive_id": positive_id,
        "candidate_ids": list(candidate_ids),
        "relevant_ids": list(relevant_ids),
        "messages": [],  # an external document has no message boundaries: scored whole
    }


# --------------------------------------------------------------------------------------------
# pool JSONL


def read_pool_jsonl(path: str | os.PathLike, *, name: str) -> tuple[pd.DataFrame, list[str]]:
    """Read a pool-format JSONL file into ``EVAL_SET_COLUMNS`` rows (``eval_set=name``, ``task="pool"``).

    One query row per line (``record_id`` ``"q:<line number>"``, ``source`` and
    ``conversation_id`` from the line), candidate_ids in corpus order, positive_id and
    relevant_ids = the id of ``corpus[relevant_idx]``. One document row per unique text within
    (eval_set, source), ``record_id`` :func:`pool_document_id` (so identical texts share one
    document; a text listed twice in one pool is collapsed to its first position, with a note).
    A document's conversation_id is that of the first query it is relevant to, else None.
    Blank lines are skipped; anything else malformed raises :class:`EvalSetFormatError`.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalSetFormatError(path, None, "file not found (expected a pool-format .jsonl file)")
    query_rows: list[dict] = []
    doc_text: dict[tuple[str, str], str] = {}  # (source, doc id) -> text, in first-seen order
    doc_conv: dict[tuple[str, str], str] = {}
    lines_with_duplicates = 0
    for lineno, obj in _json_lines(path):
        query = _require(path, lineno, obj, "query", "str")
        corpus = _require(path, lineno, obj, "corpus", "str_list")
        rel = _require(path, lineno, obj, "relevant_idx", "int")
        source = _require(path, lineno, obj, "source", "str")
        conversation_id = _require(path, lineno, obj, "conversation_id", "str")
        if not corpus:
            raise EvalSetFormatError(path, lineno, 'expected a non-empty "corpus" list')
        if not 0 <= rel < len(corpus):
            raise EvalSetFormatError(
                path, lineno, f'expected "relevant_idx" in [0, {len(corpus) - 1}] (corpus has {len(corpus)} texts), got {rel}'
            )
        if not source:
            raise EvalSetFormatError(path, lineno, 'expected a non-empty "source"')
        ids = []
        for text in corpus:
            did = pool_document_id(text)
            seen = doc_text.setdefault((source, did), text)
            if seen != text:  # 64-bit prefix collision: never silently merge two texts
                raise EvalSetFormatError(path, lineno, f"document id collision for {did}; cannot read this set")
            ids.append(did)
        positive = ids[rel]
        doc_conv.setdefault((source, positive), conversation_id)
        unique = list(dict.fromkeys(ids))
        lines_with_duplicates += len(unique) != len(ids)
        query_rows.append(
            _row(
                eval_set=name,
                source=source,
                task=POOL_TASK,
                record_type="query",
                record_id=f"q:{lineno}",
                conversation_id=conversation_id,
                text=query,
                positive_id=positive,
                candidate_ids=unique,
                relevant_ids=[positive],
            )
        )
    doc_rows = [
        _row(
            eval_set=name,
            source=source,
            task=POOL_TASK,
            record_type="document",
            record_id=did,
            conversation_id=doc_conv.get((source, did)),
            text=text,
        )
        for (source, did), text in doc_text.items()
    ]
    sources = sorted({r["source"] for r in query_rows})
    notes = [
        f"{path}: {len(query_rows)} queries and {len(doc_rows)} unique documents in {len(sources)} source(s) "
        f"({', '.join(sources) or 'none'}) read as {name}/{POOL_TASK}"
    ]
    if lines_with_duplicates:
        notes.append(
            f"{path}: {lines_with_duplicates} line(s) list the same corpus text more than once; "
            "the repeats were collapsed (first position kept)"
        )
    return eval_frame(query_rows + doc_rows), notes


# --------------------------------------------------------------------------------------------
# BEIR


def _read_beir_jsonl(path: Path, *, with_title: bool) -> dict[str, tuple[str, str | None]]:
    """``_id`` -> (text, conversation_id or None), in file order."""
    if not path.is_file():
        raise EvalSetFormatError(path, None, "file not found (a BEIR folder has corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    out: dict[str, tuple[str, str | None]] = {}
    for lineno, obj in _json_lines(path):
        rid = str(_require(path, lineno, obj, "_id", "id"))
        text = _require(path, lineno, obj, "text", "str")
        if with_title:
            title = obj.get("title")
            if title is not None and not isinstance(title, str):
                raise EvalSetFormatError(path, lineno, f'expected "title" to be a string, got {_type_name(title)}')
            if title:
                text = f"{title}\n{text}"
        if rid in out:
            raise EvalSetFormatError(path, lineno, f'expected unique "_id" values, "{rid}" appears again')
        conv = obj.get("conversation_id")
        out[rid] = (text, conv if isinstance(conv, str) else None)
    return out


def _read_qrels(path: Path, queries, corpus) -> dict[str, dict[str, int]]:
    """query-id -> {corpus-id: score}, in file order."""
    if not path.is_file():
        raise EvalSetFormatError(path, None, "file not found (a BEIR folder has corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    header_seen = False
    with path.open("r", encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if not header_seen:
                if tuple(f.strip().lower() for f in fields) != _QRELS_HEADER:
                    raise EvalSetFormatError(path, lineno, "expected the header line 'query-id<TAB>corpus-id<TAB>score'")
                header_seen = True
                continue
            if len(fields) != 3:
                raise EvalSetFormatError(path, lineno, f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}")
            qid, did, score = (f.strip() for f in fields)
            try:
                score_value = int(score)
            except ValueError:
                raise EvalSetFormatError(path, lineno, f"expected an integer score, got {score!r}") from None
            if qid not in queries:
                raise EvalSetFormatError(path, lineno, f"query-id {qid!r} is not in queries.jsonl")
            if did not in corpus:
                raise EvalSetFormatError(path, lineno, f"corpus-id {did!r} is not in corpus.jsonl")
            scores = qrels.setdefault(qid, {})
            scores.pop(did, None)  # a repeated (query, document) pair: the last line wins, as in BEIR's loader
            scores[did] = score_value
    if not header_seen:
        raise EvalSetFormatError(path, None, "expected the header line 'query-id<TAB>corpus-id<TAB>score'")
    return qrels


def read_beir(folder: str | os.PathLike, *, name: str, split: str = "test") -> tuple[pd.DataFrame, list[str]]:
    """Read a BEIR folder into ``EVAL_SET_COLUMNS`` rows (``eval_set=name``, ``source=name``, ``task="beir"``).

    Record ids are ``"q:<_id>"`` / ``"d:<_id>"`` (BEIR query and corpus ids are separate
    namespaces). A document's text is ``title + "\\n" + text`` when it has a non-empty title.
    Every query's candidate_ids is every document (full-corpus retrieval, corpus order);
    relevant_ids are its qrels documents with score > 0 (qrels order), positive_id the first;
    a (query, document) pair listed twice counts with its last line.
    Queries absent from ``qrels/<split>.tsv``, or with no score > 0, are dropped with a note.
    An optional string ``conversation_id`` field on a line is kept (our exports write one).
    """
    folder = Path(folder)
    corpus = _read_beir_jsonl(folder / "corpus.jsonl", with_title=True)
    if not corpus:
        raise EvalSetFormatError(folder / "corpus.jsonl", None, "expected at least one document")
    queries = _read_beir_jsonl(folder / "queries.jsonl", with_title=False)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels = _read_qrels(qrels_path, queries, corpus)

    doc_ids = [f"d:{d}" for d in corpus]
    rows: list[dict] = []
    absent = no_relevant = 0
    for qid, (text, conv) in queries.items():
        if qid not in qrels:
            absent += 1
            continue
        relevant = [f"d:{d}" for d, score in qrels[qid].items() if score > 0]
        if not relevant:
            no_relevant += 1
            continue
        rows.append(
            _row(
                eval_set=name,
                source=name,
                task=BEIR_TASK,
                record_type="query",
                record_id=f"q:{qid}",
                conversation_id=conv,
                text=text,
                positive_id=relevant[0],
                candidate_ids=doc_ids,
                relevant_ids=relevant,
            )
        )
    n_queries = len(rows)
    rows += [
        _row(eval_set=name, source=name, task=BEIR_TASK, record_type="document", record_id=did, conversation_id=conv, text=text)
        for did, (text, conv) in zip(doc_ids, corpus.values())
    ]
    notes = [f"{folder}: {n_queries} queries and {len(corpus)} documents read as {name}/{BEIR_TASK} (qrels/{split}.tsv)"]
    if absent:
        notes.append(f"{folder}: dropped {absent} of {len(queries)} queries absent from qrels/{split}.tsv")
    if no_relevant:
        notes.append(f"{folder}: dropped {no_relevant} of {len(queries)} queries with no qrels score > 0 in qrels/{split}.tsv")
    return eval_frame(rows), notes


def read_external_eval_set(path: str | os.PathLike, *, name: str, split: str = "test") -> tuple[pd.DataFrame, list[str]]:
    """A ``.jsonl`` file -> :func:`read_pool_jsonl`; a folder with ``corpus.jsonl`` -> :func:`read_beir`."""
    path = Path(path)
    if path.is_file() and path.suffix == ".jsonl":
        return read_pool_jsonl(path, name=name)
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        return read_beir(path, name=name, split=split)
    if not path.exists():
        raise EvalSetFormatError(path, None, "not found (expected a pool-format .jsonl file or a BEIR folder)")
    raise EvalSetFormatError(
        path,
        None,
        "expected a pool-format .jsonl file or a BEIR folder containing corpus.jsonl, queries.jsonl and qrels/<split>.tsv",
    )


# --------------------------------------------------------------------------------------------
# export


def _groups(eval_sets: pd.DataFrame):
    missing = missing_columns(eval_sets.columns, EVAL_SET_COLUMNS)
    if missing:
        raise ValueError(f"eval sets are missing columns {missing}")
    if eval_sets.empty:
        return []
    return [(tuple(str(k) for k in key), g) for key, g in eval_sets.groupby(["eval_set", "source", "task"], sort=True)]


def _relevant(q) -> list[str]:
    rel = q["relevant_ids"]
    rel = list(rel) if rel is not None and not isinstance(rel, float) else []
    return rel or ([q["positive_id"]] if isinstance(q["positive_id"], str) else [])


def export_pool_jsonl(eval_sets: pd.DataFrame, path: str | os.PathLike, *, notes: list[str] | None = None) -> Path:
    """Write the pool JSONL format: one line per query, its candidate pool as texts.

    Only (eval_set, source, task) sets whose every query has exactly one relevant document
    are written (the format has one ``relevant_idx``); the others are skipped, with a line
    appended to ``notes`` when a list is given. ``source`` and ``conversation_id`` come from
    the query row (eval_set and task are not part of the format). Atomic; returns ``path``.
    """
    path = Path(path)
    lines: list[str] = []
    notes = notes if notes is not None else []
    for (eval_set, source, task), g in _groups(eval_sets):
        queries = g[g["record_type"] == "query"]
        docs = dict(zip(g.loc[g["record_type"] == "document", "record_id"], g.loc[g["record_type"] == "document", "text"]))
        rel = [_relevant(q) for _, q in queries.iterrows()]
        if any(len(r) != 1 for r in rel):
            n = sum(len(r) != 1 for r in rel)
            notes.append(f"skipped {eval_set}/{source}/{task}: {n} of {len(rel)} queries do not have exactly one relevant document")
            continue
        for (_, q), (positive,) in zip(queries.iterrows(), rel):
            cands = list(q["candidate_ids"])
            if positive not in cands:
                raise ValueError(f"{eval_set}/{source}/{task}: query {q['record_id']} has its positive outside its candidates")
            try:
                corpus = [docs[c] for c in cands]
            except KeyError as exc:
                raise ValueError(f"{eval_set}/{source}/{task}: candidate {exc} of query {q['record_id']} is not a document") from None
            conv = q["conversation_id"]
            lines.append(
                json.dumps(
                    {
                        "query": q["text"],
                        "corpus": corpus,
                        "relevant_idx": cands.index(positive),
                        "source": source,
                        "conversation_id": conv if isinstance(conv, str) else "",
                    },
                    ensure_ascii=False,
                )
            )
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def _beir_id(record_id: str, prefix: str) -> str:
    return record_id[len(prefix) :] if record_id.startswith(prefix) else record_id


def _checked_beir_id(record_id: str, prefix: str, used: set[str], where: str) -> str:
    bid = _beir_id(record_id, prefix)
    if bid != bid.strip() or any(c in bid for c in "\t\r\n"):
        raise ValueError(f"{where}: record_id {record_id!r} cannot be a BEIR id (tab, newline or edge whitespace)")
    if bid in used:
        raise ValueError(f"{where}: two records map to BEIR id {bid!r}")
    used.add(bid)
    return bid


def _safe_name(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)


def export_beir(eval_sets: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """Write one BEIR folder per (eval_set, source, task): ``<out_dir>/<eval_set>__<source>__<task>/``.

    Each holds ``corpus.jsonl`` (``_id``, ``title`` "", ``text``, ``conversation_id``),
    ``queries.jsonl`` (``_id``, ``text``, ``conversation_id``) and ``qrels/test.tsv`` (score 1
    for every relevant id). Ids drop our ``q:``/``d:`` prefix (:func:`read_beir` adds it back).
    BEIR has no candidate pools: a pool-restricted set (thread, response, concurrent_thread,
    pool) becomes full-corpus retrieval over all of the set's documents there, which is a
    harder, different protocol. Every file is written atomically. Returns the folders.
    """
    out_dir = Path(out_dir)
    folders: list[Path] = []
    for (eval_set, source, task), g in _groups(eval_sets):
        folder = out_dir / "__".join(_safe_name(p) for p in (eval_set, source, task))
        docs = g[g["record_type"] == "document"]
        queries = g[g["record_type"] == "query"]
        corpus_lines, query_lines, qrels_lines = [], [], ["\t".join(_QRELS_HEADER)]
        doc_ids: dict[str, str] = {}
        used: set[str] = set()
        for rid, text, conv in zip(docs["record_id"], docs["text"], docs["conversation_id"]):
            bid = _checked_beir_id(rid, "d:", used, f"{eval_set}/{source}/{task}")
            doc_ids[rid] = bid
            obj = {"_id": bid, "title": "", "text": text, "conversation_id": conv if isinstance(conv, str) else None}
            corpus_lines.append(json.dumps(obj, ensure_ascii=False))
        seen_q: set[str] = set()
        for _, q in queries.iterrows():
            qid = _checked_beir_id(q["record_id"], "q:", seen_q, f"{eval_set}/{source}/{task}")
            conv = q["conversation_id"]
            query_lines.append(json.dumps({"_id": qid, "text": q["text"], "conversation_id": conv if isinstance(conv, str) else None}, ensure_ascii=False))
            for rel in _relevant(q):
                if rel not in doc_ids:
                    raise ValueError(f"{eval_set}/{source}/{task}: relevant id {rel!r} of query {q['record_id']} is not a document")
                qrels_lines.append(f"{qid}\t{doc_ids[rel]}\t1")
        atomic_write_text(folder / "corpus.jsonl", "".join(line + "\n" for line in corpus_lines))
        atomic_write_text(folder / "queries.jsonl", "".join(line + "\n" for line in query_lines))
        atomic_write_text(folder / "qrels" / "test.tsv", "".join(line + "\n" for line in qrels_lines))
        folders.append(folder)
    return folders
