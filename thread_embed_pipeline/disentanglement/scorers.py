"""Link scorers over the candidate features: scikit-learn pipelines (logistic regression, an MLP) and
:class:`ListwiseMLP` (a softmax over each message's candidates), chosen on dev by link F, and greedy
in-order linking with the conversation-so-far feature.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from thread_embed_pipeline.disentanglement.features import CONVERSATION_FEATURE, WINDOW, Candidates, feature_names
from thread_embed_pipeline.schemas import Log


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
    from thread_embed_pipeline.disentanglement.metrics import disentanglement_metrics

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
