"""Score-level hybrid of BM25 and a dense model: a convex mix of per-pool standardised scores.

Within each query's candidate pool, the BM25 and the dense scores are z-scored
(:func:`standardise`) and mixed as ``w * z_dense + (1 - w) * z_bm25`` (:func:`convex_fuse`), so
``w`` is the dense share (1 = dense only, 0 = BM25 only). This is the convex combination of
normalised scores analysed by Bruch, Gai & Ingber, "An Analysis of Fusion Functions for Hybrid
Retrieval", ACM TOIS 42(1), 2023, who find it more effective than reciprocal-rank fusion and
sample-efficient to tune: a single weight needs only a small labelled set.

The weight is chosen on DEV queries only (never on test):

* :func:`tune_fusion` scores every dev query at every weight of ``WEIGHT_GRID`` (per-query
  MRR@10, pessimistic ties as in :mod:`.metrics`), then calls :func:`choose_fusion_weight`;
* :func:`choose_fusion_weight` decides between ONE global weight (maximising the mean over all
  dev queries pooled, each query counted once) and one weight per (eval_set, source, task) set
  (the same (source, task) under two eval protocols are two sets), by 2-fold
  cross-validation over the dev queries (folds stratified per set by a seeded permutation):
  each scope picks its weights on one fold and is scored on the other. Per-set weights win only
  when their mean held-out MRR@10 beats the global weight's by more than one standard error of the
  per-query gain (the one-standard-error rule of Breiman et al., *Classification and Regression
  Trees*, 1984): with 80–100 dev queries a set, per-set weights are noisy, and a gain smaller than
  its own standard error is noise. The winner is refit on all dev queries. Ties between grid
  weights go to the one closest to 0.5, then to the smaller.

Pure numpy/pandas and deterministic for a given ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from thread_embed_pipeline.evaluation.pools import RetrievalSet

__all__ = [
    "WEIGHT_GRID",
    "FUSION_COLUMNS",
    "GRID_METRIC_COLUMNS",
    "FusionChoice",
    "standardise",
    "convex_fuse",
    "grid_mrr10",
    "choose_fusion_weight",
    "tune_fusion",
]

WEIGHT_GRID: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(21))
GRID_METRIC_COLUMNS: tuple[str, ...] = ("eval_set", "source", "task", "record_id", "weight", "mrr@10")
FUSION_COLUMNS: tuple[str, ...] = (
    "model",
    "dim",
    "scope",
    "eval_set",
    "source",
    "task",
    "weight",
    "dev_mrr10_global",
    "dev_mrr10_per_set",
    "n_dev_queries",
    "global_weight",
    "on_dev",
)
SCOPES: tuple[str, ...] = ("global", "per_set")
_TOL = 1e-12
_CUTOFF = 10


def standardise(scores: np.ndarray) -> np.ndarray:
    """z-scores of one query's pool (float64): mean 0, std 1 (population std).

    NaN is treated as the pool's minimum (a missing score is the worst observed one); a
    constant (or all-NaN) pool gives zeros.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        return s.copy()
    nan = np.isnan(s)
    if nan.all():
        return np.zeros_like(s)
    if nan.any():
        s = np.where(nan, np.min(s[~nan]), s)
    if np.ptp(s) == 0.0:
        return np.zeros_like(s)
    std = s.std()
    if not np.isfinite(std) or std == 0.0:
        return np.zeros_like(s)
    return (s - s.mean()) / std


def _check_weight(weight: float) -> float:
    w = float(weight)
    if not 0.0 <= w <= 1.0:  # also rejects NaN
        raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
    return w


def convex_fuse(bm25: np.ndarray, dense: np.ndarray, weight: float) -> np.ndarray:
    """``weight * standardise(dense) + (1 - weight) * standardise(bm25)`` over one query's pool.

    ``weight`` is the dense share, in [0, 1] (``ValueError`` otherwise): 1 = dense only,
    0 = BM25 only.
    """
    w = _check_weight(weight)
    zb, zd = standardise(bm25), standardise(dense)
    if zb.shape != zd.shape:
        raise ValueError(f"score vectors to fuse differ in length ({zb.size} vs {zd.size})")
    return w * zd + (1.0 - w) * zb


