"""Disentanglement metrics against hand-computed cases and the upstream scripts' definitions."""

from __future__ import annotations

import math

import pytest

from thread_embed_pipeline.disentanglement.metrics import clusters_from_links, disentanglement_metrics, file_bootstrap, links_to_annotation, parse_annotation

# gold conversations {10, 11, 13} and {12, 14}; the prediction merges 12 and 14 into the first and splits 13 off
GOLD = {"f": [(10, 10), (11, 10), (12, 12), (13, 11), (14, 12)]}
AUTO = {"f": [(10, 10), (11, 10), (12, 10), (13, 13), (14, 12)]}


def test_clusters_are_connected_components_cut_to_the_scored_lines():
    assert clusters_from_links(GOLD["f"]) == [frozenset({10, 11, 13}), frozenset({12, 14})]
    # a link to a context line (5 < cutoff 10) joins its messages, and the context line itself is not scored
    assert clusters_from_links([(10, 5), (11, 5), (12, 12)], cutoff=10) == [frozenset({10, 11}), frozenset({12})]
    assert clusters_from_links([(5, 10)], cutoff=10) == [frozenset({10})]  # direction does not matter


def test_metrics_of_a_hand_computed_case():
    m = disentanglement_metrics(GOLD, AUTO)
    # links: 3 of 5 predicted are gold ((10,10), (11,10), (14,12)), of 5 gold
    assert (m["link_p"], m["link_r"], m["link_f"]) == pytest.approx((0.6, 0.6, 0.6))
    # contingency: {10,11,13} x {10,11,12,14} = 2, x {13} = 1; {12,14} x {10,11,12,14} = 2
    # one-to-one: {10,11,13}<->{13} and {12,14}<->{10,11,12,14}: (1 + 2) / 5
    assert m["one_to_one"] == pytest.approx(3 / 5)
    # VI = H(U,V) - I(U;V) in bits; H(U,V) from the cells 2,1,2 of 5; I = H(U) + H(V) - H(U,V)
    h_joint = -(2 * 0.4 * math.log2(0.4) + 0.2 * math.log2(0.2))
    h_u = -(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4))
    h_v = -(0.8 * math.log2(0.8) + 0.2 * math.log2(0.2))
    vi = h_joint - (h_u + h_v - h_joint)
    assert m["one_minus_vi"] == pytest.approx(1 - vi / math.log2(5))
    assert m["one_minus_vi"] == pytest.approx(0.4182, abs=1e-4)
    # exact match over multi-message conversations: none of the 2 gold, none of the 1 predicted
    assert (m["exact_p"], m["exact_r"], m["exact_f"]) == (0.0, 0.0, 0.0)
    assert m["messages"] == 5 and m["gold_conversations"] == 2


def test_a_perfect_prediction_scores_one_and_previous_message_scores_like_the_paper_says():
    perfect = disentanglement_metrics(GOLD, GOLD)
    assert all(perfect[k] == pytest.approx(1.0) for k in ("link_f", "one_minus_vi", "one_to_one", "exact_f", "ari", "ami"))
    # "previous message": one conversation of everything; exact match is 0 as in the paper's table
    chain = {"f": [(10, 10)] + [(i, i - 1) for i in range(11, 15)]}
    m = disentanglement_metrics(GOLD, chain)
    assert m["exact_f"] == 0.0 and m["one_to_one"] == pytest.approx(3 / 5)
    # every file pooled: a second, perfectly predicted file raises every score
    both = disentanglement_metrics({**GOLD, "g": [(20, 20), (21, 20)]}, {**AUTO, "g": [(20, 20), (21, 20)]})
    assert both["exact_p"] == pytest.approx(1 / 2) and both["exact_r"] == pytest.approx(1 / 3)
    assert both["link_p"] == pytest.approx(5 / 7)
    with pytest.raises(ValueError, match="no predicted links"):
        disentanglement_metrics({**GOLD, "g": [(20, 20)]}, AUTO)


def test_annotation_format_round_trips_and_reads_upstream_lines():
    text = links_to_annotation(GOLD["f"])
    assert text.splitlines()[:2] == ["10 10 -", "10 11 -"]
    assert parse_annotation(text) == set(GOLD["f"])
    assert parse_annotation("1000 1000 -\n998 1001 -\n") == {(1000, 1000), (1001, 998)}


def test_bootstrap_over_files_brackets_the_pooled_value():
    gold = {f"f{i}": [(10, 10), (11, 10), (12, 12), (13, 11 if i % 2 else 12), (14, 12)] for i in range(6)}
    table = file_bootstrap(gold, {f: AUTO["f"] for f in gold}, n_resamples=50)
    assert set(table["metric"]) >= {"link_f", "one_minus_vi", "exact_f"}
    assert ((table["ci_low"] <= table["value"] + 1e-9) & (table["value"] <= table["ci_high"] + 1e-9)).all()
    assert (table["n_files"] == 6).all()


def test_paired_bootstrap_sees_a_consistent_gain_and_no_gain_against_itself():
    from thread_embed_pipeline.disentanglement.metrics import paired_file_bootstrap

    gold = {f"f{i}": [(10, 10), (11, 10), (12, 11), (13, 13), (14, 13)] for i in range(8)}
    perfect = {f: list(v) for f, v in gold.items()}
    previous = {f: [(s, s - 1) for s, _ in v] for f, v in gold.items()}
    table = paired_file_bootstrap(gold, perfect, previous, n_resamples=100).set_index("metric")
    assert table.loc["link_f", "a"] == 1.0 and table.loc["link_f", "delta"] == pytest.approx(1.0 - table.loc["link_f", "b"])
    assert table.loc["link_f", "ci_excludes_0"] and table.loc["link_f", "p_value"] == 0.0 and table.loc["exact_f", "delta"] > 0
    same = paired_file_bootstrap(gold, previous, previous, n_resamples=50).set_index("metric")
    assert (same["delta"] == 0).all() and not same["ci_excludes_0"].any() and (same["p_value"] == 1.0).all()


def test_per_file_statistics_add_up_to_the_pooled_metrics_of_any_resample():
    from sklearn.metrics import adjusted_rand_score

    from thread_embed_pipeline.disentanglement.metrics import METRICS, _file_clusters, _file_labels, file_statistics, metrics_from_statistics, normalise_links

    gold = {**GOLD, "g": [(20, 20), (21, 20), (22, 22), (23, 21)], "h": [(30, 30), (31, 30)]}
    auto = {**AUTO, "g": [(20, 20), (21, 21), (22, 20), (23, 21)], "h": [(30, 30), (31, 31)]}
    stats = file_statistics(gold, auto).set_index("file")
    pick = ["f", "g", "g", "h"]  # a resample: g drawn twice
    fast = metrics_from_statistics(stats.loc[pick])
    slow = disentanglement_metrics({f"{k}:{f}": gold[f] for k, f in enumerate(pick)}, {f"{k}:{f}": auto[f] for k, f in enumerate(pick)})
    assert all(fast[m] == pytest.approx(slow[m]) for m in METRICS if m != "ami")
    # ARI is scikit-learn's on the pooled labels (clusters of different files are different clusters)
    labels = [(f"{k}/{x}", f"{k}/{y}") for k, f in enumerate(pick) for x, y in zip(*_file_labels(*_file_clusters(normalise_links(gold[f]), normalise_links(auto[f]))))]
    assert fast["ari"] == pytest.approx(adjusted_rand_score([a for a, _ in labels], [b for _, b in labels]))
