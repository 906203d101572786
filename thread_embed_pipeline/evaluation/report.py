"""Human-readable views of the retrieval results.

Inputs: the long results table of :func:`retrieval.summarize` (``RESULT_COLUMNS``: eval_set,
model, source, task, dim, metric, value, ci_low, ci_high, n) and the comparison table of
:func:`statistics.compare_models` (``COMPARISON_COLUMNS``). Plots use a bare matplotlib
``Figure`` with the Agg canvas (no pyplot global state; safe in worker threads).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from thread_embed_pipeline.evaluation.metrics import METRIC_NAMES
from thread_embed_pipeline.evaluation.precision import FLOAT_PRECISION, RESCORE_K, RESCORE_MULTIPLIER, precision_table, split_variant
from thread_embed_pipeline.evaluation.retrieval import BM25_MODEL_NAME, GROUP_KEYS, HYBRID_PREFIX, RESULT_COLUMNS, RRF_PREFIX
from thread_embed_pipeline.evaluation.statistics import COMPARISON_COLUMNS
from thread_embed_pipeline.schemas import EVAL_TASKS, OWN_EVAL_SET, missing_columns

__all__ = [
    "markdown_leaderboard",
    "comparison_markdown",
    "improvement_summary",
    "plot_matryoshka",
    "plot_eval_set_bars",
    "fusion_markdown",
    "precision_markdown",
    "report_markdown",
    "headline_frame",
    "compact_headline",
    "plot_loss_curve",
]


def _check(frame: pd.DataFrame, expected: Sequence[str], what: str = "results") -> None:
    missing = missing_columns(frame.columns, expected)
    if missing:
        raise ValueError(f"{what} are missing columns {missing}")


def _float_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of float32 models: quantised variants (``<model>@<precision>``) have their own table."""
    return results[[split_variant(m)[1] == FLOAT_PRECISION for m in results["model"]]] if not results.empty else results


def _model_order(models: Sequence[str]) -> list[str]:
    """First-appearance order with dense models first, then fusions (``hybrid:`` / ``rrf:``), then BM25."""
    models = list(dict.fromkeys(models))

    def kind(m: str) -> int:
        return 2 if m == BM25_MODEL_NAME else 1 if str(m).startswith((HYBRID_PREFIX, RRF_PREFIX)) else 0

    return sorted(models, key=lambda m: (kind(m), models.index(m)))


def _colors(models: Sequence[str]) -> dict[str, str]:
    """One fixed colour per model across every panel and plot (BM25 grey)."""
    palette = [f"C{i}" for i in range(10) if i != 7]  # C7 is grey
    dense = [m for m in _model_order(models) if m != BM25_MODEL_NAME]
    colors = {m: palette[i % len(palette)] for i, m in enumerate(dense)}
    colors[BM25_MODEL_NAME] = "gray"
    return colors


def _group_order(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(eval_set, source, task) keys: own sets first, then by name; tasks in ``EVAL_TASKS`` order."""
    keys = set(map(tuple, frame[list(GROUP_KEYS)].astype(str).drop_duplicates().to_numpy().tolist()))
    task_rank = {t: i for i, t in enumerate(EVAL_TASKS)}
    return sorted(keys, key=lambda k: (k[0] != OWN_EVAL_SET, k[0], k[1], task_rank.get(k[2], len(task_rank)), k[2]))


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def _fmt_ci(value, low, high) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _eval_set_label(eval_set: str) -> str:
    """An own set's name with its protocol, e.g. ``threadembed (pseudonymised)``; external sets as named."""
    from thread_embed_pipeline.evaluation.eval_sets import protocol_of

    protocol = protocol_of(eval_set)
    return f"{eval_set} ({protocol})" if protocol else eval_set


def _title(key: tuple[str, str, str]) -> str:
    return " / ".join((_eval_set_label(key[0]), *key[1:]))


def markdown_leaderboard(results: pd.DataFrame) -> str:
    """One Markdown table per (eval_set, source, task); rows = model x dim, cells ``value [ci_low, ci_high]``, plus n."""
    _check(results, RESULT_COLUMNS)
    if results.empty:
        return "_No retrieval results._\n"
    metrics = [m for m in METRIC_NAMES if m in set(results["metric"])]
    metrics += sorted(set(results["metric"]) - set(metrics))
    out: list[str] = []
    for key in _group_order(results):
        g = results[(results[list(GROUP_KEYS)].astype(str) == list(key)).all(axis=1)]
        out.append(f"### {_title(key)}\n")
        out.append("| " + " | ".join(["model", "dim", *metrics, "n"]) + " |")
        out.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(metrics) + 1)) + "|")
        cells = {(r.model, int(r.dim), r.metric): r for r in g.itertuples(index=False)}
        n = g.groupby(["model", "dim"])["n"].max()
        for model in _model_order(g["model"].tolist()):
            for dim in sorted(set(g.loc[g["model"] == model, "dim"].astype(int)), reverse=True):
                vals = []
                for metric in metrics:
                    r = cells.get((model, dim, metric))
                    vals.append(_fmt_ci(r.value, r.ci_low, r.ci_high) if r is not None else "")
                out.append("| " + " | ".join([str(model), str(dim), *vals, str(int(n.loc[(model, dim)]))]) + " |")
        out.append("")
    return "\n".join(out)