@dataclass(frozen=True)
class FusionChoice:
    """The fusion weights chosen on dev for one dense model at one dim.

    ``weights`` maps (eval_set, source, task) -> dense share for every dev set (all equal to
    ``global_weight`` when ``scope == "global"``); ``global_weight`` is the single best weight on
    all dev queries pooled, used for a set not seen on dev. ``dev_mrr10_global`` /
    ``dev_mrr10_per_set``: mean held-out MRR@10 of the two scopes under 2-fold CV over the dev
    queries (NaN with fewer than 2 dev queries, when CV is impossible and global is used).
    """

    model: str
    dim: int
    scope: str
    weights: dict[tuple[str, str, str], float]
    global_weight: float
    dev_mrr10_global: float
    dev_mrr10_per_set: float
    n_dev_queries: int
    seed: int = 0
    grid: tuple[float, ...] = field(default=WEIGHT_GRID)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        _check_weight(self.global_weight)
        for w in self.weights.values():
            _check_weight(w)

    def weight_for(self, eval_set: str, source: str, task: str) -> float:
        """The weight for one (eval_set, source, task) set; the global weight for a set not seen on dev."""
        return float(self.weights.get((str(eval_set), str(source), str(task)), self.global_weight))

    def to_frame(self, extra_sets: Sequence[tuple[str, str, str]] = ()) -> pd.DataFrame:
        """``FUSION_COLUMNS`` rows: one per dev set, plus one per (eval_set, source, task) of
        ``extra_sets`` not on dev (at :meth:`weight_for`, i.e. the global weight; ``on_dev`` False)."""
        keys = list(dict.fromkeys([*sorted(self.weights), *((str(e), str(s), str(t)) for e, s, t in extra_sets)]))
        rows = [
            (self.model, int(self.dim), self.scope, e, s, t, self.weight_for(e, s, t), self.dev_mrr10_global,
             self.dev_mrr10_per_set, int(self.n_dev_queries), float(self.global_weight), (e, s, t) in self.weights)
            for e, s, t in keys
        ]
        return pd.DataFrame(rows, columns=list(FUSION_COLUMNS))


# ---------------------------------------------------------------------------------------------
# choosing the weight from per-query grid metrics


def _best_weight(means: np.ndarray, grid: np.ndarray) -> float:
    """argmax of ``means`` over ``grid``; ties (within 1e-12) -> closest to 0.5, then smaller."""
    top = means.max()
    cands = np.flatnonzero(means >= top - _TOL)
    return float(min(grid[cands], key=lambda w: (round(abs(float(w) - 0.5), 9), float(w))))


def _pick(matrix: np.ndarray, rows: np.ndarray, grid: np.ndarray) -> float | None:
    if rows.size == 0:
        return None
    return _best_weight(matrix[rows].mean(axis=0), grid)


