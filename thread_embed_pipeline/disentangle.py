"""Conversation disentanglement with the model: link each message of a channel log to the earlier
message it replies to (or to itself), then take the conversations as connected components.

The task and data are Kummerfeld et al. (ACL 2019): the Ubuntu IRC channel logs of
``irc_disentangle``, whose raw stage keeps every line with its file, line number and gold links
(``parent_ids``). The first lines of each upstream file are context: they are candidates, never scored.

* **Logs.** :func:`channel_logs` turns the raw table into one row per line, speakers pseudonymised per
  file and mentions rewritten with the text stage's own code (``text.prepare_text``), so no original
  name goes further. System lines (joins, quits) have no text.
* **Candidates and features.** :func:`candidate_features`: for each scored message ``i``, the
  messages ``i - window … i`` (the paper's 100 and itself), with: self link; log distance; log time
  gap; same speaker; ``i`` mentions the candidate's speaker and the reverse; the candidate is the
  speaker's own last message; system lines; BM25 of ``i`` against the candidate (``bm25s``, the eval's
  tokenisation); the paper's user-history and word-overlap features (:data:`HISTORY_FEATURES`: has
  either speaker spoken between the two lines, had either addressed the other before or in between,
  how long ago each speaker's previous line was, words in common, question marks, the file's rate),
  from the lines up to ``i`` only; and, with an embedding, the cosine of ``i`` and the candidate at
  each requested Matryoshka dim, with its rank among ``i``'s candidates.
* **Conversation so far.** With an embedding, also the cosine of ``i`` with the mean vector of the
  candidate's conversation up to ``i``: the gold conversation when training, the predicted one when
  linking (messages are linked in order, greedily).
* **Scorer.** A scikit-learn pipeline (standardisation + logistic regression, a small MLP, or
  :class:`ListwiseMLP`: the paper's objective, a softmax over each message's candidates, optionally an
  ensemble of several) trained on the candidates of **train** files; which one is chosen on **dev** by
  link F (:func:`fit_scorer`). Each message links to its best-scored candidate.
* **Metrics.** :mod:`thread_embed_pipeline.evaluation.disentanglement` (the upstream definitions).

The CLI disentangles a log in the IRC ``[HH:MM] <nick> text`` form into threads as JSON Lines:

    python -m thread_embed_pipeline.disentangle path/to/log.txt --scorer data/disentanglement/fine_tuned
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from thread_embed_pipeline.evaluation.disentanglement import clusters_from_links
from thread_embed_pipeline.schemas import Log, format_message, is_missing

WINDOW = 100  # candidates per message besides itself (the paper's)
SPEAKER_TOKEN = re.compile(r"\bspeaker_(\d+)\b")
BASE_FEATURES: tuple[str, ...] = (
    "self", "log_distance", "log_minutes", "same_speaker", "mentions_candidate", "candidate_mentions", "own_last",
    "candidate_system", "message_system", "message_mentions_anyone", "bm25", "bm25_rank",
)
# The paper's user-history and word-overlap features (Kummerfeld et al. 2019, §5 and its code's feature
# list), computed from the log up to the message only (a live channel has no future lines).
HISTORY_FEATURES: tuple[str, ...] = (
    "message_silent_since", "candidate_latest", "same_target", "candidate_mentions_anyone",
    "message_addressed_before", "message_addressed_between", "candidate_addressed_before", "candidate_addressed_between",
    "message_prev_distance", "message_prev_minutes", "message_prev_targeted", "message_has_prev",
    "candidate_prev_distance", "candidate_prev_minutes", "candidate_prev_targeted", "candidate_has_prev",
    "candidate_next_same", "candidate_before_same", "candidate_question", "message_question",
    "overlap_of_candidate", "overlap_of_message", "overlap_none", "overlap_one", "overlap_many", "overlap_over5",
    "log_lines_per_minute",
)

__all__ = ["Candidates", "DisentangleScorer", "WINDOW", "candidate_features", "channel_logs", "fit_scorer", "link_export_timelines", "parse_irc_log", "predict_links"]


def channel_logs(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per line of every file: ``file, split, line, scored, system, timestamp, speaker, text,
    gold`` (``gold``: the line's gold link targets; ``scored``: not a context line), speakers as
    ``speaker_<k>`` numbered per file and mentions of them rewritten."""
    from thread_embed_pipeline.text import TextSettings, prepare_text

    need = {"file", "message_id", "split_hint", "record_type", "author", "text", "timestamp", "parent_ids"}
    missing = need - set(raw.columns)
    if missing:
        raise ValueError(f"raw table is missing columns {sorted(missing)}")
    frame = raw.assign(file=raw["file"].map(lambda f: Path(str(f)).name.split(".")[0]))
    frame = frame.sort_values(["file", "message_id"], kind="stable").reset_index(drop=True)
    corpus = pd.DataFrame({
        "conversation_id": frame["file"], "source": "irc", "platform": "irc", "channel": "log",
        "message_idx": frame["message_id"].astype("int64"), "timestamp": pd.to_datetime(frame["timestamp"]),
        "author": frame["author"].astype(object), "text": frame["text"].fillna("").astype(object),
        "reply_to": pd.array([pd.NA] * len(frame), dtype="Int64"), "split": frame["split_hint"].astype(str),
    })
    text, _ = prepare_text(corpus, TextSettings(drop_bots=False, min_conversation_messages=1))
    if len(text) != len(frame):
        raise ValueError(f"the text stage dropped {len(frame) - len(text)} lines: links would lose their line numbers")
    text = text.sort_values(["conversation_id", "message_idx"], kind="stable").reset_index(drop=True)
    if not (text["conversation_id"].to_numpy() == frame["file"].to_numpy()).all():
        raise AssertionError("pseudonymised lines out of step with the raw lines")
    return pd.DataFrame({
        "file": frame["file"], "split": frame["split_hint"].astype(str), "line": frame["message_id"].astype("int64"),
        "scored": (frame["record_type"] != "context").to_numpy(), "system": (frame["record_type"] == "system").to_numpy(),
        "timestamp": pd.to_datetime(frame["timestamp"]), "speaker": text["author"].astype(object), "text": text["text"].astype(object),
        "gold": frame["parent_ids"].map(lambda v: [int(x) for x in v] if v is not None else []),
    })