def comparison_markdown(comparisons: pd.DataFrame) -> str:
    """One Markdown table per (eval_set, source, task): model vs reference per dim and metric,
    with both means, the delta, its paired bootstrap CI, the paired-test p-value and n."""
    if comparisons.empty:  # also a bare ``pd.DataFrame()`` (no references requested)
        return "_No model comparisons._\n"
    _check(comparisons, COMPARISON_COLUMNS, "comparisons")
    out: list[str] = []
    header = ["reference", "model", "dim", "metric", "model value", "reference value", "delta [95% CI]", "p", "n"]
    for key in _group_order(comparisons):
        g = comparisons[(comparisons[list(GROUP_KEYS)].astype(str) == list(key)).all(axis=1)]
        out.append(f"### {_title(key)}\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] * 4 + ["---:"] * 5) + "|")
        refs = list(dict.fromkeys(g["reference"].tolist()))
        model_rank = {m: i for i, m in enumerate(_model_order(g["model"].tolist()))}
        metric_rank = {m: i for i, m in enumerate(METRIC_NAMES)}
        g = g.assign(
            _r=g["reference"].map(refs.index),
            _m=g["model"].map(model_rank),
            _k=g["metric"].map(lambda m: metric_rank.get(m, len(metric_rank))),
        ).sort_values(["_r", "_m", "dim", "_k"], ascending=[True, True, False, True])
        for r in g.itertuples(index=False):
            delta = f"{r.delta:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
            out.append(
                "| "
                + " | ".join(
                    [str(r.reference), str(r.model), str(int(r.dim)), str(r.metric), _fmt(r.value),
                     _fmt(r.reference_value), delta, _fmt_p(r.p_value), str(int(r.n))]
                )
                + " |"
            )
        out.append("")
    out.append(
        "_delta = model - reference over the same queries; CI: paired percentile bootstrap over queries; "
        "p: two-sided paired randomisation test (no multiple-comparison correction)._\n"
    )
    return "\n".join(out)


def improvement_summary(
    results: pd.DataFrame,
    base: str = "base",
    tuned: str = "fine_tuned",
    task: str = "thread",
    source: str | None = None,
    metric: str = "mrr@10",
    eval_set: str | None = OWN_EVAL_SET,
) -> pd.DataFrame:
    """Per dim: base, tuned, delta (= tuned - base) and bm25 values of ``metric`` (default MRR@10).

    ``source=None`` pools all sources of the task (``eval_set=None``: of every eval set),
    weighting each set by its number of queries (a micro-average over queries). Missing
    models give NaN columns. Columns: eval_set, source, task, dim, base, tuned, delta, bm25.
    """
    _check(results, RESULT_COLUMNS)
    sel = results[(results["task"] == task) & (results["metric"] == metric)]
    if eval_set is not None:
        sel = sel[sel["eval_set"] == eval_set]
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
            "eval_set": eval_set if eval_set is not None else "all",
            "source": source if source is not None else "all",
            "task": task,
            "dim": [int(d) for d in dims],
            "base": [b.get(d, np.nan) for d in dims],
            "tuned": [t.get(d, np.nan) for d in dims],
            "bm25": [bm.get(d, np.nan) for d in dims],
        }
    )
    out["delta"] = out["tuned"] - out["base"]
    return out[["eval_set", "source", "task", "dim", "base", "tuned", "delta", "bm25"]]


