"""Conversation-disentanglement metrics, as Kummerfeld et al. (ACL 2019) define and score them.

The upstream scripts are ``tools/evaluation/graph-eval.py`` (links) and
``tools/evaluation/conversation-eval.py`` (conversations), with the clusters made by
``tools/format_conversion/graph_to_cluster.py``. Their definitions, kept here:

* **Links.** A file's links are ``(source, target)`` line pairs, ``source`` being the later line
  (``(s, s)``: ``s`` starts a conversation). Precision = matched / predicted links, recall = matched /
  gold links, pooled over every file; F is their harmonic mean.
* **Conversations.** The connected components of a file's links (union-find over every line a link
  names, context lines included), each cut to the scored lines: those at or after the file's first
  annotated line (the first 1,000 lines of an upstream file are context and are not scored).
* **Scaled 1−VI.** ``1 − VI / log2(n)`` with ``VI = H(U, V) − I(U; V)`` in bits over all scored
  messages of all files (clusters never span files), n their number.
* **One-to-one.** Conversations paired one to one by maximum total overlap
  (``scipy.optimize.linear_sum_assignment``), overlap / n.
* **Exact match.** Precision / recall / F over conversations whose message set is reproduced exactly,
  leaving out one-message conversations on both sides.

ARI and AMI (``sklearn.metrics``; AMI with ``average_method="max"`` as upstream) are reported too.
Everything takes plain Python: per file, a list of ``(source, target)`` links.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

Links = Mapping[str, Iterable[tuple[int, int]]]  # file -> (source, target) pairs

METRICS: tuple[str, ...] = ("link_p", "link_r", "link_f", "one_minus_vi", "one_to_one", "exact_p", "exact_r", "exact_f", "ari", "ami")

__all__ = ["METRICS", "clusters_from_links", "disentanglement_metrics", "file_bootstrap", "file_statistics", "links_to_annotation", "metrics_from_statistics", "normalise_links", "paired_file_bootstrap", "parse_annotation", "prf"]


def normalise_links(links: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """Every link as (later line, earlier line), as ``graph-eval.py`` reads them."""
    out = set()
    for a, b in links:
        a, b = int(a), int(b)
        out.add((max(a, b), min(a, b)))
    return out


def clusters_from_links(links: Iterable[tuple[int, int]], cutoff: int | None = None) -> list[frozenset[int]]:
    """Connected components of the links (union-find), each cut to lines ``>= cutoff`` (default: the
    smallest link source, i.e. the first scored line); empty clusters are dropped."""
    links = normalise_links(links)
    if not links:
        return []
    cutoff = min(s for s, _ in links) if cutoff is None else int(cutoff)
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s, t in links:
        rs, rt = find(s), find(t)
        if rs != rt:
            parent[rs] = rt
    groups: dict[int, set[int]] = {}
    for node in list(parent):
        if node >= cutoff:
            groups.setdefault(find(node), set()).add(node)
    return sorted((frozenset(g) for g in groups.values()), key=min)


def prf(matched: int, predicted: int, gold: int) -> tuple[float, float, float]:
    p = matched / predicted if predicted else 0.0
    r = matched / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if matched else 0.0)


def _file_clusters(gold: set, auto: set) -> tuple[list[frozenset[int]], list[frozenset[int]]]:
    """A file's gold and predicted conversations, both cut to its scored lines (from the first gold source)."""
    cutoff = min(src for src, _ in gold)
    return clusters_from_links(gold, cutoff), clusters_from_links(auto, cutoff)


