"""Reports over the long results table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.evaluation.metrics import METRIC_NAMES
from thread_embed_pipeline.evaluation.report import improvement_summary, markdown_leaderboard, plot_matryoshka
from thread_embed_pipeline.evaluation.retrieval import RESULT_COLUMNS


def make_results() -> pd.DataFrame:
    rows = []
    n_by_source = {"irc_disentangle": 30, "slack_discord": 10}
    for model, base_value in [("base", 0.4), ("fine_tuned", 0.6), ("bm25", 0.3)]:
        for source, n in n_by_source.items():
            for task in ("thread", "response"):
                for dim in (384, 128, 64):
                    for i, metric in enumerate(METRIC_NAMES):
                        shrink = 0.0 if model == "bm25" else (384 - dim) / 1000
                        bonus = 0.1 if source == "slack_discord" else 0.0
                        value = base_value - shrink + bonus + i / 100
                        rows.append((model, source, task, dim, metric, value, n))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def test_markdown_leaderboard_contains_every_model_source_and_task():
    md = markdown_leaderboard(make_results())
    for token in ("base", "fine_tuned", "bm25", "irc_disentangle", "slack_discord", "thread", "response"):
        assert token in md
    for metric in METRIC_NAMES:
        assert metric in md
    assert md.count("### Task:") == 2
    assert "0.400" in md and "0.610" in md  # values to 3 decimals
    # rows: 3 models x 2 sources x 3 dims per task
    table_rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table_rows) == 2 * (1 + 3 * 2 * 3)
    # grouped by source within a task: all irc rows before all slack rows
    first_task = md.split("### Task:")[1]
    sources = [line.split("|")[1].strip() for line in first_task.splitlines() if line.startswith("| ")][1:]
    assert sources == sorted(sources)


def test_improvement_summary_per_dim():
    res = make_results()
    summ = improvement_summary(res, task="thread", source="irc_disentangle")
    assert list(summ.columns) == ["source", "task", "dim", "base", "tuned", "delta", "bm25"]
    assert summ["dim"].tolist() == [384, 128, 64]
    row = summ.set_index("dim").loc[384]
    assert row["base"] == pytest.approx(0.4)
    assert row["tuned"] == pytest.approx(0.6)
    assert row["delta"] == pytest.approx(0.2)
    assert row["bm25"] == pytest.approx(0.3)
    # pooled over sources, weighted by n (30 vs 10)
    pooled = improvement_summary(res).set_index("dim").loc[384]
    assert pooled["base"] == pytest.approx((0.4 * 30 + 0.5 * 10) / 40)
    # a missing tuned model -> NaN, not an error
    only_base = improvement_summary(res[res["model"] != "fine_tuned"], source="irc_disentangle")
    assert only_base["tuned"].isna().all() and np.isnan(only_base["delta"]).all()


def test_plot_matryoshka_writes_png(tmp_path):
    out = plot_matryoshka(make_results(), tmp_path / "plots" / "matryoshka.png")
    assert out.exists() and out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reports_handle_empty_results(tmp_path):
    empty = pd.DataFrame(columns=list(RESULT_COLUMNS))
    assert "No retrieval results" in markdown_leaderboard(empty)
    assert plot_matryoshka(empty, tmp_path / "empty.png").stat().st_size > 0
