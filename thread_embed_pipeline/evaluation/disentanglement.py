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

__all__ = ["METRICS", "clusters_from_links", "disentanglement_metrics", "file_bootstrap", "links_to_annotation", "paired_file_bootstrap", "normalise_links", "parse_annotation", "prf"]


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


def _labels(gold: Mapping[str, list[frozenset[int]]], auto: Mapping[str, list[frozenset[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Per scored message (gold's), its gold and predicted cluster number; a message the prediction
    leaves out is its own cluster."""
    g_lab, a_lab, next_auto = [], [], 0
    for offset, file in enumerate(sorted(gold)):
        where = {}
        for k, cluster in enumerate(auto.get(file, [])):
            for m in cluster:
                where[m] = next_auto + k
        next_auto += len(auto.get(file, []))
        for k, cluster in enumerate(gold[file]):
            for m in sorted(cluster):
                g_lab.append(f"{file}/{k}")
                if m not in where:
                    where[m] = next_auto
                    next_auto += 1
                a_lab.append(where[m])
    return pd.factorize(np.array(g_lab, dtype=object))[0], np.asarray(a_lab)


def disentanglement_metrics(gold_links: Links, auto_links: Links) -> dict[str, float]:
    """All of :data:`METRICS` (fractions in [0, 1]) for the files of ``gold_links``, plus counts."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, mutual_info_score
    from sklearn.metrics.cluster import contingency_matrix

    gold = {f: normalise_links(v) for f, v in gold_links.items()}
    auto = {f: normalise_links(auto_links.get(f, ())) for f in gold}
    missing = [f for f in gold if f not in auto_links]
    if missing:
        raise ValueError(f"no predicted links for {len(missing)} gold files, e.g. {missing[:3]}")
    matched = sum(len(gold[f] & auto[f]) for f in gold)
    link_p, link_r, link_f = prf(matched, sum(map(len, auto.values())), sum(map(len, gold.values())))

    cutoffs = {f: min(s for s, _ in gold[f]) for f in gold if gold[f]}
    gold_c = {f: clusters_from_links(gold[f], cutoffs[f]) for f in cutoffs}
    auto_c = {f: clusters_from_links(auto[f], cutoffs[f]) for f in cutoffs}
    g, a = _labels(gold_c, auto_c)
    n = len(g)
    table = contingency_matrix(g, a, sparse=False).astype(np.float64)
    # VI = H(U,V) - I(U;V) = H(U) + H(V) - 2 I(U;V), in bits
    p_joint = table[table > 0] / n
    h_joint = float(-(p_joint * np.log2(p_joint)).sum())
    mi = mutual_info_score(g, a) / np.log(2)
    one_minus_vi = 1.0 - (h_joint - mi) / np.log2(n) if n > 1 else 1.0
    rows, cols = linear_sum_assignment(table, maximize=True)
    one_to_one = float(table[rows, cols].sum() / n)

    def multi(clusters: Mapping[str, list[frozenset[int]]]) -> dict[str, set[frozenset[int]]]:
        return {f: {c for c in cs if len(c) > 1} for f, cs in clusters.items()}

    gm, am = multi(gold_c), multi(auto_c)
    exact = sum(len(gm[f] & am[f]) for f in gm)
    exact_p, exact_r, exact_f = prf(exact, sum(map(len, am.values())), sum(map(len, gm.values())))
    return {
        "link_p": link_p, "link_r": link_r, "link_f": link_f,
        "one_minus_vi": float(one_minus_vi), "one_to_one": one_to_one,
        "exact_p": exact_p, "exact_r": exact_r, "exact_f": exact_f,
        "ari": float(adjusted_rand_score(g, a)), "ami": float(adjusted_mutual_info_score(g, a, average_method="max")),
        "files": len(gold), "messages": n, "gold_links": sum(map(len, gold.values())),
        "gold_conversations": sum(map(len, gm.values())),
    }


def file_bootstrap(gold_links: Links, auto_links: Links, *, n_resamples: int = 200, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each metric on all files with a percentile-bootstrap CI over files (resampled with
    replacement; a file drawn twice counts twice): columns ``metric, value, ci_low, ci_high, n_files``."""
    files = sorted(gold_links)
    point = disentanglement_metrics(gold_links, auto_links)
    rng = np.random.default_rng(seed)
    draws = {m: [] for m in METRICS}
    for _ in range(n_resamples):
        pick = rng.integers(0, len(files), len(files))
        g = {f"{i}:{files[k]}": gold_links[files[k]] for i, k in enumerate(pick)}
        a = {f"{i}:{files[k]}": auto_links[files[k]] for i, k in enumerate(pick)}
        values = disentanglement_metrics(g, a)
        for m in METRICS:
            draws[m].append(values[m])
    alpha = (1 - confidence) / 2
    return pd.DataFrame(
        [{"metric": m, "value": point[m], "ci_low": float(np.quantile(draws[m], alpha)), "ci_high": float(np.quantile(draws[m], 1 - alpha)), "n_files": len(files)} for m in METRICS]
    )


def paired_file_bootstrap(gold_links: Links, links_a: Links, links_b: Links, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """System A minus system B on the same files, each metric with a paired percentile-bootstrap CI
    over files (the same resampled files score both) and ``p_value``: the two-sided bootstrap p of the
    difference being 0 (twice the smaller share of resamples on either side of 0). Columns ``metric,
    a, b, delta, ci_low, ci_high, p_value, ci_excludes_0, n_files``."""
    files = sorted(gold_links)
    point_a, point_b = disentanglement_metrics(gold_links, links_a), disentanglement_metrics(gold_links, links_b)
    rng = np.random.default_rng(seed)
    deltas = {m: [] for m in METRICS}
    for _ in range(n_resamples):
        pick = rng.integers(0, len(files), len(files))
        g = {f"{i}:{files[k]}": gold_links[files[k]] for i, k in enumerate(pick)}
        a = disentanglement_metrics(g, {f"{i}:{files[k]}": links_a[files[k]] for i, k in enumerate(pick)})
        b = disentanglement_metrics(g, {f"{i}:{files[k]}": links_b[files[k]] for i, k in enumerate(pick)})
        for m in METRICS:
            deltas[m].append(a[m] - b[m])
    alpha = (1 - confidence) / 2
    rows = []
    for m in METRICS:
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