def _folds(set_index: np.ndarray, query_keys: Sequence[tuple], n_sets: int, seed: int) -> np.ndarray:
    """Fold (0/1) per query: within each set a seeded permutation of its queries (sorted by key)
    alternates folds, continuing the alternation across sets so both folds get queries."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(set_index), dtype=np.int64)
    offset = 0
    for k in range(n_sets):
        members = np.flatnonzero(set_index == k)
        members = np.asarray(sorted(members.tolist(), key=lambda i: query_keys[i]), dtype=np.int64)
        perm = members[rng.permutation(members.size)]
        fold[perm] = (offset + np.arange(perm.size)) % 2
        offset += perm.size
    return fold


def choose_fusion_weight(
    grid_metrics: pd.DataFrame,
    *,
    model: str,
    dim: int,
    seed: int = 0,
) -> FusionChoice:
    """Choose global vs per-(eval_set, source, task) weights by 2-fold CV over dev queries; refit the winner.

    ``grid_metrics``: columns ``eval_set, source, task, record_id, weight, mrr@10``
    (``GRID_METRIC_COLUMNS``), one row per dev query per grid weight; every query must have every
    weight. A frame without ``eval_set`` is taken as one with ``eval_set == ""`` everywhere. See
    the module docstring.
    """
    if "eval_set" not in grid_metrics.columns:
        grid_metrics = grid_metrics.assign(eval_set="")
    missing = [c for c in GRID_METRIC_COLUMNS if c not in grid_metrics.columns]
    if missing:
        raise ValueError(f"grid metrics are missing columns {missing}")
    if grid_metrics.empty:
        raise ValueError("no dev queries to choose a fusion weight on")
    qcols = ["eval_set", "source", "task", "record_id"]
    gm = grid_metrics.assign(**{c: grid_metrics[c].astype(str) for c in qcols})
    gm = gm.assign(weight=gm["weight"].astype(np.float64))
    if gm.duplicated([*qcols, "weight"]).any():
        raise ValueError("grid metrics have several rows for one (query, weight)")
    wide = gm.pivot(index=qcols, columns="weight", values="mrr@10").sort_index().sort_index(axis=1)
    if wide.isna().to_numpy().any():
        raise ValueError("grid metrics do not cover every weight for every query")
    grid = wide.columns.to_numpy(dtype=np.float64)
    for w in grid:
        _check_weight(w)
    matrix = wide.to_numpy(dtype=np.float64)
    query_keys = list(wide.index) if isinstance(wide.index, pd.MultiIndex) else [(k,) for k in wide.index]
    index = wide.index.to_frame(index=False)
    set_cols = [index["eval_set"], index["source"], index["task"]]
    set_keys = sorted(set(zip(*set_cols)))
    set_of = {k: i for i, k in enumerate(set_keys)}
    set_index = np.array([set_of[k] for k in zip(*set_cols)], dtype=np.int64)
    n = matrix.shape[0]
    all_rows = np.arange(n)

    def fit(rows: np.ndarray) -> tuple[float, dict[int, float]]:
        g = _pick(matrix, rows, grid)
        per = {}
        for k in range(len(set_keys)):
            w = _pick(matrix, rows[set_index[rows] == k], grid)
            if w is not None:
                per[k] = w
        return g, per

    col_of = {float(w): j for j, w in enumerate(grid)}
    cv = {"global": float("nan"), "per_set": float("nan")}
    if n >= 2:
        fold = _folds(set_index, query_keys, len(set_keys), seed)
        held = {"global": np.zeros(n), "per_set": np.zeros(n)}
        for f in (0, 1):
            train, test = all_rows[fold != f], all_rows[fold == f]
            g, per = fit(train)
            held["global"][test] = matrix[test, col_of[g]]
            cols = np.array([col_of[per.get(int(k), g)] for k in set_index[test]], dtype=np.int64)
            held["per_set"][test] = matrix[test, cols]
        cv = {scope: float(v.mean()) for scope, v in held.items()}
        gain = held["per_set"] - held["global"]
        # one-standard-error rule: the per-set scope must beat the global one by more than the
        # standard error of its held-out gain, else the simpler scope wins
        gain_se = float(gain.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    scope = "per_set" if n >= 2 and cv["per_set"] - cv["global"] > max(gain_se, _TOL) else "global"
    g, per = fit(all_rows)
    weights = {key: (per[k] if scope == "per_set" else g) for k, key in enumerate(set_keys)}
    return FusionChoice(
        model=str(model),
        dim=int(dim),
        scope=scope,
        weights=weights,
        global_weight=g,
        dev_mrr10_global=cv["global"],
        dev_mrr10_per_set=cv["per_set"],
        n_dev_queries=int(n),
        seed=int(seed),
        grid=tuple(float(w) for w in grid),
    )


# ---------------------------------------------------------------------------------------------
# per-query MRR@10 over the grid, from pool scores


def grid_mrr10(bm25: np.ndarray, dense: np.ndarray, relevant: np.ndarray, grid: Sequence[float] = WEIGHT_GRID) -> np.ndarray:
    """MRR@10 of one query at every grid weight (vectorised; same scores and pessimistic ties as
    ``query_metrics(convex_fuse(bm25, dense, w), relevant)``)."""
    zb, zd = standardise(bm25), standardise(dense)
    rel = np.asarray(relevant, dtype=bool).ravel()
    if zb.shape != zd.shape or zb.shape != rel.shape:
        raise ValueError("bm25 scores, dense scores and relevant mask differ in length")
    w = np.asarray([_check_weight(x) for x in grid], dtype=np.float64)[:, None]
    if not rel.any():
        return np.zeros(w.shape[0])
    fused = w * zd[None, :] + (1.0 - w) * zb[None, :]  # same float ops as convex_fuse
    best_rel = fused[:, rel].max(axis=1, keepdims=True)
    # pessimistic: every non-relevant candidate tied with (or above) the best relevant one ranks above it
    rank = 1 + np.count_nonzero(fused[:, ~rel] >= best_rel, axis=1)
    return np.where(rank <= _CUTOFF, 1.0 / rank, 0.0)


def _per_set(scores, sets: Sequence[RetrievalSet], what: str) -> list[Sequence[np.ndarray]]:
    if isinstance(scores, Mapping):
        missing = [rs.key for rs in sets if rs.key not in scores]
        if missing:
            raise ValueError(f"{what} scores are missing sets {missing[:3]}")
        return [scores[rs.key] for rs in sets]
    scores = list(scores)
    if len(scores) != len(sets):
        raise ValueError(f"{len(scores)} {what} score lists for {len(sets)} dev sets")
    return scores


def tune_fusion(
    dev_sets: Sequence[RetrievalSet],
    bm25_scores,
    dense_scores,
    *,
    model: str,
    dim: int,
    grid: Sequence[float] = WEIGHT_GRID,
    seed: int = 0,
) -> tuple[FusionChoice, pd.DataFrame]:
    """Tune the fusion weight of ``model`` at ``dim`` on ``dev_sets``.

    ``bm25_scores`` / ``dense_scores``: per dev set, the per-query pool scores (as from
    :func:`retrieval.pool_scores`), either a mapping keyed by :attr:`RetrievalSet.key` or a
    sequence aligned with ``dev_sets``. Returns the :class:`FusionChoice` and the grid metrics
    frame (``GRID_METRIC_COLUMNS``, one row per dev query per weight); sets are told apart by
    (eval_set, source, task), so one (source, task) under two eval protocols gets two weights.
    """
    grid = tuple(_check_weight(w) for w in grid)
    if not grid or len(set(grid)) != len(grid):
        raise ValueError(f"grid must be distinct weights in [0, 1], got {grid}")
    bm = _per_set(bm25_scores, dev_sets, "bm25")
    de = _per_set(dense_scores, dev_sets, "dense")
    blocks, meta = [], []
    for rs, b_set, d_set in zip(dev_sets, bm, de):
        if len(b_set) != len(rs.query_ids) or len(d_set) != len(rs.query_ids):
            raise ValueError(f"score lists of {rs.key} do not match its {len(rs.query_ids)} queries")
        for qid, b, d, rel in zip(rs.query_ids, b_set, d_set, rs.relevant):
            blocks.append(grid_mrr10(b, d, rel, grid))
            meta.append((rs.eval_set, rs.source, rs.task, qid))
    if not blocks:
        raise ValueError("no dev queries to tune the fusion weight on")
    n_w = len(grid)
    meta_arr = np.asarray(meta, dtype=object)
    frame = pd.DataFrame(
        {
            "eval_set": np.repeat(meta_arr[:, 0], n_w),
            "source": np.repeat(meta_arr[:, 1], n_w),
            "task": np.repeat(meta_arr[:, 2], n_w),
            "record_id": np.repeat(meta_arr[:, 3], n_w),
            "weight": np.tile(np.asarray(grid, dtype=np.float64), len(blocks)),
            "mrr@10": np.concatenate(blocks),
        }
    )
    return choose_fusion_weight(frame, model=model, dim=dim, seed=seed), frame


@dataclass(frozen=True)
class FusionByEvalSet:
    """One :class:`FusionChoice` per eval set (protocol) for one model at one dim.

    Protocols are different texts (pseudonymised or not), so each chooses its own weights, and
    its "global" weight is global within that protocol. A set of an eval set not tuned on dev
    (an external set) uses ``fallback``'s global weight.
    """

    by_eval_set: dict[str, FusionChoice]
    fallback: str

    def __post_init__(self) -> None:
        if self.fallback not in self.by_eval_set:
            raise ValueError(f"fallback {self.fallback!r} is not among the tuned eval sets {sorted(self.by_eval_set)}")

    def weight_for(self, eval_set: str, source: str, task: str) -> float:
        choice = self.by_eval_set.get(str(eval_set))
        if choice is None:
            return self.by_eval_set[self.fallback].global_weight
        return choice.weight_for(eval_set, source, task)

    def to_frame(self, extra_sets: Sequence[tuple[str, str, str]] = ()) -> pd.DataFrame:
        """``FUSION_COLUMNS`` rows of every eval set's choice; ``extra_sets`` of an untuned eval set are
        listed under the fallback's choice (at its global weight, ``on_dev`` False)."""
        frames = []
        for eval_set, choice in sorted(self.by_eval_set.items()):
            extra = [k for k in extra_sets if k[0] == eval_set or (k[0] not in self.by_eval_set and eval_set == self.fallback)]
            frame = choice.to_frame(extra_sets=extra)
            frames.append(frame[(frame["eval_set"] == eval_set) | ~frame["on_dev"]])
        return pd.concat(frames, ignore_index=True)


