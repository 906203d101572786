"""Score-level fusion of BM25 and dense: z-scores, the convex mix, the dev-tuned weight, the runner wiring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.evaluation.fusion import (
    FUSION_COLUMNS,
    WEIGHT_GRID,
    FusionChoice,
    choose_fusion_weight,
    convex_fuse,
    grid_mrr10,
    standardise,
    tune_fusion,
)
from thread_embed_pipeline.evaluation.metrics import METRIC_NAMES, query_metrics
from thread_embed_pipeline.evaluation.retrieval import (
    BM25_MODEL_NAME,
    RetrievalSet,
    pool_scores,
    prepare_sets,
    rank_retrieval,
)
from thread_embed_pipeline.evaluation.runner import NO_DEV_SETS_NOTE, run_evaluation, write_report_files
from thread_embed_pipeline_tests.evaluation.test_retrieval import HashEmbedder, random_eval_set


def _order(scores) -> list[int]:
    return list(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"))


# --------------------------------------------------------------------------- standardise / convex_fuse


def test_standardise_constant_nan_and_moments():
    np.testing.assert_array_equal(standardise(np.array([0.1, 0.1, 0.1])), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(standardise(np.array([0.0, 0.0])), [0.0, 0.0])
    np.testing.assert_array_equal(standardise(np.array([np.nan, np.nan])), [0.0, 0.0])
    z = standardise(np.array([1.0, 2.0, 3.0, 6.0]))
    assert z.mean() == pytest.approx(0.0, abs=1e-12) and z.std() == pytest.approx(1.0)
    np.testing.assert_allclose(standardise(np.array([1.0, 3.0])), [-1.0, 1.0])
    # NaN is treated as the pool minimum
    np.testing.assert_allclose(standardise(np.array([np.nan, 1.0, 3.0])), standardise(np.array([1.0, 1.0, 3.0])))
    assert standardise(np.array([])).size == 0


def test_convex_fuse_endpoints_reproduce_each_ranking():
    bm25 = np.array([3.0, 0.0, 1.0, 2.0])
    dense = np.array([0.1, 0.9, 0.5, 0.2])
    assert _order(convex_fuse(bm25, dense, 0.0)) == _order(bm25)
    assert _order(convex_fuse(bm25, dense, 1.0)) == _order(dense)
    np.testing.assert_allclose(convex_fuse(bm25, dense, 0.0), standardise(bm25))
    np.testing.assert_allclose(convex_fuse(bm25, dense, 1.0), standardise(dense))
    np.testing.assert_allclose(convex_fuse(bm25, dense, 0.25), 0.25 * standardise(dense) + 0.75 * standardise(bm25))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            convex_fuse(bm25, dense, bad)
    with pytest.raises(ValueError):
        convex_fuse(bm25, dense[:2], 0.5)


def test_mix_ranks_positive_first_where_neither_alone_does():
    # positive = candidate 0; BM25 prefers candidate 1, dense prefers candidate 2
    bm25 = np.array([2.0, 3.0, 0.0])
    dense = np.array([2.0, 0.0, 3.0])
    rel = np.array([True, False, False])
    assert query_metrics(bm25, rel)["first_relevant_rank"] == 2
    assert query_metrics(dense, rel)["first_relevant_rank"] == 2
    # z(2 | {2, 3, 0}) = (1/3)/s; the others mix to (4/3 - 5/3) / 2 / s = -(1/6)/s
    fused = convex_fuse(bm25, dense, 0.5)
    s = np.std([2.0, 3.0, 0.0])
    np.testing.assert_allclose(fused, [(1 / 3) / s, -(1 / 6) / s, -(1 / 6) / s])
    assert query_metrics(fused, rel)["first_relevant_rank"] == 1
    mrr = grid_mrr10(bm25, dense, rel)
    assert mrr[WEIGHT_GRID.index(0.5)] == 1.0 and mrr[0] == 0.5 and mrr[-1] == 0.5


def test_grid_mrr10_matches_query_metrics_of_convex_fuse():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        bm25 = np.round(rng.exponential(size=n), 1) * (rng.random(n) < 0.6)  # many ties / zeros
        dense = np.round(rng.normal(size=n), 2)
        if rng.random() < 0.2:
            dense[rng.integers(n)] = np.nan
        rel = rng.random(n) < 0.2
        rel[rng.integers(n)] = True
        got = grid_mrr10(bm25, dense, rel)
        want = [query_metrics(convex_fuse(bm25, dense, w), rel)["mrr@10"] for w in WEIGHT_GRID]
        np.testing.assert_allclose(got, want)


def test_weight_grid():
    assert WEIGHT_GRID[0] == 0.0 and WEIGHT_GRID[-1] == 1.0 and len(WEIGHT_GRID) == 21
    np.testing.assert_allclose(np.diff(WEIGHT_GRID), 0.05)


# --------------------------------------------------------------------------- choose_fusion_weight


def grid_frame(curves: dict[tuple[str, ...], list], n_per_set: int = 6, grid=WEIGHT_GRID) -> pd.DataFrame:
    """curves[(source, task)] or curves[(eval_set, source, task)] = function weight -> mrr (or a list
    of such, cycled over queries). With (source, task) keys the frame has no ``eval_set`` column."""
    with_eval_set = any(len(k) == 3 for k in curves)
    rows = []
    for key, fns in curves.items():
        eval_set, source, task = key if len(key) == 3 else ("", *key)
        fns = fns if isinstance(fns, list) else [fns]
        for i in range(n_per_set):
            f = fns[i % len(fns)]
            for w in grid:
                rows.append((eval_set, source, task, f"{source}-{task}-q{i}", w, float(f(w))))
    frame = pd.DataFrame(rows, columns=["eval_set", "source", "task", "record_id", "weight", "mrr@10"])
    return frame if with_eval_set else frame.drop(columns=["eval_set"])


def test_choose_known_best_global_weight():
    peak = lambda w: 1.0 - abs(w - 0.3)  # noqa: E731
    gm = grid_frame({("a", "thread"): peak, ("b", "thread"): peak})
    c = choose_fusion_weight(gm, model="m", dim=8)
    assert isinstance(c, FusionChoice) and c.model == "m" and c.dim == 8
    assert c.global_weight == pytest.approx(0.3)
    # both sets agree -> per-set CV is no better -> global (the simpler) wins
    assert c.scope == "global"
    # a frame without eval_set: every set is keyed with eval_set ""
    assert c.weights == {("", "a", "thread"): pytest.approx(0.3), ("", "b", "thread"): pytest.approx(0.3)}
    assert c.dev_mrr10_global == pytest.approx(1.0) and c.dev_mrr10_per_set == pytest.approx(1.0)
    assert c.n_dev_queries == 12
    assert c.weight_for("", "unseen", "thread") == pytest.approx(0.3)


def test_global_pools_queries_so_each_counts_once():
    # set a: 9 queries best at 0.2; set b: 1 query best at 0.9 -> pooled mean best at 0.2
    rows = []
    for i in range(9):
        rows += [("a", "t", f"a{i}", w, 1.0 if w == 0.2 else 0.0) for w in WEIGHT_GRID]
    rows += [("b", "t", "b0", w, 1.0 if w == 0.9 else 0.0) for w in WEIGHT_GRID]
    gm = pd.DataFrame(rows, columns=["source", "task", "record_id", "weight", "mrr@10"])
    c = choose_fusion_weight(gm, model="m", dim=4)
    assert c.global_weight == pytest.approx(0.2)


def test_per_set_wins_when_sets_need_opposite_weights():
    only_bm25 = lambda w: 1.0 - w  # noqa: E731
    only_dense = lambda w: w  # noqa: E731
    gm = grid_frame({("irc", "thread"): only_bm25, ("slack", "thread"): only_dense}, n_per_set=8)
    c = choose_fusion_weight(gm, model="m", dim=8)
    assert c.scope == "per_set"
    assert c.weights == {("", "irc", "thread"): 0.0, ("", "slack", "thread"): 1.0}
    assert c.weight_for("", "irc", "thread") == 0.0 and c.weight_for("", "slack", "thread") == 1.0
    # pooled, every weight scores 0.5 -> tie -> the weight closest to 0.5
    assert c.global_weight == 0.5 and c.weight_for("", "other", "x") == 0.5
    assert c.dev_mrr10_per_set == pytest.approx(1.0) and c.dev_mrr10_global == pytest.approx(0.5)
    frame = c.to_frame(extra_sets=[("", "other", "x")])
    assert list(frame.columns) == list(FUSION_COLUMNS)
    assert frame.set_index(["eval_set", "source", "task"])["weight"].to_dict() == {
        ("", "irc", "thread"): 0.0, ("", "slack", "thread"): 1.0, ("", "other", "x"): 0.5
    }
    assert frame["on_dev"].tolist() == [True, True, False]


def test_same_source_task_under_two_eval_sets_gets_its_own_weights():
    only_bm25 = lambda w: 1.0 - w  # noqa: E731
    only_dense = lambda w: w  # noqa: E731
    plain, visible = "threadembed", "threadembed-names_visible"
    gm = grid_frame({(plain, "irc", "thread"): only_bm25, (visible, "irc", "thread"): only_dense}, n_per_set=8)
    c = choose_fusion_weight(gm, model="m", dim=8)
    # one (source, task), two eval protocols: two sets, each with the weight it needs
    assert c.scope == "per_set"
    assert c.weights == {(plain, "irc", "thread"): 0.0, (visible, "irc", "thread"): 1.0}
    assert c.weight_for(plain, "irc", "thread") == 0.0 and c.weight_for(visible, "irc", "thread") == 1.0
    assert c.weight_for("threadembed-other", "irc", "thread") == c.global_weight == 0.5
    assert c.dev_mrr10_per_set == pytest.approx(1.0) and c.dev_mrr10_global == pytest.approx(0.5)
    frame = c.to_frame(extra_sets=[(plain, "irc", "thread"), ("threadembed-other", "irc", "thread")])
    assert frame[["eval_set", "weight", "on_dev"]].values.tolist() == [
        [plain, 0.0, True], [visible, 1.0, True], ["threadembed-other", 0.5, False]
    ]
    # tune_fusion tells the two apart too (same source, task and query ids, different eval_set)
    es = pd.concat([random_eval_set(10, 5, seed=1, eval_set=plain, source="irc"),
                    random_eval_set(10, 5, seed=1, eval_set=visible, source="irc")])
    sets = prepare_sets(es)
    scores = pool_scores(sets, {"dense": HashEmbedder("dense", max_dim=8)}, [8])
    choice, grid = tune_fusion(sets, scores.bm25, scores.dense[("dense", 8)], model="dense", dim=8)
    assert set(choice.weights) == {(plain, "irc", "thread"), (visible, "irc", "thread")}
    assert choice.n_dev_queries == 20 and set(grid["eval_set"]) == {plain, visible}


def test_tie_breaking_between_grid_weights():
    flat = grid_frame({("a", "t"): lambda w: 0.7})
    assert choose_fusion_weight(flat, model="m", dim=1).global_weight == 0.5
    # 0.4 and 0.6 tie for best, equally close to 0.5 -> the smaller
    two = grid_frame({("a", "t"): lambda w: 1.0 if w in (0.4, 0.6) else 0.0})
    assert choose_fusion_weight(two, model="m", dim=1).global_weight == 0.4
    # 0.1 and 0.8 tie -> 0.8 is closer to 0.5
    far = grid_frame({("a", "t"): lambda w: 1.0 if w in (0.1, 0.8) else 0.0})
    assert choose_fusion_weight(far, model="m", dim=1).global_weight == 0.8


def test_choose_is_deterministic_and_order_independent():
    rng = np.random.default_rng(1)
    rows = [(s, "t", f"{s}{i}", w, float(rng.random())) for s in ("a", "b", "c") for i in range(15) for w in WEIGHT_GRID]
    gm = pd.DataFrame(rows, columns=["source", "task", "record_id", "weight", "mrr@10"])
    first = choose_fusion_weight(gm, model="m", dim=2, seed=3)
    assert choose_fusion_weight(gm, model="m", dim=2, seed=3) == first
    shuffled = gm.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert choose_fusion_weight(shuffled, model="m", dim=2, seed=3) == first


def test_choose_rejects_bad_input():
    gm = grid_frame({("a", "t"): lambda w: w})
    with pytest.raises(ValueError):
        choose_fusion_weight(gm.iloc[0:0], model="m", dim=1)
    with pytest.raises(ValueError, match="missing columns"):
        choose_fusion_weight(gm.drop(columns=["weight"]), model="m", dim=1)
    with pytest.raises(ValueError, match="every weight"):
        choose_fusion_weight(gm.iloc[1:], model="m", dim=1)
    one = gm[gm["record_id"] == gm["record_id"].iloc[0]]
    c = choose_fusion_weight(one, model="m", dim=1)  # a single dev query: no CV, global
    assert c.scope == "global" and c.global_weight == 1.0 and np.isnan(c.dev_mrr10_global)


# --------------------------------------------------------------------------- tune_fusion


def test_tune_fusion_matches_hand_metrics():
    es = pd.concat([random_eval_set(15, 6, seed=10, source="a"), random_eval_set(12, 5, seed=11, source="b")])
    sets = prepare_sets(es)
    emb = HashEmbedder("dense", max_dim=8)
    scores = pool_scores(sets, {"dense": emb}, [8])
    choice, grid = tune_fusion(sets, scores.bm25, scores.dense[("dense", 8)], model="dense", dim=8)
    assert len(grid) == 27 * len(WEIGHT_GRID)
    assert choice.n_dev_queries == 27 and set(choice.weights) == {("threadembed", "a", "thread"), ("threadembed", "b", "thread")}
    rs = sets[0]
    for i in (0, 4):
        for w in (0.0, 0.35, 1.0):
            want = query_metrics(convex_fuse(scores.bm25[rs.key][i], scores.dense[("dense", 8)][rs.key][i], w), rs.relevant[i], rs.n_relevant[i])
            got = grid[(grid["record_id"] == rs.query_ids[i]) & (grid["source"] == rs.source) & (grid["weight"] == w)]["mrr@10"]
            assert got.item() == pytest.approx(want["mrr@10"])
    # the same as choosing on the grid frame directly; sequences aligned with the sets work too
    assert choose_fusion_weight(grid, model="dense", dim=8) == choice
    aligned = [scores.bm25[rs.key] for rs in sets], [scores.dense[("dense", 8)][rs.key] for rs in sets]
    assert tune_fusion(sets, *aligned, model="dense", dim=8)[0] == choice


def test_tune_fusion_on_large_dev_sets():
    rng = np.random.default_rng(0)
    sets, bm, de = [], [], []
    for k in range(3):
        n_q, n_d, pool = 1000, 2000, 50
        pools = tuple(rng.choice(n_d, size=pool, replace=False) for _ in range(n_q))
        relevant = tuple(np.eye(1, pool, 0, dtype=bool)[0] for _ in range(n_q))
        sets.append(RetrievalSet("dev", f"s{k}", "thread", tuple(f"q{i}" for i in range(n_q)), ("",) * n_q,
                                 tuple(f"d{j}" for j in range(n_d)), ("",) * n_d, pools, relevant, (1,) * n_q))
        bm.append([rng.exponential(size=pool) for _ in range(n_q)])
        de.append([rng.normal(size=pool) for _ in range(n_q)])
    choice, grid = tune_fusion(sets, bm, de, model="m", dim=8)
    assert choice.n_dev_queries == 3000 and len(grid) == 3000 * 21


# --------------------------------------------------------------------------- rank_retrieval / run_evaluation


def _choice(model: str, dim: int, weight: float, weights=None) -> FusionChoice:
    return FusionChoice(model=model, dim=dim, scope="per_set" if weights else "global", weights=weights or {},
                        global_weight=weight, dev_mrr10_global=0.5, dev_mrr10_per_set=0.5, n_dev_queries=10)


def test_rank_retrieval_emits_rrf_and_hybrid_rows():
    es = random_eval_set(14, 6, seed=3)
    emb = HashEmbedder("dense", max_dim=8)
    pq = rank_retrieval(es, {"dense": emb}, dims=[8, 4], hybrids=["dense"], fusion={("dense", 8): _choice("dense", 8, 0.4)})
    dims_by_model = pq.groupby("model")["dim"].agg(lambda d: sorted(set(d))).to_dict()
    # hybrid: only at the dim with a FusionChoice; rrf: at every dim
    assert dims_by_model == {"dense": [4, 8], "rrf:dense": [4, 8], "hybrid:dense": [8], BM25_MODEL_NAME: [4, 8]}
    (rs,) = prepare_sets(es)
    scores = pool_scores([rs], {"dense": emb}, [8])
    for i in (0, 7):
        want = query_metrics(convex_fuse(scores.bm25[rs.key][i], scores.dense[("dense", 8)][rs.key][i], 0.4), rs.relevant[i], rs.n_relevant[i])
        got = pq[(pq["model"] == "hybrid:dense") & (pq["record_id"] == rs.query_ids[i])].iloc[0]
        for name in (*METRIC_NAMES, "first_relevant_rank"):
            assert got[name] == pytest.approx(want[name]), name
    # weight 0 / 1 reproduce the BM25 / dense rows (z-scoring is monotone)
    cols = ["record_id", *METRIC_NAMES, "first_relevant_rank"]
    for w, ref in ((0.0, BM25_MODEL_NAME), (1.0, "dense")):
        pw = rank_retrieval(es, {"dense": emb}, dims=[8], hybrids=["dense"], fusion={("dense", 8): _choice("dense", 8, w)})
        a = pw[pw["model"] == "hybrid:dense"][cols].reset_index(drop=True)
        b = pw[pw["model"] == ref][cols].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b)
    # no choice at all -> no hybrid: rows
    none = rank_retrieval(es, {"dense": emb}, dims=[8], hybrids=["dense"])
    assert set(none["model"]) == {"dense", "rrf:dense", BM25_MODEL_NAME}


def test_rank_retrieval_uses_per_set_weight():
    es = pd.concat([random_eval_set(10, 5, seed=1, source="a"), random_eval_set(10, 5, seed=2, source="b")])
    emb = HashEmbedder("dense", max_dim=8)
    es = pd.concat([es, random_eval_set(10, 5, seed=1, eval_set="threadembed-names_visible", source="a")])
    choice = _choice("dense", 8, 0.5, weights={
        ("threadembed", "a", "thread"): 0.0, ("threadembed", "b", "thread"): 1.0, ("threadembed-names_visible", "a", "thread"): 1.0,
    })
    pq = rank_retrieval(es, {"dense": emb}, dims=[8], hybrids=["dense"], fusion={("dense", 8): choice})
    cols = ["record_id", *METRIC_NAMES]
    # the same (source, task) under another eval_set uses that set's own weight
    for eval_set, source, ref in (("threadembed", "a", BM25_MODEL_NAME), ("threadembed", "b", "dense"),
                                  ("threadembed-names_visible", "a", "dense")):
        g = pq[(pq["eval_set"] == eval_set) & (pq["source"] == source)]
        assert len(g[g["model"] == "hybrid:dense"]) == 10
        pd.testing.assert_frame_equal(
            g[g["model"] == "hybrid:dense"][cols].reset_index(drop=True), g[g["model"] == ref][cols].reset_index(drop=True)
        )


def _dev_and_test():
    test = pd.concat([random_eval_set(12, 6, seed=20, source="a"), random_eval_set(10, 6, seed=21, source="b")])
    # dev sets carry the same eval_set (protocol) as the test sets they tune the weights for
    dev = pd.concat([random_eval_set(14, 6, seed=30, source="a"), random_eval_set(9, 6, seed=31, source="b")])
    # distinct ids/texts for the dev queries, so leaks would be visible
    dev = dev.assign(
        record_id="dev-" + dev["record_id"],
        candidate_ids=dev["candidate_ids"].map(lambda c: [f"dev-{x}" for x in c]),
        relevant_ids=dev["relevant_ids"].map(lambda c: [f"dev-{x}" for x in c]),
        positive_id=dev["positive_id"].map(lambda p: f"dev-{p}" if isinstance(p, str) else p),
    )
    return dev, test


def test_run_evaluation_tunes_on_dev_and_keeps_dev_out_of_results(tmp_path):
    dev, test = _dev_and_test()
    embedders = {"base": HashEmbedder("base", max_dim=8), "fine_tuned": HashEmbedder("fine_tuned", max_dim=8)}
    out = run_evaluation(test, embedders, dims=[8, 4], hybrid_with=["fine_tuned"], dev_sets=dev, n_resamples=50, log=lambda m: None)
    models = set(out.per_query["model"])
    assert {"hybrid:fine_tuned", "rrf:fine_tuned", "fine_tuned", "base", BM25_MODEL_NAME} == models
    assert NO_DEV_SETS_NOTE not in out.notes
    # dev queries never reach the per-query rows or the summarised results
    assert set(out.per_query["eval_set"]) == {"threadembed"} and set(out.results["eval_set"]) == {"threadembed"}
    assert not out.per_query["record_id"].str.startswith("dev-").any()
    assert len(out.per_query[(out.per_query["model"] == "fine_tuned") & (out.per_query["dim"] == 8)]) == 22
    # one fusion row per (hybrid model, dim, set)
    f = out.fusion
    assert list(f.columns) == list(FUSION_COLUMNS)
    assert sorted(zip(f["model"], f["dim"], f["eval_set"], f["source"], f["task"])) == sorted(
        ("fine_tuned", d, "threadembed", s, "thread") for d in (8, 4) for s in ("a", "b")
    )
    assert f["on_dev"].all()  # every test set was tuned on its own dev set
    assert (f["n_dev_queries"] == 23).all() and f["scope"].isin(["global", "per_set"]).all()
    assert f["weight"].between(0, 1).all()
    # the hybrid rows use the dev-chosen weights
    choice_w = f[(f["dim"] == 8) & (f["source"] == "a")]["weight"].item()
    (rs_a,) = [rs for rs in prepare_sets(test) if rs.source == "a"]
    sc = pool_scores([rs_a], {"fine_tuned": embedders["fine_tuned"]}, [8])
    want = [query_metrics(convex_fuse(b, d, choice_w), rel, n)["mrr@10"]
            for b, d, rel, n in zip(sc.bm25[rs_a.key], sc.dense[("fine_tuned", 8)][rs_a.key], rs_a.relevant, rs_a.n_relevant)]
    got = out.per_query[(out.per_query["model"] == "hybrid:fine_tuned") & (out.per_query["dim"] == 8) & (out.per_query["source"] == "a")]
    np.testing.assert_allclose(got["mrr@10"].to_numpy(), want)

    written = write_report_files(out, tmp_path / "report")
    assert written.files["fusion"].name == "fusion.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(written.files["fusion"]), out.fusion, check_dtype=False)
    assert "## Hybrid weights (chosen on dev)" in written.markdown


def test_run_evaluation_without_dev_sets_has_only_rrf():
    _, test = _dev_and_test()
    embedders = {"fine_tuned": HashEmbedder("fine_tuned", max_dim=8)}
    for dev in (None, test.iloc[0:0]):
        out = run_evaluation(test, embedders, dims=[8], hybrid_with=["fine_tuned"], dev_sets=dev, n_resamples=50, log=lambda m: None)
        assert set(out.per_query["model"]) == {"fine_tuned", "rrf:fine_tuned", BM25_MODEL_NAME}
        assert NO_DEV_SETS_NOTE in out.notes
        assert out.fusion.empty and list(out.fusion.columns) == list(FUSION_COLUMNS)
    # no hybrids requested -> no note
    out = run_evaluation(test, embedders, dims=[8], hybrid_with=[], n_resamples=50, log=lambda m: None)
    assert NO_DEV_SETS_NOTE not in out.notes


def test_each_protocol_chooses_its_own_weights_and_external_sets_fall_back_to_the_default():
    from thread_embed_pipeline.evaluation.fusion import FusionByEvalSet

    lexical = lambda w: 1.0 - w  # noqa: E731  (BM25 alone is best)
    dense = lambda w: w  # noqa: E731
    pseud = choose_fusion_weight(grid_frame({("threadembed", "a", "thread"): dense, ("threadembed", "b", "thread"): dense}), model="m", dim=8)
    names = choose_fusion_weight(grid_frame({("threadembed-names_visible", "a", "thread"): lexical, ("threadembed-names_visible", "b", "thread"): lexical}), model="m", dim=8)
    both = FusionByEvalSet({"threadembed": pseud, "threadembed-names_visible": names}, fallback="threadembed")
    assert both.weight_for("threadembed", "a", "thread") == 1.0
    assert both.weight_for("threadembed-names_visible", "a", "thread") == 0.0
    assert both.weight_for("external_pools", "toy", "pool") == 1.0  # the default protocol's global weight
    frame = both.to_frame(extra_sets=[("external_pools", "toy", "pool")])
    assert set(zip(frame["eval_set"], frame["on_dev"])) == {("threadembed", True), ("threadembed-names_visible", True), ("external_pools", False)}
    with pytest.raises(ValueError, match="fallback"):
        FusionByEvalSet({"threadembed": pseud}, fallback="missing")


def test_recommended_hybrid_is_the_best_on_dev_in_the_given_protocol():
    from thread_embed_pipeline.evaluation.fusion import recommended_hybrid

    rows = [
        # model, dim, scope, eval_set, source, task, weight, dev global, dev per set, n, global weight, on_dev
        ("base", 8, "global", "threadembed", "a", "thread", 0.2, 0.70, 0.69, 10, 0.2, True),
        ("fine_tuned", 8, "per_set", "threadembed", "a", "thread", 0.6, 0.80, 0.85, 10, 0.5, True),
        ("fine_tuned", 4, "global", "threadembed", "a", "thread", 0.6, 0.95, 0.90, 10, 0.6, True),  # a smaller dim: not the full one
        ("base", 8, "global", "threadembed-names_visible", "a", "thread", 0.1, 0.99, 0.99, 10, 0.1, True),
    ]
    fusion = pd.DataFrame(rows, columns=list(FUSION_COLUMNS))
    best = recommended_hybrid(fusion, eval_set="threadembed")
    assert best == {"dense_model": "fine_tuned", "dim": 8, "scope": "per_set", "weight": 0.5, "dev_mrr10": 0.85}
    assert recommended_hybrid(fusion, eval_set="nothing") is None


def test_per_set_weights_must_beat_global_by_more_than_their_standard_error():
    from thread_embed_pipeline.evaluation.fusion import WEIGHT_GRID

    steady = lambda w: 1.0 if w == 0.5 else 0.0  # noqa: E731
    dense_only = lambda w: 1.0 if w == 1.0 else 0.0  # noqa: E731
    # set b is split: 16 queries want w=1, 14 want w=0.5 — a per-set weight of 1 gains a little on
    # average but loses on almost half the queries, so the gain is far below its standard error
    gm = grid_frame({("a", "thread"): steady, ("b", "thread"): [dense_only] * 16 + [steady] * 14}, n_per_set=30)
    c = choose_fusion_weight(gm, model="m", dim=8)
    assert c.dev_mrr10_per_set > c.dev_mrr10_global  # per set is better on average ...
    assert c.scope == "global" and c.global_weight == 0.5  # ... but not better by more than its SE
    assert set(WEIGHT_GRID) >= {0.5, 1.0}