def parse_irc_log(text: str) -> pd.DataFrame:
    """A log in the IRC ``[HH:MM] <nick> text`` form (``=== ...`` system lines allowed) as a raw-shaped
    table of one file, every line scored. Raises on a line in neither form, naming it."""
    rows = []
    for k, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        m = re.match(r"^\[(\d{1,2}):(\d{2})\]\s+<([^>]*)>\s?(.*)$", line)
        if m:
            rows.append({"time": f"{int(m[1]):02d}:{m[2]}", "author": m[3].strip() or None, "text": m[4], "record_type": "message"})
        elif line.startswith("==="):
            rows.append({"time": None, "author": None, "text": None, "record_type": "system"})
        else:
            raise ValueError(f"line {k + 1} is not '[HH:MM] <nick> text' or '=== ...': {line[:80]!r}")
    if not rows:
        raise ValueError("the log has no messages")
    frame = pd.DataFrame(rows)
    ts = pd.to_datetime("2000-01-01 " + frame["time"].fillna("00:00"), format="%Y-%m-%d %H:%M")
    day = (ts.diff().dt.total_seconds().fillna(0) < 0).cumsum()  # past midnight: the next day
    frame["timestamp"] = (ts + pd.to_timedelta(day, unit="D")).where(frame["time"].notna())
    n = len(frame)
    return pd.DataFrame({
        "file": "log", "message_id": np.arange(n), "split_hint": "user", "record_type": frame["record_type"],
        "author": frame["author"], "text": frame["text"], "timestamp": frame["timestamp"], "parent_ids": [[] for _ in range(n)],
    })


