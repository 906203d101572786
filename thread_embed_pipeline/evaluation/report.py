"""Human-readable views of the long retrieval-results table (model, source, task, dim, metric, value, n)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thread_embed_pipeline.evaluation.metrics import METRIC_NAMES
from thread_embed_pipeline.evaluation.retrieval import BM25_MODEL_NAME, RESULT_COLUMNS
from thread_embed_pipeline.schemas import EVAL_TASKS, missing_columns

__all__ = ["markdown_leaderboard", "improvement_summary", "plot_matryoshka"]


def _check(results: pd.DataFrame) -> None:
    missing = missing_columns(results.columns, RESULT_COLUMNS)
    if missing:
        raise ValueError(f"results are missing columns {missing}")


def _model_order(results: pd.DataFrame) -> list[str]:
    """Models in first-appearance order, BM25 last."""
    models = list(dict.fromkeys(results["model"].tolist()))
    return [m for m in models if m != BM25_MODEL_NAME] + [m for m in models if m == BM25_MODEL_NAME]


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def markdown_leaderboard(results: pd.DataFrame) -> str:
    """One Markdown table per task; rows = source x model x dim (grouped by source), columns = metrics (3 decimals)."""
    _check(results)
    if results.empty:
        return "_No retrieval results._\n"
    metrics = [m for m in METRIC_NAMES if m in set(results["metric"])]
    metrics += sorted(set(results["metric"]) - set(metrics))
    wide = results.pivot_table(
        index=["task", "source", "model", "dim"], columns="metric", values="value", aggfunc="first"
    )
    n = results.groupby(["task", "source", "model", "dim"])["n"].max()
    model_rank = {m: i for i, m in enumerate(_model_order(results))}
    out: list[str] = []
    present = list(dict.fromkeys(results["task"].tolist()))
    for task in [t for t in EVAL_TASKS if t in present] + [t for t in present if t not in EVAL_TASKS]:
        out.append(f"### Task: {task}\n")
        header = ["source", "model", "dim", *metrics, "n"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] * 3 + ["---:"] * (len(metrics) + 1)) + "|")
        keys = [k for k in wide.index if k[0] == task]
        keys.sort(key=lambda k: (k[1], model_rank.get(k[2], 0), -k[3]))
        for key in keys:
            _, source, model, dim = key
            vals = [_fmt(wide.loc[key].get(m, np.nan)) for m in metrics]
            out.append("| " + " | ".join([str(source), str(model), str(dim), *vals, str(int(n.loc[key]))]) + " |")
        out.append("")
    return "\n".join(out)


def improvement_summary(
    results: pd.DataFrame,
    base: str = "base",
    tuned: str = "fine_tuned",
    task: str = "thread",
    source: str | None = None,
    metric: str = "mrr@10",
) -> pd.DataFrame:
    """Per dim: base, tuned, delta (= tuned - base) and bm25 values of ``metric`` (default MRR@10).

    ``source=None`` pools all sources of the task, weighting each source by its number of
    queries (a micro-average over queries). Missing models give NaN columns.
    Columns: source, task, dim, base, tuned, delta, bm25.
    """
    _check(results)
    sel = results[(results["task"] == task) & (results["metric"] == metric)]
    if source is not None:
        sel = sel[sel["source"] == source]

    def per_dim(model: str) -> pd.Series:
        g = sel[sel["model"] == model]
        if g.empty:
            return pd.Series(dtype=float)
        weighted = (g["value"] * g["n"]).groupby(g["dim"]).sum() / g.groupby("dim")["n"].sum()
        return weighted.astype(float)

    b, t, bm = per_dim(base), per_dim(tuned), per_dim(BM25_MODEL_NAME)
    dims = sorted(set(b.index) | set(t.index), reverse=True)
    out = pd.DataFrame(
        {
            "source": source if source is not None else "all",
            "task": task,
            "dim": [int(d) for d in dims],
            "base": [b.get(d, np.nan) for d in dims],
            "tuned": [t.get(d, np.nan) for d in dims],
            "bm25": [bm.get(d, np.nan) for d in dims],
        }
    )
    out["delta"] = out["tuned"] - out["base"]
    return out[["source", "task", "dim", "base", "tuned", "delta", "bm25"]]


def plot_matryoshka(results: pd.DataFrame, path: str | Path, metric: str = "mrr@10") -> Path:
    """PNG of ``metric`` vs dim, one line per model, one subplot per (source, task). Returns the path."""
    # Explicit Agg canvas on a bare Figure: no pyplot global state, safe in worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    _check(results)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sel = results[results["metric"] == metric]
    panels = sorted(set(zip(sel["source"], sel["task"])))
    n_panels = max(1, len(panels))
    ncols = min(2, n_panels)
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(5.5 * ncols, 4 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no results", ha="center", va="center")
        axes[0][0].set_axis_off()
    all_dims = sorted(set(sel["dim"].astype(int)))
    for ax, (source, task) in zip(axes.flat, panels):
        g = sel[(sel["source"] == source) & (sel["task"] == task)]
        for model in _model_order(g):
            m = g[g["model"] == model].sort_values("dim")
            style = {"linestyle": "--", "color": "gray"} if model == BM25_MODEL_NAME else {"marker": "o"}
            ax.plot(m["dim"].astype(int), m["value"], label=model, **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_dims)
        ax.set_xticklabels([str(d) for d in all_dims])
        ax.set_xlabel("embedding dim (Matryoshka truncation)")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
        ax.set_title(f"{source} / {task}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        if panels:
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    return path
