"""The headline tables of an eval report, for docs/results.md and the closing notes of a change.

    python benchmarks/report_headlines.py --reports data/reports --write docs/results.md

Reads ``results.parquet``, ``comparisons.parquet`` and ``fusion.parquet`` written by ``eval_report``
(test split) and prints, per protocol: MRR@10 at full dim with 95% CIs; the dev-tuned hybrid against
BM25 (paired delta and its CI); the fine-tuned model against its base at every dim; 64-dim retention;
the fusion weights chosen on dev.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

PROTOCOL = {"threadembed": "pseudonymised", "threadembed-names_visible": "names_visible", "threadembed-per_conversation": "per_conversation"}
MODELS = ["bm25", "base", "fine_tuned", "hybrid:base", "hybrid:fine_tuned", "rrf:base", "rrf:fine_tuned"]


def _cell(value, low, high) -> str:
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def headlines(reports: Path) -> str:
    results = pd.read_parquet(reports / "results.parquet")
    comparisons = pd.read_parquet(reports / "comparisons.parquet")
    fusion = pd.read_parquet(reports / "fusion.parquet")
    own = results[(results["metric"] == "mrr@10") & results["eval_set"].isin(PROTOCOL)].copy()
    own["protocol"] = own["eval_set"].map(PROTOCOL)
    full = int(own["dim"].max())
    out = []

    at_full = own[own["dim"] == full].copy()
    at_full["cell"] = [_cell(v, lo, hi) for v, lo, hi in zip(at_full["value"], at_full["ci_low"], at_full["ci_high"])]
    table = at_full.pivot_table(index=["protocol", "source", "task", "n"], columns="model", values="cell", aggfunc="first")
    table = table[[m for m in MODELS if m in table.columns]].reset_index()
    out += [f"## MRR@10 on test at {full} dims [95% CI]", "", table.to_markdown(index=False), ""]

    cmp = comparisons[(comparisons["metric"] == "mrr@10") & comparisons["eval_set"].isin(PROTOCOL) & (comparisons["dim"] == full)].copy()
    cmp["protocol"] = cmp["eval_set"].map(PROTOCOL)
    vs_bm25 = cmp[(cmp["reference"] == "bm25") & cmp["model"].isin(["hybrid:fine_tuned", "fine_tuned"])].copy()
    vs_bm25["delta [95% CI]"] = [_cell(d, lo, hi) for d, lo, hi in zip(vs_bm25["delta"], vs_bm25["ci_low"], vs_bm25["ci_high"])]
    vs_bm25["CI excludes 0"] = (vs_bm25["ci_low"] > 0) | (vs_bm25["ci_high"] < 0)
    keep = ["protocol", "source", "task", "model", "value", "reference_value", "delta [95% CI]", "p_value", "CI excludes 0", "n"]
    out += [f"## Against BM25 on test at {full} dims (paired)", "", vs_bm25[keep].round(3).to_markdown(index=False), ""]

    vs_base = comparisons[(comparisons["metric"] == "mrr@10") & comparisons["eval_set"].isin(PROTOCOL) & (comparisons["model"] == "fine_tuned") & (comparisons["reference"] == "base")].copy()
    vs_base["protocol"] = vs_base["eval_set"].map(PROTOCOL)
    vs_base["cell"] = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in zip(vs_base["delta"], vs_base["ci_low"], vs_base["ci_high"])]
    wide = vs_base.pivot_table(index=["protocol", "source", "task"], columns="dim", values="cell", aggfunc="first")
    wide = wide[sorted(wide.columns, reverse=True)].reset_index()
    wide.columns = [str(c) for c in wide.columns]
    out += ["## Fine-tuned minus base, MRR@10 on test, per dim [95% CI]", "", wide.to_markdown(index=False), ""]

    tuned = own[own["model"] == "fine_tuned"].pivot_table(index=["protocol", "source", "task"], columns="dim", values="value")
    smallest = int(tuned.columns.min())
    retention = (tuned[smallest] / tuned[full]).rename(f"{smallest}/{full}").reset_index()
    out += [f"## Fine-tuned {smallest}-dim retention (MRR@10 at {smallest} dims / at {full})", "", retention.round(3).to_markdown(index=False), ""]

    chosen = fusion[(fusion["dim"] == fusion.groupby("model")["dim"].transform("max")) & fusion["eval_set"].isin(PROTOCOL)].copy()
    chosen["protocol"] = chosen["eval_set"].map(PROTOCOL)
    cols = ["model", "protocol", "source", "task", "scope", "weight", "dev_mrr10_global", "dev_mrr10_per_set", "n_dev_queries", "on_dev"]
    out += ["## Fusion weights chosen on dev (dense share)", "", chosen[cols].round(3).to_markdown(index=False), ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=Path, default=Path("data/reports"))
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--title", default="Results of the CPU default (test split)")
    args = parser.parse_args()
    text = f"# {args.title}\n\n" + headlines(args.reports)
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