def _bm25_matrix(texts: Sequence[str], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """BM25 of each text at ``rows`` (queries) against each at ``cols``, within one file."""
    from thread_embed_pipeline.evaluation.retrieval import bm25_index, bm25_query_tokens, bm25_scores

    docs = [texts[c] or "" for c in cols]
    if not any(d.strip() for d in docs):
        return np.zeros((len(rows), len(cols)))
    index = bm25_index(docs)
    tokens = bm25_query_tokens([texts[r] or "" for r in rows])
    return np.stack([bm25_scores(index, t, len(docs)) if t else np.zeros(len(docs)) for t in tokens])


def candidate_features(
    log: pd.DataFrame, embeddings: Mapping[int, np.ndarray] | None = None, *, window: int = WINDOW
) -> pd.DataFrame:
    """For ONE file of :func:`channel_logs`: a row per (scored message, candidate) with ``line``,
    ``candidate``, ``label`` (the candidate is a gold link) and the features (see the module
    docstring). ``embeddings``: dim -> (lines x dim) L2-normalised vectors, rows in line order."""
    log = log.reset_index(drop=True)
    n = len(log)
    if not (log["line"].to_numpy() == np.arange(n)).all():
        raise ValueError("a log's lines must be numbered 0..n-1 in order")
    scored = np.flatnonzero(log["scored"].to_numpy())
    if not len(scored):
        return pd.DataFrame()
    d = np.arange(window + 1)
    i = np.repeat(scored, window + 1)
    j = i - np.tile(d, len(scored))
    keep = j >= 0
    i, j = i[keep], j[keep]
    dist = i - j
    spk_codes, speakers = pd.factorize(log["speaker"].where(log["speaker"].notna(), None))
    spk = np.where(log["speaker"].isna().to_numpy(), -1, spk_codes)
    system = log["system"].to_numpy()
    texts = log["text"].fillna("").astype(str).tolist()
    n_spk = int(spk.max()) + 1 if (spk >= 0).any() else 0
    # who each line mentions, by speaker code (the pseudonyms are in the text)
    code_of = {name: k for k, name in enumerate(speakers)}
    mentions = np.zeros((n, max(n_spk, 1)), dtype=bool)
    for row, t in enumerate(texts):
        for m in SPEAKER_TOKEN.finditer(t):
            k = code_of.get(f"speaker_{m[1]}")
            if k is not None:
                mentions[row, k] = True
    ts = log["timestamp"].to_numpy(dtype="datetime64[ns]")
    gap = (ts[i] - ts[j]).astype("timedelta64[s]").astype(np.float64) / 60.0
    gap = np.where(np.isnat(ts[i]) | np.isnat(ts[j]), 0.0, np.clip(gap, 0, None))
    same = (spk[i] == spk[j]) & (spk[i] >= 0) & (dist > 0)
    ment_c = (spk[j] >= 0) & mentions[i, np.clip(spk[j], 0, None)] & (dist > 0)
    c_ment = (spk[i] >= 0) & mentions[j, np.clip(spk[i], 0, None)] & (dist > 0)
    # the candidate is the most recent earlier line by the message's own speaker
    last_by = np.full(n, -1)
    seen: dict[int, int] = {}
    for row in range(n):
        last_by[row] = seen.get(spk[row], -1) if spk[row] >= 0 else -1
        if spk[row] >= 0:
            seen[spk[row]] = row
    frame = {
        "line": i, "candidate": j,
        **_history_features(spk, mentions, texts, ts, last_by, i, j),
        "self": (dist == 0).astype(np.float32), "log_distance": np.log1p(dist).astype(np.float32),
        "log_minutes": np.log1p(gap).astype(np.float32), "same_speaker": same.astype(np.float32),
        "mentions_candidate": ment_c.astype(np.float32), "candidate_mentions": c_ment.astype(np.float32),
        "own_last": (last_by[i] == j).astype(np.float32), "candidate_system": system[j].astype(np.float32),
        "message_system": system[i].astype(np.float32), "message_mentions_anyone": mentions[i].any(axis=1).astype(np.float32),
    }
    lo = max(int(scored.min()) - window, 0)
    cols = np.arange(lo, n)
    bm = _bm25_matrix(texts, scored, cols)
    row_of = {int(r): k for k, r in enumerate(scored)}
    bm25 = bm[np.array([row_of[int(x)] for x in i]), j - lo]
    frame["bm25"] = np.where(dist > 0, bm25, 0.0).astype(np.float32)
    out = pd.DataFrame(frame)
    out["bm25_rank"] = np.log1p(out.groupby("line")["bm25"].rank(ascending=False, method="min")).astype(np.float32)
    for dim, emb in sorted((embeddings or {}).items()):
        cos = np.einsum("nd,nd->n", emb[i], emb[j])
        out[f"cos@{dim}"] = np.where(dist > 0, cos, 0.0).astype(np.float32)
        out[f"cos_rank@{dim}"] = np.log1p(out.groupby("line")[f"cos@{dim}"].rank(ascending=False, method="min")).astype(np.float32)
    gold = log["gold"].tolist()
    out["label"] = [int(c) in gold[r] for r, c in zip(i.tolist(), j.tolist())]
    if embeddings:
        dim = max(embeddings)
        emb = embeddings[dim]
        # training: the candidate's gold conversation so far (its lines before the message)
        labels = np.full(n, -1)
        for k, cluster in enumerate(clusters_from_links(gold_links(log), cutoff=0)):
            labels[list(cluster)] = k
        labels = np.where(labels < 0, n + np.arange(n), labels)  # unlinked lines: their own conversation
        out[CONVERSATION_FEATURE] = np.where(dist > 0, _conversation_cosine(emb, labels, i, j), 0.0).astype(np.float32)
    return out


CONVERSATION_FEATURE = "conversation_cos"


def _history_features(spk: np.ndarray, mentions: np.ndarray, texts: list[str], ts: np.ndarray, last_by: np.ndarray, i: np.ndarray, j: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`HISTORY_FEATURES` of the pairs (message ``i``, candidate ``j``) of one file. ``spk``:
    speaker codes (-1: none); ``mentions``: line x speaker; ``last_by``: each line's speaker's previous
    line (-1: none). The pair features are 0 on the self link; the message's own (``message_*``, the
    file's rate) are the same on all its rows."""
    from sklearn.feature_extraction.text import CountVectorizer

    n = len(spk)
    other = i != j
    next_by = np.full(n, n)
    seen: dict[int, int] = {}
    for row in range(n - 1, -1, -1):
        if spk[row] >= 0:
            next_by[row] = seen.get(spk[row], n)
            seen[spk[row]] = row
    # how often speaker a addressed speaker b before a line: sorted (pair, line) keys, counted by searchsorted
    n_spk = mentions.shape[1]
    rows, targets = np.nonzero(mentions & (spk >= 0)[:, None])
    keys = np.sort((spk[rows].astype(np.int64) * n_spk + targets) * (n + 1) + rows)

    def addressed(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """a mentioned b on a line in [lo, hi)."""
        base = (a.astype(np.int64) * n_spk + b) * (n + 1)
        count = np.searchsorted(keys, base + hi, side="left") - np.searchsorted(keys, base + lo, side="left")
        return (count > 0) & (a >= 0) & (b >= 0) & other

    def prev_minutes(rows_: np.ndarray) -> np.ndarray:
        prev = last_by[rows_]
        gap = (ts[rows_] - ts[np.maximum(prev, 0)]).astype("timedelta64[s]").astype(np.float64) / 60.0
        ok = (prev >= 0) & ~np.isnat(ts[rows_]) & ~np.isnat(ts[np.maximum(prev, 0)])
        return np.where(ok, np.log1p(np.clip(gap, 0, None)), 0.0)

    targeted = mentions.any(axis=1)
    prev_targeted = np.where(last_by >= 0, targeted[np.maximum(last_by, 0)], False)
    words = CountVectorizer(binary=True, lowercase=True).fit([t for t in texts if t.strip()] or ["empty"])
    bags = words.transform(texts)
    common = np.asarray(bags[i].multiply(bags[j]).sum(axis=1)).ravel()
    size = np.asarray(bags.sum(axis=1)).ravel()
    question = np.array(["?" in t for t in texts])
    minutes = (ts[~np.isnat(ts)].max() - ts[~np.isnat(ts)].min()).astype("timedelta64[s]").astype(np.float64) / 60.0 if (~np.isnat(ts)).sum() > 1 else 0.0
    nxt, prv = np.minimum(j + 1, n - 1), np.maximum(j - 1, 0)
    out = {
        "message_silent_since": (last_by[i] < j) & other, "candidate_latest": (next_by[j] > i) & other & (spk[j] >= 0),
        "same_target": (mentions[i] & mentions[j]).any(axis=1) & other, "candidate_mentions_anyone": targeted[j] & other,
        "message_addressed_before": addressed(spk[i], spk[j], np.zeros_like(j), j), "message_addressed_between": addressed(spk[i], spk[j], j + 1, i),
        "candidate_addressed_before": addressed(spk[j], spk[i], np.zeros_like(j), j), "candidate_addressed_between": addressed(spk[j], spk[i], j + 1, i),
        "message_prev_distance": np.where(last_by[i] >= 0, np.log1p(i - last_by[i]), 0.0), "message_prev_minutes": prev_minutes(i),
        "message_prev_targeted": prev_targeted[i], "message_has_prev": last_by[i] >= 0,
        "candidate_prev_distance": np.where((last_by[j] >= 0) & other, np.log1p(j - last_by[j]), 0.0), "candidate_prev_minutes": np.where(other, prev_minutes(j), 0.0),
        "candidate_prev_targeted": prev_targeted[j] & other, "candidate_has_prev": (last_by[j] >= 0) & other,
        "candidate_next_same": (spk[nxt] == spk[j]) & (spk[j] >= 0) & (j + 1 < n) & other, "candidate_before_same": (spk[prv] == spk[j]) & (spk[j] >= 0) & (j > 0) & other,
        "candidate_question": question[j] & other, "message_question": question[i],
        "overlap_of_candidate": np.where(other & (size[j] > 0), common / np.maximum(size[j], 1), 0.0),
        "overlap_of_message": np.where(other & (size[i] > 0), common / np.maximum(size[i], 1), 0.0),
        "overlap_none": other & (common == 0), "overlap_one": other & (common == 1), "overlap_many": other & (common > 1), "overlap_over5": other & (common > 5),
        "log_lines_per_minute": np.full(len(i), np.log1p(n / max(minutes, 1.0))),
    }
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _conversation_cosine(emb: np.ndarray, labels: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine of line ``i`` with the mean of the lines of ``j``'s conversation (``labels``) up to ``i - 1``."""
    n = len(labels)
    order = np.lexsort((np.arange(n), labels))  # by conversation, then line
    key = labels[order].astype(np.int64) * (n + 1) + order
    cum = np.cumsum(emb[order], axis=0, dtype=np.float64)
    start = np.searchsorted(labels[order], labels[order], side="left")  # first position of each line's conversation
    last = np.searchsorted(key, labels[j].astype(np.int64) * (n + 1) + (i - 1), side="right") - 1  # j's conversation, lines <= i - 1
    first = start[last]
    total = cum[last] - np.where(first[:, None] > 0, cum[np.maximum(first - 1, 0)], 0.0)
    norm = np.linalg.norm(total, axis=1)
    return np.einsum("nd,nd->n", emb[i], total) / np.where(norm > 0, norm, 1.0)


def feature_names(dims: Sequence[int]) -> list[str]:
    per_dim = [f for d in sorted(dims) for f in (f"cos@{d}", f"cos_rank@{d}")]
    return [*BASE_FEATURES, *HISTORY_FEATURES, *per_dim, *([CONVERSATION_FEATURE] if dims else [])]


def predict_links(features: pd.DataFrame, scores: np.ndarray) -> list[tuple[int, int]]:
    """Each message's best-scored candidate (ties: the nearest)."""
    frame = features[["line", "candidate"]].assign(score=scores)
    best = frame.sort_values(["line", "score", "candidate"], ascending=[True, False, False], kind="stable").drop_duplicates("line")
    return [(int(a), int(b)) for a, b in zip(best["line"], best["candidate"])]


def _scores(pipeline, x: np.ndarray) -> np.ndarray:
    return pipeline.decision_function(x) if hasattr(pipeline, "decision_function") else pipeline.predict_proba(x)[:, 1]


def _greedy_decode(features: pd.DataFrame, x: np.ndarray, column: int, pipeline, emb: np.ndarray) -> list[tuple[int, int]]:
    """Link messages in line order; each candidate's conversation feature (``x[:, column]``) is
    computed from the conversations predicted so far."""
    lines = features["line"].to_numpy()
    cands = features["candidate"].to_numpy()
    starts = np.flatnonzero(np.r_[True, lines[1:] != lines[:-1]])
    ends = np.r_[starts[1:], len(lines)]
    conv = np.arange(len(emb))
    sums = emb.astype(np.float64).copy()
    links = []
    for a, b in zip(starts, ends):
        line, cand = int(lines[a]), cands[a:b]
        cent = sums[conv[cand]]
        norm = np.linalg.norm(cent, axis=1)
        rows = x[a:b].copy()
        rows[:, column] = np.where(cand != line, cent @ emb[line] / np.where(norm > 0, norm, 1.0), 0.0)
        score = _scores(pipeline, rows)
        best = int(cand[np.lexsort((-cand, -score))[0]])  # the best score; ties: the nearest
        links.append((line, best))
        if best != line:
            conv[line] = conv[best]
            sums[conv[best]] += emb[line]
    return links


@dataclass
class Candidates:
    """One file's candidate rows (:func:`candidate_features`) and, with a model, its lines' vectors at
    the largest dim (the decoder's conversation feature)."""

    frame: pd.DataFrame
    embeddings: np.ndarray | None = None


@dataclass
class DisentangleScorer:
    """The fitted pipeline, the features it reads and how it was chosen."""

    pipeline: object
    dims: list[int]
    window: int = WINDOW
    chosen: dict = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return feature_names(self.dims)

    def links(self, candidates: "Candidates") -> list[tuple[int, int]]:
        """Each message's best candidate. With embeddings, messages are linked in order and the
        conversation feature is the candidate's *predicted* conversation so far (greedy decoding)."""
        features = candidates.frame
        x = features[self.features].to_numpy(dtype=np.float64)
        if not self.dims:
            return predict_links(features, _scores(self.pipeline, x))
        return _greedy_decode(features, x, self.features.index(CONVERSATION_FEATURE), self.pipeline, candidates.embeddings)

    def save(self, folder: Path) -> Path:
        import joblib

        from thread_embed_pipeline.storage import atomic_write_bytes, atomic_write_text

        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / "scorer.joblib", lambda tmp: joblib.dump(self.pipeline, tmp))
        atomic_write_text(folder / "scorer.json", json.dumps({"dims": self.dims, "window": self.window, "features": self.features, "chosen": self.chosen}, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path) -> "DisentangleScorer":
        import joblib

        folder = Path(folder)
        if not (folder / "scorer.joblib").is_file():
            raise FileNotFoundError(f"no scorer.joblib in {folder}: materialise a disentanglement/<model> asset first")
        meta = json.loads((folder / "scorer.json").read_text())
        if meta.get("features") != feature_names(meta["dims"]):
            raise ValueError(f"the scorer in {folder} reads other features than this version computes: rematerialise its disentanglement asset")
        return cls(joblib.load(folder / "scorer.joblib"), meta["dims"], meta["window"], meta.get("chosen", {}))


SCORERS: tuple[str, ...] = ("logreg:0.1", "listwise:128x128", "listwise:256x256")  # chosen between on dev (docs/results.md)


class ListwiseMLP(BaseEstimator):
    """A small MLP (tanh) that scores each candidate, trained as the paper trains its FF: a softmax over
    each message's candidates, cross-entropy against its gold links (shared equally when there are
    several). Messages without a gold link in the window are left out of training. Trained with torch
    (Adam), early-stopped on a seeded 10% of the training messages; scored with numpy afterwards, so a
    loaded scorer needs no torch. ``members`` > 1 trains that many nets (seeds ``seed``, ``seed + 1``,
    ..., each with its own held-out 10%) and averages their scores: the ensemble, in place of the
    paper's vote over ten models' links."""

    def __init__(self, hidden: Sequence[int] = (128, 128), *, members: int = 1, epochs: int = 12, lr: float = 1e-3, batch: int = 16, patience: int = 2, seed: int = 0):
        self.hidden, self.members, self.epochs, self.lr, self.batch, self.patience, self.seed = tuple(hidden), members, epochs, lr, batch, patience, seed
        self.nets_: list[list[tuple[np.ndarray, np.ndarray]]] = []

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "ListwiseMLP":
        if groups is None:
            raise ValueError("ListwiseMLP.fit needs groups: each row's message (rows of a message contiguous)")
        groups = np.asarray(groups)
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        ends = np.r_[starts[1:], len(groups)]
        index = np.full((len(starts), int((ends - starts).max())), -1, dtype=np.int64)
        for k, (a, b) in enumerate(zip(starts, ends)):
            index[k, : b - a] = np.arange(a, b)
        y = np.asarray(y, dtype=np.float32)
        index = index[(np.where(index >= 0, y[np.maximum(index, 0)], 0) > 0).any(axis=1)]
        if not len(index):
            raise ValueError("no message has a gold link among its candidates")
        fitted = [self._fit_one(np.asarray(x, dtype=np.float32), y, index, self.seed + k) for k in range(self.members)]
        self.nets_ = [net for net, _ in fitted]
        self.validation_loss_ = float(np.mean([loss for _, loss in fitted]))
        return self

    def _fit_one(self, x: np.ndarray, y: np.ndarray, index: np.ndarray, seed: int) -> tuple[list, float]:
        import torch

        torch.manual_seed(seed)
        order = np.random.default_rng(seed).permutation(len(index))
        held = max(1, len(index) // 10)
        fit_idx, val_idx = torch.from_numpy(index[order[held:]]), torch.from_numpy(index[order[:held]])
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        layers, width_in = [], xt.shape[1]
        for h in self.hidden:
            layers += [torch.nn.Linear(width_in, h), torch.nn.Tanh()]
            width_in = h
        net = torch.nn.Sequential(*layers, torch.nn.Linear(width_in, 1))
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)

        def loss_of(idx: torch.Tensor) -> torch.Tensor:
            mask = idx >= 0
            scores = net(xt[idx.clamp(min=0)]).squeeze(-1).masked_fill(~mask, float("-inf"))
            gold = yt[idx.clamp(min=0)] * mask
            return -(gold / gold.sum(1, keepdim=True) * torch.log_softmax(scores, 1).masked_fill(~mask, 0.0)).sum(1).mean()

        best, best_state, stale = float("inf"), None, 0
        for _ in range(self.epochs):
            net.train()
            for batch in torch.randperm(len(fit_idx)).split(self.batch):
                opt.zero_grad()
                loss_of(fit_idx[batch]).backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val = float(sum(loss_of(v) * len(v) for v in val_idx.split(4096)) / len(val_idx))
            if val < best - 1e-4:
                best, best_state, stale = val, {k: v.clone() for k, v in net.state_dict().items()}, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        net.load_state_dict(best_state)
        return [(m.weight.detach().numpy().T.astype(np.float64), m.bias.detach().numpy().astype(np.float64)) for m in net if isinstance(m, torch.nn.Linear)], best

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        total = 0.0
        for weights in self.nets_:
            h = np.asarray(x, dtype=np.float64)
            for w, b in weights[:-1]:
                h = np.tanh(h @ w + b)
            w, b = weights[-1]
            total = total + (h @ w + b).ravel()
        return total / len(self.nets_)


def make_classifier(spec: str, seed: int = 0):
    """``logreg:<C>`` (logistic regression), ``mlp:<h1>x<h2>...`` (a small MLP with early stopping) or
    ``listwise:<h1>x<h2>...[*<members>]`` (:class:`ListwiseMLP`, a softmax over each message's
    candidates; ``*5``: five of them, scores averaged), after standardisation: a scikit-learn pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    kind, _, arg = spec.partition(":")
    try:
        if kind == "logreg":
            clf = LogisticRegression(C=float(arg), max_iter=1000, random_state=seed)
        elif kind == "mlp":
            clf = MLPClassifier(tuple(int(h) for h in arg.split("x")), early_stopping=True, max_iter=30, random_state=seed)
        elif kind == "listwise":
            sizes, _, members = arg.partition("*")
            clf = ListwiseMLP(tuple(int(h) for h in sizes.split("x")), members=int(members or 1), seed=seed)
        else:
            raise ValueError
    except ValueError:
        raise ValueError(f"scorer {spec!r}: expected 'logreg:<C>', 'mlp:<h1>x<h2>...' or 'listwise:<h1>x<h2>...[*<members>]'") from None
    return make_pipeline(StandardScaler(), clf)


def fit_scorer(
    train: pd.DataFrame, dev_features: Mapping[str, Candidates], dev_gold: Mapping[str, list], *, dims: Sequence[int],
    models: Sequence[str] = SCORERS, seed: int = 0, log: Log = None,
) -> DisentangleScorer:
    """Fit each of ``models`` (:func:`make_classifier`) on the ``train`` candidates (every file's rows
    concatenated) and keep the one with the best link F on the dev files (``dev_features`` per
    file, ``dev_gold`` their links), decoded as on test."""
    from thread_embed_pipeline.evaluation.disentanglement import disentanglement_metrics

    names = feature_names(dims)
    x, y = train[names].to_numpy(), train["label"].to_numpy()
    starts = train["line"].ne(train["line"].shift())
    if "file" in train:
        starts |= train["file"].ne(train["file"].shift())
    groups = starts.cumsum().to_numpy()  # each message's rows (contiguous)
    best, tried = None, {}
    for spec in models:
        start = time.perf_counter()
        pipeline = make_classifier(spec, seed)
        fit_params = {f"{pipeline.steps[-1][0]}__groups": groups} if isinstance(pipeline.steps[-1][1], ListwiseMLP) else {}
        scorer = DisentangleScorer(pipeline.fit(x, y, **fit_params), list(dims))
        m = disentanglement_metrics(dev_gold, {f: scorer.links(c) for f, c in dev_features.items()})
        tried[spec] = {"dev_link_f": round(m["link_f"], 4), "dev_exact_f": round(m["exact_f"], 4), "dev_one_minus_vi": round(m["one_minus_vi"], 4), "fit_s": round(time.perf_counter() - start, 1)}
        if log:
            log(f"{spec}: dev link F {m['link_f']:.3f}, conversation F {m['exact_f']:.3f}, 1-VI {m['one_minus_vi']:.3f} ({tried[spec]['fit_s']}s)")
        if best is None or m["link_f"] > best[0]:
            best = (m["link_f"], scorer, spec)
    scorer = best[1]
    scorer.chosen = {"scorer": best[2], "tried": tried, "train_rows": int(len(train)), "train_positives": int(y.sum())}
    return scorer


def gold_links(log: pd.DataFrame) -> list[tuple[int, int]]:
    """A file's gold links of its scored lines."""
    rows = log[log["scored"]]
    return [(int(line), int(t)) for line, targets in zip(rows["line"], rows["gold"]) for t in (targets or [line])]


def file_features(logs: pd.DataFrame, embed: Callable[[list[str], int], np.ndarray] | None, dims: Sequence[int], *, window: int = WINDOW, log: Log = None) -> dict[str, Candidates]:
    """:func:`candidate_features` of every file of ``logs``; ``embed(texts, dim)`` (None: no
    embedding features) is called once per dim with every line that can be a candidate."""
    groups = {f: g.reset_index(drop=True) for f, g in logs.groupby("file", sort=False)}
    # lines before (first scored line - window) are never a candidate: not embedded
    first = {f: max(int(g.loc[g["scored"], "line"].min()) - window, 0) if g["scored"].any() else len(g) for f, g in groups.items()}
    texts, spans = [], {}
    for f, g in groups.items():
        part = g.iloc[first[f]:]
        spans[f] = (len(texts), len(texts) + len(part))
        texts += [format_message(None if is_missing(sp) else sp, t or "") for sp, t in zip(part["speaker"], part["text"])]
    vectors = {}
    if embed is not None:
        for dim in dims:
            start = time.perf_counter()
            vectors[dim] = np.asarray(embed(texts, dim), dtype=np.float32)
            if log:
                log(f"embedded {len(texts)} lines at dim {dim} in {time.perf_counter() - start:.0f}s")
    out = {}
    for f, g in groups.items():
        a, b = spans[f]
        emb = {d: np.vstack([np.zeros((first[f], d), dtype=np.float32), v[a:b]]) for d, v in vectors.items()} or None
        out[f] = Candidates(candidate_features(g, emb, window=window), emb[max(emb)] if emb else None)
    return out


def disentangle_splits(
    logs: pd.DataFrame, embed: Callable[[list[str], int], np.ndarray] | None, dims: Sequence[int], *,
    window: int = WINDOW, max_train_files: int | None = 40, models: Sequence[str] = SCORERS,
    n_resamples: int = 200, seed: int = 0, log: Log = None,
) -> dict:
    """Train on (a seeded sample of ``max_train_files``) train files, choose the scorer on dev, link the test
    files and score them: ``metrics`` (:func:`~.evaluation.disentanglement.file_bootstrap`), the
    ``scorer``, the test ``links`` per file, and counts and timings."""
    from thread_embed_pipeline.evaluation.disentanglement import file_bootstrap

    train_files = sorted(logs.loc[logs["split"] == "train", "file"].unique())
    if max_train_files and len(train_files) > max_train_files:
        train_files = sorted(np.random.default_rng(seed).choice(train_files, max_train_files, replace=False).tolist())
    parts = {s: logs[logs["file"].isin(train_files)] if s == "train" else logs[logs["split"] == s] for s in ("train", "dev", "test")}
    empty = [s for s, p in parts.items() if not p["scored"].any()]
    if empty:
        raise ValueError(f"no scored lines in the {', '.join(empty)} files: the disentangler needs train, dev and test")
    start = time.perf_counter()
    feats = {s: file_features(p, embed, dims, window=window, log=log) for s, p in parts.items()}
    gold = {s: {f: gold_links(g) for f, g in p.groupby("file")} for s, p in parts.items()}
    if log:
        log(f"candidate features of {sum(len(v) for v in feats.values())} files in {time.perf_counter() - start:.0f}s")
    train = pd.concat([c.frame.assign(file=f) for f, c in feats["train"].items()], ignore_index=True)
    scorer = fit_scorer(train, feats["dev"], gold["dev"], dims=dims, models=models, seed=seed, log=log)
    scorer.chosen["train_files"] = len(train_files)
    start = time.perf_counter()
    links = {f: scorer.links(c) for f, c in feats["test"].items()}
    link_s = time.perf_counter() - start
    metrics = file_bootstrap(gold["test"], links, n_resamples=n_resamples, seed=seed)
    return {"metrics": metrics, "scorer": scorer, "links": links, "train_files": len(train_files), "test_messages": int(parts["test"]["scored"].sum()), "link_test_s": link_s}


LINK_CHUNK = 1000  # messages scored per block when linking a timeline: BM25 is (block x block + history)


def link_export_timelines(raw, scorer: DisentangleScorer, *, unthreaded_only: bool, log: Log = None) -> tuple:
    """Predicted reply links for a user export's raw rows (``RAW_SCHEMA``, whole timelines; ``file`` is the
    timeline): the same rows, in the same order, with ``parent_ids`` (and, with ``unthreaded_only``,
    ``conversation_key``) set from the scorer, and counts ``linked/<what>``.

    A timeline's ``message`` rows, in time order (timestamp, then message_id; a missing time takes the
    previous row's), are the log: each scored message links to its best candidate among itself and the
    ``scorer.window`` messages before it (a self link starts a conversation: ``linked/self``; else its
    ``parent_ids`` name the target: ``linked/parent``). Other rows (system, bot, edit, ...) are neither
    scored nor candidates, and are returned untouched. Only the features-only scorer (``dims == []``)
    is accepted: an embedding scorer would need the model, which trains on the pairs these links make.

    * ``unthreaded_only=False`` (an IRC log): every message is scored; a timeline with any
      ``conversation_key`` or in-timeline parent link is refused (its threads are native).
    * ``unthreaded_only=True`` (``link_unthreaded: disentangler`` of a threaded platform): only messages
      whose conversation would hold one message (grouped as the corpus stage groups them: by key, else
      by ``parent_ids`` components, counting message rows) are scored (``linked/native``: those left in
      their native conversation); every message is a candidate. A linked message joins its target's
      conversation: it takes the target's ``conversation_key`` (``linked/key_copied``), or, the target
      having none, loses its own and the parent link puts it in the target's component.

    Timelines are scored in blocks of :data:`LINK_CHUNK` messages, each with the ``max(window, LINK_CHUNK)``
    messages before it as history (speaker and mention features read it), so memory stays bounded.
    """
    import pyarrow as pa
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from thread_embed_pipeline.schemas import raw_table

    if scorer.dims:
        raise ValueError(
            f"link_export_timelines needs the features-only scorer (dims == []), got dims {scorer.dims}: an embedding "
            "scorer reads the model, which is trained on the pairs these links make (a cycle); load disentanglement/features_only"
        )
    table = raw_table(raw)
    frame = table.select(["file", "message_id", "timestamp", "author", "text", "conversation_key", "parent_ids", "record_type"]).to_pandas()
    parents = [list(p) if p is not None else [] for p in frame["parent_ids"]]
    keys = [k if isinstance(k, str) else None for k in frame["conversation_key"]]
    counts = {"linked/timelines": 0, "linked/predicted": 0, "linked/self": 0, "linked/parent": 0}
    if unthreaded_only:
        counts |= {"linked/native": 0, "linked/key_copied": 0}
    history = max(scorer.window, LINK_CHUNK)
    for timeline, rows in frame.groupby("file", sort=False).indices.items():
        start = time.perf_counter()
        rows = np.asarray(rows)
        mids = frame["message_id"].to_numpy()[rows]
        is_message = frame["record_type"].to_numpy()[rows] == "message"
        local: dict[int, int] = {}
        for k, mid in enumerate(mids.tolist()):
            local.setdefault(mid, k)  # a repeated id: its first row, as the corpus stage reads it
        edges = [(r, local[p]) for r in range(len(rows)) for p in parents[rows[r]] if local.get(p, r) != r]
        keyed = np.array([keys[r] is not None for r in rows], dtype=bool)
        if not unthreaded_only and (keyed.any() or edges):
            raise ValueError(f"timeline {timeline!r} has native threads (conversation_key or parent links): link it with unthreaded_only=True")
        alone = is_message.copy()
        if unthreaded_only:
            unkeyed_edges = [(a, b) for a, b in edges if not keyed[a] and not keyed[b]]
            graph = coo_matrix((np.ones(len(unkeyed_edges)), ([a for a, _ in unkeyed_edges], [b for _, b in unkeyed_edges])), shape=(len(rows), len(rows)))
            component = connected_components(graph, directed=True, connection="weak")[1]
            group = pd.Series([("k", keys[r]) if keyed[k] else ("c", int(component[k])) for k, r in enumerate(rows)])
            messages_in = group[is_message].value_counts()
            alone &= group.map(messages_in).fillna(0).to_numpy() == 1
            counts["linked/native"] += int(is_message.sum() - alone.sum())
        # the log: message rows in time order
        msg = np.flatnonzero(is_message)
        if not len(msg):
            continue
        ts = pd.Series(frame["timestamp"].to_numpy()[rows[msg]]).ffill().bfill()
        ts_ns = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64) if ts.notna().all() else np.zeros(len(msg), dtype=np.int64)
        order = msg[np.lexsort((mids[msg], ts_ns))]  # log position -> local row
        scored = alone[order]
        counts["linked/timelines"] += 1
        if not scored.any():
            continue
        m = len(order)
        logs = channel_logs(pd.DataFrame({
            "file": "timeline", "message_id": np.arange(m), "split_hint": "user", "record_type": "message",
            "author": frame["author"].to_numpy()[rows[order]], "text": frame["text"].to_numpy()[rows[order]],
            "timestamp": frame["timestamp"].to_numpy()[rows[order]], "parent_ids": [[] for _ in range(m)],
        }))
        links: list[tuple[int, int]] = []
        for lo in range(0, m, LINK_CHUNK):
            hi = min(lo + LINK_CHUNK, m)
            if not scored[lo:hi].any():
                continue
            first = max(0, lo - history)
            part = logs.iloc[first:hi].reset_index(drop=True)
            part["line"] = np.arange(hi - first)
            part["scored"] = np.r_[np.zeros(lo - first, dtype=bool), scored[lo:hi]]
            links += [(first + i, first + j) for i, j in scorer.links(Candidates(candidate_features(part, window=scorer.window)))]
        for position, target in sorted(links):  # in log order: a target's own link is applied first
            row, parent = rows[order[position]], rows[order[target]]
            counts["linked/predicted"] += 1
            if position == target:
                counts["linked/self"] += 1
                continue
            counts["linked/parent"] += 1
            parents[row] = [int(frame["message_id"].iat[parent])]
            if unthreaded_only:
                keys[row] = keys[parent]
                counts["linked/key_copied"] += int(keys[parent] is not None)
        if log:
            log(f"{timeline}: linked {int(scored.sum())} of {m} messages in {time.perf_counter() - start:.1f}s")
    out = table.set_column(table.schema.get_field_index("parent_ids"), "parent_ids", pa.array(parents, pa.list_(pa.int64())))
    out = out.set_column(out.schema.get_field_index("conversation_key"), "conversation_key", pa.array(keys, pa.string()))
    return out, counts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m thread_embed_pipeline.disentangle log.txt``: threads as JSON Lines on stdout."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m thread_embed_pipeline.disentangle", description="Split an IRC log ('[HH:MM] <nick> text' lines) into threads, as JSON Lines.")
    parser.add_argument("log", type=Path, help="the log file")
    parser.add_argument("--scorer", type=Path, help="a disentanglement asset's folder (default: data/disentanglement/fine_tuned)")
    parser.add_argument("--model", help="the embedding model (default: the one the scorer was trained with)")
    args = parser.parse_args(argv)
    from thread_embed_pipeline import storage
    from thread_embed_pipeline.evaluation.disentanglement import clusters_from_links

    folder = args.scorer or storage.data_dir() / "disentanglement" / "fine_tuned"
    try:
        scorer = DisentangleScorer.load(folder)
        logs = channel_logs(parse_irc_log(args.log.read_text(encoding="utf-8", errors="replace")))
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    embed = None
    if scorer.dims:
        from thread_embed_pipeline.evaluation.embedders import load_local_embedder

        spec = args.model or scorer.chosen.get("model")
        if not spec:
            parser.error("the scorer reads embeddings: pass --model")
        embed = load_local_embedder(spec, name="model", device="cpu").embed
    links = scorer.links(file_features(logs, embed, scorer.dims, window=scorer.window)["log"])
    for cluster in clusters_from_links(links, cutoff=0):
        rows = logs.iloc[sorted(cluster)]
        print(json.dumps({"lines": [int(x) + 1 for x in rows["line"]], "messages": [format_message(None if is_missing(s) else s, t or "") for s, t in zip(rows["speaker"], rows["text"])]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