def _file_labels(gold_c: list[frozenset[int]], auto_c: list[frozenset[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per scored message (gold's), its gold and predicted cluster number; a message the prediction
    leaves out is its own cluster."""
    where = {m: k for k, cluster in enumerate(auto_c) for m in cluster}
    g_lab, a_lab, extra = [], [], len(auto_c)
    for k, cluster in enumerate(gold_c):
        for m in sorted(cluster):
            g_lab.append(k)
            if m not in where:
                where[m], extra = extra, extra + 1
            a_lab.append(where[m])
    return np.asarray(g_lab), np.asarray(a_lab)


STATISTICS: tuple[str, ...] = (
    "links_matched", "links_predicted", "links_gold", "messages", "cells_nlogn", "gold_nlogn", "auto_nlogn",
    "one_to_one_overlap", "cells_pairs", "gold_pairs", "auto_pairs", "exact_matched", "exact_predicted", "exact_gold",
)


def file_statistics(gold_links: Links, auto_links: Links) -> pd.DataFrame:
    """One row per file of ``gold_links`` with the additive counts every metric but AMI is computed
    from (:data:`STATISTICS`). Conversations never span files, so the contingency table of all files
    is block-diagonal: its entropies, pair counts and maximum matching are sums over files, and a
    bootstrap over files only re-adds rows."""
    return _statistics_and_labels(gold_links, auto_links)[0].reset_index(drop=True)


def _statistics_and_labels(gold_links: Links, auto_links: Links) -> tuple[pd.DataFrame, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """:func:`file_statistics` and each file's message labels (:func:`_file_labels`, for AMI), from
    one pass over the files' clusters."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.cluster import contingency_matrix

    missing = [f for f in gold_links if f not in auto_links]
    if missing:
        raise ValueError(f"no predicted links for {len(missing)} gold files, e.g. {missing[:3]}")

    def nlogn(v: np.ndarray) -> float:
        v = v[v > 0].astype(np.float64)
        return float((v * np.log2(v)).sum())

    def pairs(v: np.ndarray) -> float:
        v = v.astype(np.float64)
        return float((v * (v - 1) / 2).sum())

    rows, labels = [], {}
    for f in gold_links:
        gold, auto = normalise_links(gold_links[f]), normalise_links(auto_links[f])
        row = dict.fromkeys(STATISTICS, 0.0) | {"file": f, "links_matched": len(gold & auto), "links_predicted": len(auto), "links_gold": len(gold)}
        if gold:
            gold_c, auto_c = _file_clusters(gold, auto)
            g, a = labels[f] = _file_labels(gold_c, auto_c)
            table = contingency_matrix(g, a, sparse=False)
            r, c = linear_sum_assignment(table, maximize=True)
            gm, am = {x for x in gold_c if len(x) > 1}, {x for x in auto_c if len(x) > 1}
            row |= {
                "messages": len(g), "cells_nlogn": nlogn(table.ravel()), "gold_nlogn": nlogn(table.sum(1)), "auto_nlogn": nlogn(table.sum(0)),
                "one_to_one_overlap": float(table[r, c].sum()), "cells_pairs": pairs(table.ravel()), "gold_pairs": pairs(table.sum(1)),
                "auto_pairs": pairs(table.sum(0)), "exact_matched": len(gm & am), "exact_predicted": len(am), "exact_gold": len(gm),
            }
        rows.append(row)
    return pd.DataFrame(rows, columns=["file", *STATISTICS]).set_index(pd.Index([r["file"] for r in rows], name=None)), labels


def _pooled_ami(labels: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """AMI (``average_method="max"``, as upstream) over the messages of several files, each file's
    clusters its own (a file drawn twice: two copies)."""
    from sklearn.metrics import adjusted_mutual_info_score

    g_all, a_all, g_off, a_off = [], [], 0, 0
    for g, a in labels:
        g_all.append(g + g_off)
        a_all.append(a + a_off)
        g_off, a_off = g_off + int(g.max()) + 1, a_off + int(a.max()) + 1
    return float(adjusted_mutual_info_score(np.concatenate(g_all), np.concatenate(a_all), average_method="max")) if g_all else 1.0


def metrics_from_statistics(stats: pd.DataFrame) -> dict[str, float]:
    """Every metric of :data:`METRICS` but AMI from :func:`file_statistics` rows (a row drawn twice
    counts twice)."""
    t = stats[list(STATISTICS)].sum()
    link_p, link_r, link_f = prf(int(t["links_matched"]), int(t["links_predicted"]), int(t["links_gold"]))
    exact_p, exact_r, exact_f = prf(int(t["exact_matched"]), int(t["exact_predicted"]), int(t["exact_gold"]))
    n = float(t["messages"])
    log_n = np.log2(n) if n > 1 else 0.0
    h_joint, h_gold, h_auto = (log_n - t[k] / n if n else 0.0 for k in ("cells_nlogn", "gold_nlogn", "auto_nlogn"))
    vi = 2 * h_joint - h_gold - h_auto  # H(U,V) - I(U;V), in bits
    n_pairs = n * (n - 1) / 2
    expected = t["gold_pairs"] * t["auto_pairs"] / n_pairs if n_pairs else 0.0
    mean = (t["gold_pairs"] + t["auto_pairs"]) / 2
    return {
        "link_p": link_p, "link_r": link_r, "link_f": link_f,
        "one_minus_vi": float(1.0 - vi / log_n) if n > 1 else 1.0, "one_to_one": float(t["one_to_one_overlap"] / n) if n else 0.0,
        "exact_p": exact_p, "exact_r": exact_r, "exact_f": exact_f,
        "ari": float((t["cells_pairs"] - expected) / (mean - expected)) if mean != expected else 1.0,
        "files": len(stats), "messages": int(n), "gold_links": int(t["links_gold"]), "gold_conversations": int(t["exact_gold"]),
    }


def disentanglement_metrics(gold_links: Links, auto_links: Links) -> dict[str, float]:
    """All of :data:`METRICS` (fractions in [0, 1]) for the files of ``gold_links``, plus counts."""
    stats, labels = _statistics_and_labels(gold_links, auto_links)
    return metrics_from_statistics(stats) | {"ami": _pooled_ami(labels.values())}


def file_bootstrap(gold_links: Links, auto_links: Links, *, n_resamples: int = 200, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each metric on all files with a percentile-bootstrap CI over files (resampled with
    replacement; a file drawn twice counts twice): columns ``metric, value, ci_low, ci_high, n_files``.
    Each resample re-adds the files' :func:`file_statistics` (and pools their labels for AMI)."""
    files = sorted(gold_links)
    stats, labels = _statistics_and_labels(gold_links, auto_links)
    point = metrics_from_statistics(stats) | {"ami": _pooled_ami(labels.values())}
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in METRICS}
    for _ in range(n_resamples):
        pick = [files[k] for k in rng.integers(0, len(files), len(files))]
        values = metrics_from_statistics(stats.loc[pick]) | {"ami": _pooled_ami(labels[f] for f in pick if f in labels)}
        for m in METRICS:
            draws[m].append(values[m])
    alpha = (1 - confidence) / 2
    return pd.DataFrame(
        [{"metric": m, "value": point[m], "ci_low": float(np.quantile(draws[m], alpha)), "ci_high": float(np.quantile(draws[m], 1 - alpha)), "n_files": len(files)} for m in METRICS]
    )


def paired_file_bootstrap(gold_links: Links, links_a: Links, links_b: Links, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """System A minus system B on the same files, each metric but AMI with a paired percentile-bootstrap
    CI over files (the same resampled files score both; :func:`file_statistics`, so a resample is a sum)
    and ``p_value``: the two-sided bootstrap p of no difference (twice the smaller share of resamples
    on either side of 0). Columns ``metric, a, b, delta, ci_low, ci_high, p_value, ci_excludes_0, n_files``."""
    files = sorted(gold_links)
    stats_a = _statistics_and_labels(gold_links, links_a)[0].loc[files]
    stats_b = _statistics_and_labels(gold_links, links_b)[0].loc[files]
    names = [m for m in METRICS if m != "ami"]
    point_a, point_b = metrics_from_statistics(stats_a), metrics_from_statistics(stats_b)
    rng = np.random.default_rng(seed)
    deltas = {m: [] for m in names}
    for _ in range(n_resamples):
        pick = rng.integers(0, len(files), len(files))
        a, b = metrics_from_statistics(stats_a.iloc[pick]), metrics_from_statistics(stats_b.iloc[pick])
        for m in names:
            deltas[m].append(a[m] - b[m])
    alpha = (1 - confidence) / 2
    rows = []
    for m in names:
        d = np.asarray(deltas[m])
        low, high = float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))
        p = min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))
        rows.append({"metric": m, "a": point_a[m], "b": point_b[m], "delta": point_a[m] - point_b[m], "ci_low": low, "ci_high": high,
                     "p_value": float(p), "ci_excludes_0": bool(low > 0 or high < 0), "n_files": len(files)})
    return pd.DataFrame(rows)


def links_to_annotation(links: Iterable[tuple[int, int]]) -> str:
    """The upstream annotation format: one ``A B -`` line per link (``A`` the earlier line), sorted."""
    return "".join(f"{t} {s} -\n" for s, t in sorted(normalise_links(links), key=lambda x: (x[0], x[1])))


def parse_annotation(text: str) -> set[tuple[int, int]]:
    """``A B -`` lines back to (source, target) links."""
    out = set()
    for line in text.splitlines():
        nums = [int(v) for v in line.split() if v != "-"]
        if nums:
            source = max(nums)
            rest = [v for v in nums if v != source] or [source]
            out.update((source, t) for t in rest)
    return out

