"""Reports over the long results table and the comparison table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.evaluation.metrics import METRIC_NAMES
from thread_embed_pipeline.evaluation.report import (
    comparison_markdown,
    compact_headline,
    headline_frame,
    improvement_summary,
    markdown_leaderboard,
    plot_eval_set_bars,
    plot_matryoshka,
    report_markdown,
)
from thread_embed_pipeline.evaluation.retrieval import RESULT_COLUMNS
from thread_embed_pipeline.evaluation.statistics import COMPARISON_COLUMNS

PNG = b"\x89PNG\r\n\x1a\n"


def make_results() -> pd.DataFrame:
    rows = []
    n_by_source = {"irc_disentangle": 30, "slack_discord": 10}
    for model, base_value in [("base", 0.4), ("fine_tuned", 0.6), ("hybrid:fine_tuned", 0.65), ("rrf:fine_tuned", 0.62), ("bm25", 0.3)]:
        for source, n in n_by_source.items():
            for task in ("thread", "response"):
                for dim in (384, 128, 64):
                    for i, metric in enumerate(METRIC_NAMES):
                        shrink = 0.0 if model == "bm25" else (384 - dim) / 1000
                        bonus = 0.1 if source == "slack_discord" else 0.0
                        value = base_value - shrink + bonus + i / 100
                        rows.append(("threadembed", model, source, task, dim, metric, value, value - 0.05, value + 0.05, n))
    # an external set where one API model only goes up to dim 128
    for model, value in [("base", 0.3), ("api", 0.5), ("bm25", 0.2)]:
        for dim in (384, 128, 64):
            if model == "api" and dim > 128:
                continue
            for metric in METRIC_NAMES:
                rows.append(("beir_scifact", model, "beir", "retrieval", dim, metric, value, value - 0.1, value + 0.1, 50))
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def make_comparisons() -> pd.DataFrame:
    rows = []
    for model, ref, delta, p in [("fine_tuned", "base", 0.2, 0.0004), ("bm25", "base", -0.1, 0.03), ("fine_tuned", "bm25", 0.3, 0.2)]:
        for dim in (384, 64):
            rows.append(("threadembed", "irc_disentangle", "thread", dim, "mrr@10", model, ref, 0.4 + delta, 0.4, delta,
                         delta - 0.05, delta + 0.05, p, 30))
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _sections(md: str) -> list[str]:
    return [line[4:] for line in md.splitlines() if line.startswith("### ")]


def test_markdown_leaderboard_groups_and_ci_cells():
    md = markdown_leaderboard(make_results())
    # own set first, then external; tasks in EVAL_TASKS order within a source
    assert _sections(md) == [
        "threadembed (pseudonymised) / irc_disentangle / thread",
        "threadembed (pseudonymised) / irc_disentangle / response",
        "threadembed (pseudonymised) / slack_discord / thread",
        "threadembed (pseudonymised) / slack_discord / response",
        "beir_scifact / beir / retrieval",
    ]
    for metric in METRIC_NAMES:
        assert metric in md
    assert "0.400 [0.350, 0.450]" in md and "| 30 |" in md
    first = md.split("### ")[1]
    rows = [line for line in first.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 5 * 3  # models x dims
    models = [r.split("|")[1].strip() for r in rows]
    assert models[0] == "base" and models[-1] == "bm25"  # dense first, hybrids, then bm25
    # fusions (hybrid: and rrf:) after the dense models, before bm25
    assert list(dict.fromkeys(models)) == ["base", "fine_tuned", "hybrid:fine_tuned", "rrf:fine_tuned", "bm25"]
    assert [r.split("|")[2].strip() for r in rows[:3]] == ["384", "128", "64"]
    beir = md.split("### ")[-1]
    assert "| api | 128 |" in beir and "| api | 384 |" not in beir


def test_comparison_markdown():
    md = comparison_markdown(make_comparisons())
    assert _sections(md) == ["threadembed (pseudonymised) / irc_disentangle / thread"]
    assert "+0.200 [+0.150, +0.250]" in md and "-0.100" in md
    assert "<0.001" in md and "0.030" in md
    assert "No model comparisons" in comparison_markdown(make_comparisons().iloc[0:0])
    assert "No model comparisons" in comparison_markdown(pd.DataFrame())


def test_improvement_summary_per_dim():
    res = make_results()
    summ = improvement_summary(res, task="thread", source="irc_disentangle")
    assert list(summ.columns) == ["eval_set", "source", "task", "dim", "base", "tuned", "delta", "bm25"]
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
    # other eval sets are selected explicitly
    beir = improvement_summary(res, tuned="api", task="retrieval", eval_set="beir_scifact").set_index("dim")
    assert beir.loc[128, "delta"] == pytest.approx(0.2) and np.isnan(beir.loc[384, "tuned"])


def test_plots_write_png(tmp_path):
    res = make_results()
    m = plot_matryoshka(res, tmp_path / "plots" / "matryoshka.png")
    b = plot_eval_set_bars(res, tmp_path / "plots" / "bars.png")
    b64 = plot_eval_set_bars(res, tmp_path / "bars64.png", dim=64)
    for out in (m, b, b64):
        assert out.exists() and out.stat().st_size > 1000
        assert out.read_bytes()[:8] == PNG


def test_report_markdown_assembles_everything():
    md = report_markdown(make_results(), make_comparisons(), ["skipped openai: no API key"], plots=["plots/bars.png"])
    assert md.startswith("# Retrieval evaluation report")
    for heading in ("## Notes", "## MRR@10", "## Comparisons", "## Leaderboard", "## Method"):
        assert heading in md
    assert "- skipped openai: no API key" in md
    assert "![bars](plots/bars.png)" in md
    # headline: every model at its own largest dim (the API model at 128)
    headline = md.split("## MRR@10")[1].split("##")[0]
    assert "(d=128)" in headline and "0.500 [0.400, 0.600]" in headline
    assert md.index("## Comparisons") < md.index("## Leaderboard")


def test_reports_handle_empty_results(tmp_path):
    empty = pd.DataFrame(columns=list(RESULT_COLUMNS))
    assert "No retrieval results" in markdown_leaderboard(empty)
    assert plot_matryoshka(empty, tmp_path / "empty.png").read_bytes()[:8] == PNG
    assert plot_eval_set_bars(empty, tmp_path / "empty_bars.png").read_bytes()[:8] == PNG
    md = report_markdown(empty, pd.DataFrame(columns=list(COMPARISON_COLUMNS)), [])
    assert "No retrieval results" in md and "## Notes" not in md
    with pytest.raises(ValueError):
        markdown_leaderboard(empty.drop(columns=["ci_low"]))


def make_fusion() -> pd.DataFrame:
    from thread_embed_pipeline.evaluation.fusion import FUSION_COLUMNS

    rows = []
    for dim, w in ((384, 0.35), (64, 0.2)):
        for eval_set, source, on_dev in (("threadembed-names_visible", "irc_disentangle", True), ("threadembed", "slack_discord", True),
                                         ("beir", "beir", False)):
            rows.append(("fine_tuned", dim, "global", eval_set, source, "thread", w, 0.812, 0.805, 120, w, on_dev))
    return pd.DataFrame(rows, columns=list(FUSION_COLUMNS))


def test_report_markdown_hybrid_weights_section():
    md = report_markdown(make_results(), make_comparisons(), [], fusion=make_fusion())
    assert "## Hybrid weights (chosen on dev)" in md
    section = md.split("## Hybrid weights (chosen on dev)")[1].split("\n## ")[0]
    assert "z-scored" in section and "never on test" in section and "2-fold" in section
    rows = [line for line in section.splitlines() if line.startswith("| fine_tuned")]
    assert len(rows) == 1  # only the largest dim
    assert "| 384 | global |" in rows[0] and "threadembed-names_visible / irc_disentangle / thread: 0.35" in rows[0] and "0.20" not in rows[0]
    assert "0.812" in rows[0] and "0.805" in rows[0] and "| 120 |" in rows[0]
    assert "threadembed / slack_discord / thread: 0.35" in rows[0]
    assert "beir / beir / thread: 0.35 (not on dev: global)" in rows[0]
    assert "eval_set / source / task" in section
    assert md.index("## Hybrid weights") < md.index("## Comparisons")
    # no fusion table -> no section; the method mentions both fusions
    plain = report_markdown(make_results(), make_comparisons(), [])
    assert "Hybrid weights" not in plain and "`rrf:<model>`" in plain and "`hybrid:<model>`" in plain
    assert "Hybrid weights" not in report_markdown(make_results(), make_comparisons(), [], fusion=make_fusion().iloc[0:0])


def test_headline_frame_marks_the_winner_at_each_models_best_dim():
    head = headline_frame(make_results())
    assert len(head) == 5  # 2 sources x 2 tasks + the external set
    row = head[(head["source"] == "irc_disentangle") & (head["task"] == "thread")].iloc[0]
    assert row["winner"] == "hybrid:fine_tuned" and row["protocol"] == "pseudonymised" and row["n"] == 30
    assert row["hybrid:fine_tuned"].startswith("★ 0.650 [0.600, 0.700] (d=384)")
    assert not row["fine_tuned"].startswith("★") and row["bm25"] == "0.300 [0.250, 0.350]"  # BM25 has no dim
    ext = head[head["eval_set"] == "beir_scifact"].iloc[0]
    assert ext["winner"] == "api" and ext["api"].endswith("(d=128)") and ext["protocol"] == "" and ext["hybrid:fine_tuned"] == ""
    compact = compact_headline(head)
    assert list(compact.columns[:3]) == ["set", "n", "winner"] and compact["set"].iloc[0] == "pseudonymised · irc_disentangle · thread"
    assert compact["hybrid:fine_tuned"].iloc[0] == "★ 0.650 [0.600, 0.700]" and compact["winner"].iloc[0] == "hybrid:fine_tuned 0.650" and compact["set"].iloc[-1] == "beir_scifact · beir · retrieval"


def test_bar_plot_fits_the_ui_popup(tmp_path):
    from PIL import Image

    from thread_embed_pipeline.evaluation.report import MAX_PLOT_WIDTH_IN

    path = plot_eval_set_bars(make_results(), tmp_path / "bars.png")
    width, height = Image.open(path).size
    assert width <= MAX_PLOT_WIDTH_IN * 110 + 1 and width < 1240  # the Markdown popup's width
    assert height > 2 * 3.2 * 110 * 0.9  # one panel per eval set (two here)