def tune_fusion_per_eval_set(
    dev_sets: Sequence[RetrievalSet],
    bm25_scores,
    dense_scores,
    *,
    model: str,
    dim: int,
    fallback: str,
    grid: Sequence[float] = WEIGHT_GRID,
    seed: int = 0,
) -> FusionByEvalSet:
    """:func:`tune_fusion` separately on the dev sets of each eval set (protocol)."""
    bm = dict(zip([rs.key for rs in dev_sets], _per_set(bm25_scores, dev_sets, "bm25")))
    de = dict(zip([rs.key for rs in dev_sets], _per_set(dense_scores, dev_sets, "dense")))
    choices = {}
    for eval_set in sorted({rs.eval_set for rs in dev_sets}):
        sets = [rs for rs in dev_sets if rs.eval_set == eval_set]
        choices[eval_set], _ = tune_fusion(sets, [bm[rs.key] for rs in sets], [de[rs.key] for rs in sets], model=model, dim=dim, grid=grid, seed=seed)
    return FusionByEvalSet(choices, fallback if fallback in choices else sorted(choices)[0])


def recommended_hybrid(fusion: pd.DataFrame, *, eval_set: str) -> dict | None:
    """The hybrid to recommend, chosen on dev only: among the ``hybrid:`` models at their full dim,
    the one whose chosen scope has the best held-out dev MRR@10 on ``eval_set`` (each weight grid
    includes 0 = BM25 only and 1 = dense only). Returns its dense model, dim, scope, the weight for
    users' own texts (the global weight on ``eval_set``) and that dev score; None without rows."""
    rows = fusion[(fusion["eval_set"] == eval_set) & fusion["on_dev"].astype(bool)] if not fusion.empty else fusion
    if rows.empty:
        return None
    rows = rows[rows["dim"] == rows.groupby("model")["dim"].transform("max")]
    best = None
    for model, g in rows.groupby("model", sort=True):
        first = g.iloc[0]
        score = float(first["dev_mrr10_per_set"] if first["scope"] == "per_set" else first["dev_mrr10_global"])
        if best is None or score > best["dev_mrr10"] + _TOL:
            best = {"dense_model": str(model), "dim": int(first["dim"]), "scope": str(first["scope"]), "weight": float(first["global_weight"]), "dev_mrr10": score}
    return best