MAX_PLOT_WIDTH_IN = 10.0  # at 110 dpi: 1,100 px, inside the Dagster UI's Markdown popup


def _new_figure(n_panels: int, ncols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = -(-max(1, n_panels) // ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: Path, tight: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    return path


def plot_loss_curve(history: pd.DataFrame, path: str | Path) -> Path:
    """PNG of the training loss per logged step (columns ``step``, ``loss``). Returns the path."""
    path = Path(path)
    fig, axes = _new_figure(1, 1, (MAX_PLOT_WIDTH_IN * 0.6, 3.2))
    ax = axes[0][0]
    if history.empty:
        ax.text(0.5, 0.5, "no loss logged", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    ax.plot(history["step"], history["loss"], marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (Matryoshka MNRL)")
    ax.set_title(f"training loss ({len(history)} logged steps)", fontsize="medium")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_matryoshka(results: pd.DataFrame, path: str | Path, metric: str = "mrr@10") -> Path:
    """PNG of ``metric`` vs dim: one subplot per (eval_set, source, task), one line per model with a
    shaded CI band (BM25 dashed grey: it has no dim). Returns the path."""
    _check(results, RESULT_COLUMNS)
    path = Path(path)
    results = _float_rows(results)
    sel = results[results["metric"] == metric]
    panels = _group_order(sel) if not sel.empty else []
    fig, axes = _new_figure(len(panels), 2, (MAX_PLOT_WIDTH_IN / 2, 3.6))
    colors = _colors(results["model"].tolist())
    if not panels:
        axes[0][0].text(0.5, 0.5, "no results", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, key in zip(axes.flat, panels):
        g = sel[(sel[list(GROUP_KEYS)].astype(str) == list(key)).all(axis=1)]
        dims = sorted(set(g["dim"].astype(int)))
        for model in _model_order(g["model"].tolist()):
            m = g[g["model"] == model].sort_values("dim")
            x = m["dim"].astype(int).to_numpy()
            style = {"linestyle": "--"} if model == BM25_MODEL_NAME else {"marker": "o"}
            color = colors[model]
            ax.plot(x, m["value"], label=model, color=color, **style)
            ax.fill_between(x, m["ci_low"].astype(float), m["ci_high"].astype(float), color=color, alpha=0.15, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims)
        ax.set_xticklabels([str(d) for d in dims])
        ax.minorticks_off()
        ax.set_xlabel("embedding dim (Matryoshka truncation)")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
        ax.set_title(f"{_title(key)} (n={int(g['n'].max())})", fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        if panels:
            ax.set_axis_off()
    return _save(fig, path)


def _bar_rows(results: pd.DataFrame, metric: str, dim: int | None) -> pd.DataFrame:
    results = _float_rows(results)
    sel = results[results["metric"] == metric]
    if dim is not None:
        return sel[sel["dim"].astype(int) == int(dim)]
    # each model at its own largest dim within each set
    idx = sel.groupby([*GROUP_KEYS, "model"])["dim"].idxmax()
    return sel.loc[idx.to_numpy()]


def plot_eval_set_bars(results: pd.DataFrame, path: str | Path, dim: int | None = None, metric: str = "mrr@10") -> Path:
    """PNG of grouped bars of ``metric`` per model for each (eval_set, source, task), with CI whiskers:
    one panel per eval set (protocol), at most ``MAX_PLOT_WIDTH_IN`` wide, the legend below the bars.

    ``dim=None``: every model at its largest dim in that set (so a model with a smaller
    ``max_dim`` still appears, at full size); otherwise exactly ``dim``. Returns the path.
    """
    _check(results, RESULT_COLUMNS)
    path = Path(path)
    rows = _bar_rows(results, metric, dim)
    groups = _group_order(rows) if not rows.empty else []
    models = [m for m in _model_order(results["model"].tolist()) if m in set(rows["model"])]
    colors = _colors(results["model"].tolist())
    eval_sets = list(dict.fromkeys(k[0] for k in groups))
    fig, axes = _new_figure(max(1, len(eval_sets)), 1, (MAX_PLOT_WIDTH_IN, 3.2))
    if not groups:
        axes[0][0].text(0.5, 0.5, "no results", ha="center", va="center")
        axes[0][0].set_axis_off()
        return _save(fig, path)
    width = 0.8 / len(models)
    for ax, eval_set in zip(axes.flat, eval_sets):
        panel = [k for k in groups if k[0] == eval_set]
        x = np.arange(len(panel))
        for i, model in enumerate(models):
            vals, lows, highs = [], [], []
            for key in panel:
                r = rows[(rows[list(GROUP_KEYS)].astype(str) == list(key)).all(axis=1) & (rows["model"] == model)]
                if r.empty:
                    vals.append(np.nan), lows.append(0.0), highs.append(0.0)
                    continue
                v = float(r["value"].iloc[0])
                vals.append(v)
                lows.append(max(0.0, v - float(r["ci_low"].iloc[0])))
                highs.append(max(0.0, float(r["ci_high"].iloc[0]) - v))
            ax.bar(x - 0.4 + width * (i + 0.5), vals, width, yerr=[lows, highs], capsize=2, label=model, color=colors[model])
        ax.set_xticks(x)
        ax.set_xticklabels(["\n".join(k[1:]) for k in panel], fontsize="small")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
        ax.set_title(_eval_set_label(eval_set), fontsize="medium")
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"{metric} per eval set ({'largest dim per model' if dim is None else f'dim={dim}'}; 95% CI)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncols=min(5, len(models)), fontsize="small", frameon=False)
    return _save(fig, path, tight=False)


def headline_frame(results: pd.DataFrame, metric: str = "mrr@10") -> pd.DataFrame:
    """The leaderboard at a glance: one row per (eval set, source, task) with its protocol and n, and
    one column per model holding ``value [ci_low, ci_high]`` at that model's largest dim (``(d=…)``);
    the best model of the row is marked ``★`` and named in ``winner``."""
    rows = _bar_rows(results, metric, None)
    if rows.empty:
        return pd.DataFrame()
    from thread_embed_pipeline.evaluation.eval_sets import protocol_of

    models = _model_order(rows["model"].tolist())
    out = []
    for key in _group_order(rows):
        g = rows[(rows[list(GROUP_KEYS)].astype(str) == list(key)).all(axis=1)].set_index("model")
        winner = g["value"].astype(float).idxmax()
        record = {"eval_set": key[0], "protocol": protocol_of(key[0]) or "", "source": key[1], "task": key[2], "n": int(g["n"].max()), "winner": winner}
        for m in models:
            if m not in g.index:
                record[m] = ""
                continue
            cell = _fmt_ci(g.at[m, "value"], g.at[m, "ci_low"], g.at[m, "ci_high"])
            cell += f" (d={int(g.at[m, 'dim'])})" if m != BM25_MODEL_NAME else ""
            record[m] = ("★ " if m == winner else "") + cell
        out.append(record)
    return pd.DataFrame(out)


def compact_headline(frame: pd.DataFrame) -> pd.DataFrame:
    """``headline_frame`` narrowed for a UI panel: one ``set`` column (protocol · source · task), n,
    the winner with its value, then one ``value [ci]`` column per model (the dims are in the full report)."""
    if frame.empty:
        return frame
    models = [c for c in frame.columns if c not in HEADLINE_KEYS]
    out = pd.DataFrame({"set": [" · ".join(x for x in (r["protocol"] or r["eval_set"], r["source"], r["task"])) for r in frame.to_dict("records")]})
    out["n"] = frame["n"].to_numpy()
    for m in models:
        out[m] = frame[m].str.replace(r" \(d=\d+\)$", "", regex=True).to_numpy()
    # the winner with its value, so the first columns alone tell the headline
    out.insert(2, "winner", [f"{w} {out.at[i, w].removeprefix('★ ').split(' ')[0]}" for i, w in enumerate(frame["winner"])])
    return out


HEADLINE_KEYS = ("eval_set", "protocol", "source", "task", "n", "winner")


def _headline(results: pd.DataFrame, metric: str = "mrr@10") -> str:
    """Per set: each model's ``metric`` at its largest dim, one column per model (``headline_frame`` as Markdown)."""
    frame = headline_frame(results, metric)
    if frame.empty:
        return ""
    models = [c for c in frame.columns if c not in HEADLINE_KEYS]
    lines = ["| eval set (protocol) | source | task | " + " | ".join(models) + " | n |", "|" + "---|" * 3 + "---:|" * (len(models) + 1)]
    for r in frame.to_dict("records"):
        lines.append("| " + " | ".join([_eval_set_label(r["eval_set"]), r["source"], r["task"], *[r[m] for m in models], str(r["n"])]) + " |")
    return "\n".join(lines) + "\n"


FUSION_REPORT_COLUMNS: tuple[str, ...] = (
    "model", "dim", "scope", "eval_set", "source", "task", "weight", "dev_mrr10_global", "dev_mrr10_per_set", "n_dev_queries",
)


def fusion_markdown(fusion: pd.DataFrame | None) -> str:
    """The "Hybrid weights (chosen on dev)" section body: per hybrid model, at its largest dim, the
    chosen scope, the weight per set and the held-out dev MRR@10 of both scopes ("" if no rows)."""
    if fusion is None or fusion.empty:
        return ""
    _check(fusion, FUSION_REPORT_COLUMNS, "fusion table")
    lines = [
        "`hybrid:<model>` ranks each pool by a convex mix `w * z(dense) + (1 - w) * z(BM25)` of the "
        "per-pool z-scored BM25 and dense scores; `w` (the dense share) is chosen on the dev queries, "
        "never on test: one global weight or one per (eval_set, source, task) set, whichever has the higher "
        "held-out MRR@10 under 2-fold cross-validation over the dev queries, then refit on all of them. "
        "Shown at each model's largest dim.",
        "",
        "| model | dim | scope | weight per set (eval_set / source / task: w) | held-out dev MRR@10, global | held-out dev MRR@10, per set | dev queries |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    models = list(dict.fromkeys(fusion["model"].astype(str)))
    for model in models:
        g = fusion[fusion["model"].astype(str) == model]
        dim = int(g["dim"].astype(int).max())
        g = g[g["dim"].astype(int) == dim]
        first = g.iloc[0]
        cells = []
        for r in g.itertuples(index=False):
            seen = getattr(r, "on_dev", True)
            cells.append(f"{r.eval_set} / {r.source} / {r.task}: {float(r.weight):.2f}" + ("" if bool(seen) else " (not on dev: global)"))
        lines.append(
            "| " + " | ".join([model, str(dim), str(first["scope"]), "; ".join(cells), _fmt(float(first["dev_mrr10_global"])),
                               _fmt(float(first["dev_mrr10_per_set"])), str(int(first["n_dev_queries"]))]) + " |"
        )
    return "\n".join(lines) + "\n"


def precision_markdown(results: pd.DataFrame, metric: str = "mrr@10") -> str:
    """The "Embedding precision" section body: per model with quantised variants and per set, one row per
    dim and one column per precision (``value`` and its change against float32 at that dim), with
    the bytes per vector in the header of each dim's row ("" without quantised rows)."""
    table = precision_table(results, metric)
    if table.empty:
        return ""
    precisions = list(dict.fromkeys(table["precision"]))
    lines = [
        f"{metric.upper()} of each model's vectors stored at lower precision (sentence-transformers' `quantize_embeddings`): "
        "`int8` calibrated on the set's documents, `binary` one bit per dim (Hamming); `+rescore` re-scores the quantised "
        f"top {RESCORE_K * RESCORE_MULTIPLIER} with the float32 query against the stored quantised vectors. In brackets: the change against float32 at the same dim.",
        "",
    ]
    for (model, eval_set, source, task), g in table.groupby(["model", "eval_set", "source", "task"], sort=False):
        lines += [f"### {model} · {_title((eval_set, source, task))}", "", "| dim | " + " | ".join(f"{p}" for p in precisions) + " |", "|---:|" + "---:|" * len(precisions)]
        for dim, d in g.groupby("dim", sort=False):
            by = d.set_index("precision")
            ref = float(by.at[FLOAT_PRECISION, "value"]) if FLOAT_PRECISION in by.index else None
            cells = []
            for p in precisions:
                if p not in by.index:
                    cells.append("")
                    continue
                v = float(by.at[p, "value"])
                delta = "" if p == FLOAT_PRECISION or ref is None else f" ({v - ref:+.3f})"
                cells.append(f"{_fmt(v)}{delta} · {int(by.at[p, 'bytes_per_vector'])} B")
            lines.append(f"| {int(dim)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def report_markdown(
    results: pd.DataFrame,
    comparisons: pd.DataFrame,
    notes: Sequence[str] = (),
    *,
    plots: Sequence[str | Path] = (),
    title: str = "Retrieval evaluation report",
    fusion: pd.DataFrame | None = None,
    maxsim_dev: pd.DataFrame | None = None,
) -> str:
    """A full Markdown report: notes (skipped models/sets, ...), MRR@10 headline per set, significance
    of the comparisons, the full leaderboard with CIs, and a short method section.

    ``plots``: image paths (relative to where the report is written) embedded after the headline.
    ``fusion``: the runner's fusion table (weights of the ``hybrid:`` models chosen on dev),
    rendered as "Hybrid weights (chosen on dev)" when it has rows. ``maxsim_dev``: the dev MRR@10 of each
    max-sim aggregation (``retrieval.maxsim_dev_table``), rendered as "Max-sim aggregation (chosen on dev)".
    """
    _check(results, RESULT_COLUMNS)
    parts = [f"# {title}", ""]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    if not results.empty:
        sets = results[list(GROUP_KEYS)].drop_duplicates()
        parts += [
            f"{results['model'].nunique()} models on {len(sets)} (eval set, source, task) sets, "
            f"dims {sorted(set(results['dim'].astype(int)), reverse=True)}.",
            "",
        ]
    parts += ["## MRR@10 at each model's largest dim (95% CI)", "", _headline(results) or "_No retrieval results._", ""]
    for p in plots:
        parts += [f"![{Path(p).stem}]({Path(p).as_posix()})", ""]
    if maxsim_dev is not None and not maxsim_dev.empty:
        wide = maxsim_dev.pivot_table(index="aggregation", columns="task", values="mrr@10", sort=False).round(4).reset_index()
        wide.columns.name = None
        parts += ["## Max-sim aggregation (chosen on dev)", "", "Dev MRR@10 of the fine-tuned model at its largest dim; `truncated` is one encoding of the whole document.", "", wide.to_markdown(index=False), ""]
    fusion_md = fusion_markdown(fusion)
    if fusion_md:
        parts += ["## Hybrid weights (chosen on dev)", "", fusion_md]
    precision_md = precision_markdown(results)
    if precision_md:
        parts += ["## Embedding precision (dims × precision)", "", precision_md]
    parts += ["## Comparisons", "", comparison_markdown(comparisons), "## Leaderboard", "", markdown_leaderboard(results)]
    parts += [
        "## Method",
        "",
        "- Each query is ranked against its candidate pool; ties are broken pessimistically "
        "(a relevant document tied with a non-relevant one ranks below it).",
        "- MRR@10, NDCG@10 (binary gains), Recall@1/5/10 (relevant in top k / all relevant), averaged over queries.",
        "- CIs: percentile bootstrap over queries. Comparisons: paired bootstrap CI of the mean difference "
        "and a two-sided paired randomisation test; p-values are not corrected for multiple comparisons.",
        f"- `{BM25_MODEL_NAME}` has no dimension (same values at every dim); `{RRF_PREFIX}<model>` is "
        "reciprocal-rank fusion of BM25 and that model (k=60, nothing tuned); "
        f"`{HYBRID_PREFIX}<model>` is a convex mix of per-pool z-scored BM25 and dense scores whose weight "
        "is chosen on dev queries only (never on test).",
        "- `<model>@<precision>` rows are the same embeddings in an int8 or binary index (see Embedding precision); "
        "the headline and plots show float32 models only.",
        "- `<model>·maxsim` rows score a document (a thread, a window) by its messages, each encoded on its own, "
        "with the aggregation chosen on dev (max, mean of the top 2-3, or max plus a share of the whole document's "
        "cosine); `<model>` rows encode the document as one text, truncated at the model's `max_seq_length`.",
        "",
    ]
    return "\n".join(parts)
