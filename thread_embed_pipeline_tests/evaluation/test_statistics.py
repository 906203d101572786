"""Bootstrap CIs, paired randomisation tests and model comparisons over per-query metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.evaluation.statistics import COMPARISON_COLUMNS, bootstrap_ci, compare_models, paired_test


def test_bootstrap_ci_contains_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(30)
    large = rng.random(3000)
    lo_s, hi_s = bootstrap_ci(small, confidence=0.95, n_resamples=1000, seed=0)
    lo_l, hi_l = bootstrap_ci(large, confidence=0.95, n_resamples=1000, seed=0)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # ~ 1/sqrt(100)
    assert 0 <= lo_s and hi_s <= 1
    # a wider confidence level gives a wider interval
    lo_99, hi_99 = bootstrap_ci(small, confidence=0.99, n_resamples=1000, seed=0)
    assert lo_99 <= lo_s and hi_99 >= hi_s


def test_bootstrap_ci_deterministic_and_degenerate():
    x = np.random.default_rng(1).random(50)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(np.full(20, 0.25)) == (0.25, 0.25)
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert all(np.isnan(bootstrap_ci([])))
    with pytest.raises(ValueError):
        bootstrap_ci(x, confidence=1.5)


def test_paired_test_identical_and_clearly_better():
    rng = np.random.default_rng(0)
    a = rng.random(100)
    assert paired_test(a, a.copy(), n_resamples=2000, seed=0) == 1.0
    better = np.clip(a + 0.2 + 0.05 * rng.standard_normal(100), 0, None)
    p = paired_test(better, a, n_resamples=2000, seed=0)
    assert p < 0.01
    assert paired_test(better, a, n_resamples=2000, seed=0) == p  # deterministic
    # pure noise around the same mean: not significant
    noisy = a + 0.01 * rng.standard_normal(100)
    assert paired_test(noisy, a, n_resamples=2000, seed=0) > 0.01
    # symmetric in direction (two-sided)
    assert paired_test(a, better, n_resamples=2000, seed=0) == pytest.approx(p)
    with pytest.raises(ValueError):
        paired_test(a, a[:10])


def _per_query(n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    base = rng.random(n)
    systems = {"base": base, "same": base.copy(), "better": np.clip(base + 0.3, 0, 1), "bm25": rng.random(n) * 0.5}
    rows = []
    for model, vals in systems.items():
        for dim in (64, 32):
            for i, v in enumerate(vals):
                if model == "bm25" and i >= n - 10:
                    continue  # fewer queries: comparisons use the common ones only
                rows.append(("threadembed", model, "s", "thread", dim, f"q{i}", v, v / 2))
    return pd.DataFrame(rows, columns=["eval_set", "model", "source", "task", "dim", "record_id", "mrr@10", "ndcg@10"])


def test_compare_models():
    pq = _per_query()
    cmp = compare_models(pq, n_resamples=500, n_permutations=2000, seed=0)
    assert list(cmp.columns) == list(COMPARISON_COLUMNS)
    # vs base: same, better, bm25; vs bm25: base, same, better -- x 2 dims x 2 metrics
    assert len(cmp) == 2 * 2 * 6
    key = cmp.set_index(["reference", "model", "dim", "metric"])
    same = key.loc[("base", "same", 64, "mrr@10")]
    assert same["delta"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0 and same["p_value"] == 1.0
    better = key.loc[("base", "better", 64, "mrr@10")]
    assert better["delta"] > 0.1 and better["p_value"] < 0.01 and better["ci_low"] > 0
    assert better["delta"] == pytest.approx(better["value"] - better["reference_value"])
    assert better["ci_low"] <= better["delta"] <= better["ci_high"]
    assert better["n"] == 80
    assert key.loc[("bm25", "better", 64, "mrr@10")]["n"] == 70
    assert key.loc[("bm25", "base", 32, "ndcg@10")]["n"] == 70
    again = compare_models(pq, n_resamples=500, n_permutations=2000, seed=0)
    pd.testing.assert_frame_equal(cmp, again)
    # missing reference -> no rows for it; missing metric column -> error
    only = compare_models(pq, references=("nope",), n_resamples=100, n_permutations=100)
    assert only.empty and list(only.columns) == list(COMPARISON_COLUMNS)
    with pytest.raises(ValueError):
        compare_models(pq, metrics=("recall@1",))
