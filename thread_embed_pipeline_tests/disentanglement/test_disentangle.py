"""The disentangler: pseudonymised channel logs, candidate features, the scorer, the assets and the CLI."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.disentanglement.scorers import DisentangleScorer, fit_scorer
from thread_embed_pipeline.disentanglement.features import candidate_features, file_features, gold_links
from thread_embed_pipeline.disentanglement.logs import channel_logs, parse_irc_log
from thread_embed_pipeline.disentanglement.cli import main
from thread_embed_pipeline.disentanglement.metrics import disentanglement_metrics, parse_annotation

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]
TOPICS = [["grub", "boot", "install", "disk"], ["wifi", "driver", "kernel", "card"], ["apt", "lock", "package", "mirror"]]


def synthetic_raw(files: dict[str, str], *, context: int = 6, messages: int = 40, seed: int = 0) -> pd.DataFrame:
    """IRC-like files: three interleaved conversations, each between two people who address each
    other by name and share a topic; gold links to the conversation's previous message."""
    rng = np.random.default_rng(seed)
    rows = []
    for file, split in files.items():
        last: dict[int, int] = {}
        for line in range(context + messages):
            conv = int(rng.integers(0, 3))
            a, b = NAMES[2 * conv + (line % 2)], NAMES[2 * conv + 1 - (line % 2)]
            words = " ".join(rng.choice(TOPICS[conv], 3))
            text = f"{b}: {words}" if conv in last and rng.random() < 0.7 else words
            parent = last.get(conv, line)
            scored = line >= context
            rows.append({
                "source": "irc_disentangle", "file": f"data/{split}/{file}.ascii.txt", "line": line + 1, "split_hint": split, "channel": "ubuntu",
                "message_id": line, "timestamp": pd.Timestamp("2010-01-01 10:00") + pd.Timedelta(minutes=line), "author": a, "text": text,
                "conversation_key": None, "parent_ids": [parent] if scored else [], "record_type": "message" if scored else "context",
            })
            last[conv] = line
    return pd.DataFrame(rows)


SPLITS = {"t1": "train", "t2": "train", "t3": "train", "d1": "dev", "e1": "test", "e2": "test"}


def test_channel_logs_pseudonymise_speakers_and_mentions_and_keep_every_line():
    raw = synthetic_raw({"f": "test"})
    logs = channel_logs(raw)
    assert len(logs) == len(raw) and (logs["line"].to_numpy() == np.arange(len(raw))).all()
    blob = " ".join(logs["speaker"].astype(str)) + " " + " ".join(logs["text"].astype(str))
    assert not any(n in blob for n in NAMES)  # names gone, from speakers and from mentions
    assert logs["speaker"].str.fullmatch(r"speaker_\d+").all()
    assert logs["scored"].sum() == 40 and logs.loc[logs["scored"], "gold"].map(len).eq(1).all()


def test_candidate_features_read_the_log_as_the_paper_describes():
    log = channel_logs(synthetic_raw({"f": "test"}, context=2, messages=6)).reset_index(drop=True)
    feats = candidate_features(log, window=3)
    assert set(feats["line"]) == set(range(2, 8))
    assert feats.groupby("line").size().to_dict() == {2: 3, 3: 4, 4: 4, 5: 4, 6: 4, 7: 4}  # itself + up to 3 earlier
    self_rows = feats[feats["self"] == 1]
    assert (self_rows["line"] == self_rows["candidate"]).all() and (self_rows["log_distance"] == 0).all()
    for r in feats[feats["self"] == 0].itertuples():
        a, b = log.iloc[r.line], log.iloc[r.candidate]
        assert r.same_speaker == float(a["speaker"] == b["speaker"])
        assert r.mentions_candidate == float(f"{b['speaker']}:" in a["text"] or f"{b['speaker']} " in a["text"] + " ")
    gold = {(line, t) for line, t in gold_links(log)}
    assert {(int(a), int(b)) for a, b in feats.loc[feats["label"], ["line", "candidate"]].to_numpy()} == gold
    with pytest.raises(ValueError, match="numbered 0..n-1"):
        candidate_features(log.iloc[1:])


HISTORY_LOG = """[10:00] <alice> hi all, grub fails to boot
[10:01] <bob> alice: which grub version
[10:02] <carol> my wifi driver is broken
[10:03] <alice> bob: grub 2 on ubuntu
[10:05] <dave> carol: which card?
[10:06] <bob> alice: reinstall grub then
"""


def test_history_and_overlap_features_read_who_spoke_to_whom_before_the_message():
    log = channel_logs(parse_irc_log(HISTORY_LOG))
    feats = candidate_features(log, window=5).set_index(["line", "candidate"])
    bob_to_alice = feats.loc[(5, 3)]  # bob answers alice's line 3
    assert bob_to_alice["message_silent_since"] == 1 and bob_to_alice["candidate_latest"] == 1  # neither spoke in between
    assert bob_to_alice["message_addressed_before"] == 1  # bob addressed alice on line 1
    assert bob_to_alice["message_addressed_between"] == 0 and bob_to_alice["candidate_addressed_before"] == 0
    assert bob_to_alice["overlap_one"] == 1 and bob_to_alice["overlap_of_message"] == pytest.approx(1 / 4)  # "grub" of speaker_k, reinstall, grub, then
    own = feats.loc[(5, 1)]  # bob's own earlier line
    assert own["message_silent_since"] == 0 and own["candidate_latest"] == 0 and own["same_target"] == 1  # both address alice
    assert feats.loc[(5, 4), "candidate_question"] == 1 and feats.loc[(5, 4), "candidate_addressed_between"] == 0
    assert feats.loc[(4, 2), "message_addressed_before"] == 0 and feats.loc[(3, 1), "candidate_addressed_before"] == 0
    assert feats.loc[(3, 1), "candidate_mentions"] == 1  # bob's line 1 addresses alice, who writes line 3
    assert own["message_prev_distance"] == pytest.approx(np.log1p(4)) and own["message_prev_targeted"] == 1
    self_row = feats.loc[(5, 5)]
    assert self_row[["message_silent_since", "candidate_latest", "same_target", "overlap_none", "candidate_question"]].eq(0).all()
    assert self_row["message_prev_distance"] == own["message_prev_distance"]  # a message feature: the same on every row


def test_the_scorer_learns_the_links_and_beats_previous_message():
    logs = channel_logs(synthetic_raw(SPLITS))
    feats = file_features(logs, None, [], window=20)
    gold = {f: gold_links(g) for f, g in logs.groupby("file")}
    train = pd.concat([feats[f].frame for f in ("t1", "t2", "t3")], ignore_index=True)
    scorer = fit_scorer(train, {"d1": feats["d1"]}, {"d1": gold["d1"]}, dims=[], models=("logreg:0.1", "mlp:8", "listwise:8"))
    assert scorer.chosen["scorer"] in ("logreg:0.1", "mlp:8", "listwise:8") and set(scorer.chosen["tried"]) == {"logreg:0.1", "mlp:8", "listwise:8"}
    with pytest.raises(ValueError, match="expected 'logreg:<C>'"):
        fit_scorer(train, {}, {}, dims=[], models=("forest:3",))
    test = {f: gold[f] for f in ("e1", "e2")}
    ours = disentanglement_metrics(test, {f: scorer.links(feats[f]) for f in test})
    previous = disentanglement_metrics(test, {f: [(i, i - 1) for i, _ in gold[f]] for f in test})
    assert ours["link_f"] > previous["link_f"] + 0.2 and ours["exact_f"] >= previous["exact_f"]
    listwise = fit_scorer(train, {"d1": feats["d1"]}, {"d1": gold["d1"]}, dims=[], models=("listwise:8",))
    assert disentanglement_metrics(test, {f: listwise.links(feats[f]) for f in test})["link_f"] > previous["link_f"] + 0.2


def test_the_listwise_scorer_trains_a_softmax_over_each_messages_candidates():
    from thread_embed_pipeline.disentanglement.scorers import ListwiseMLP, make_classifier

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(300), 5)
    x = rng.normal(size=(len(groups), 3))
    gold_pos = rng.integers(0, 5, 300)
    y = np.zeros(len(groups), dtype=bool)
    y[np.arange(300) * 5 + gold_pos] = True
    x[y, 0] += 2.0  # the gold candidate stands out on feature 0, relative to its message's others
    x[:, 0] += np.repeat(rng.normal(scale=3.0, size=300), 5)  # plus a per-message offset
    model = ListwiseMLP((8,), epochs=30, seed=0).fit(x, y, groups)
    picked = model.decision_function(x).reshape(300, 5).argmax(1)
    best_rule = x[:, 0].reshape(300, 5).argmax(1)  # the rule that made the data
    assert (picked == gold_pos).mean() >= (best_rule == gold_pos).mean() - 0.03 > 0.5
    assert (picked == gold_pos).mean() > (x[:, 1].reshape(300, 5).argmax(1) == gold_pos).mean() + 0.3  # not a noise feature
    trio = ListwiseMLP((8,), members=3, epochs=30, seed=0).fit(x, y, groups)
    assert len(trio.nets_) == 3 and trio.nets_[0][0][0].tolist() == model.nets_[0][0][0].tolist()  # member 0 is the seed-0 net
    singles = [ListwiseMLP((8,), epochs=30, seed=k).fit(x, y, groups).decision_function(x) for k in range(3)]
    assert np.allclose(trio.decision_function(x), np.mean(singles, axis=0))  # the ensemble averages its members' scores
    assert make_classifier("listwise:8x4*3").steps[-1][1].get_params()["members"] == 3
    with pytest.raises(ValueError, match="needs groups"):
        ListwiseMLP().fit(x, y)
    with pytest.raises(ValueError, match="no message has a gold link"):
        ListwiseMLP().fit(x, np.zeros_like(y), groups)


def test_embedding_features_come_from_the_model_at_each_dim(tiny_model_dir):
    from thread_embed_pipeline.evaluation.embedders import load_local_embedder

    logs = channel_logs(synthetic_raw({"e1": "test"}, context=4, messages=10))
    embedder = load_local_embedder(str(tiny_model_dir), name="tiny", device="cpu")
    calls = []

    def embed(texts, dim):
        calls.append((len(texts), dim))
        return embedder.embed(texts, dim)

    candidates = file_features(logs, embed, [32, 16], window=3)["e1"]
    feats = candidates.frame
    assert candidates.embeddings.shape == (14, 32) and not candidates.embeddings[0].any()  # line 0 is never a candidate
    assert "conversation_cos" in feats.columns
    assert calls == [(13, 32), (13, 16)]  # lines from (first scored - window) on, once per dim
    assert {"cos@32", "cos_rank@32", "cos@16", "cos_rank@16"} <= set(feats.columns)
    assert feats.loc[feats["self"] == 1, "cos@32"].eq(0).all() and feats.loc[feats["self"] == 0, "cos@32"].abs().gt(0).all()


def test_parse_irc_log_reads_the_user_form_and_names_a_bad_line():
    raw = parse_irc_log("[10:01] <alice> grub fails\n=== bob joined\n[10:02] <bob> alice: reinstall grub\n[00:01] <alice> thanks\n")
    assert list(raw["record_type"]) == ["message", "system", "message", "message"]
    assert raw["timestamp"].iloc[3] > raw["timestamp"].iloc[2]  # past midnight
    with pytest.raises(ValueError, match="line 2 is not"):
        parse_irc_log("[10:01] <alice> hi\nnot a log line\n")


def _materialise(variants, raw, tmp_path, monkeypatch, model=None):
    from thread_embed_pipeline.orchestration.disentangle_assets import VARIANTS, build_disentanglement_asset, disentanglement_comparison
    from thread_embed_pipeline.orchestration.keys import raw_key
    from thread_embed_pipeline.orchestration.resources import TrainerResource

    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))

    @dg.asset(key=raw_key("irc_disentangle"))
    def raw_asset():
        return raw

    assets = [raw_asset, *[build_disentanglement_asset(v) for v in variants]]
    if set(variants) == set(VARIANTS):
        assets.append(disentanglement_comparison)
    if model is not None:
        @dg.asset(name="model")
        def model_asset():
            return model

        assets.append(model_asset)
    config = {"ops": {f"disentanglement__{v}": {"config": {"dims": [32, 16], "window": 20, "bootstrap_resamples": 20, "scorers": ["logreg:1.0", "mlp:8", "listwise:8"]}} for v in variants}}
    if set(variants) == set(VARIANTS):
        config["ops"]["disentanglement__comparison"] = {"config": {"bootstrap_resamples": 30}}
    return dg.materialize(assets, resources={"io_manager": dg.mem_io_manager, "trainer": TrainerResource()}, run_config=config)


def test_assets_write_upstream_links_metrics_and_a_scorer_the_cli_uses(tiny_model_dir, tmp_path, monkeypatch, capsys):
    raw = synthetic_raw(SPLITS)
    model = {"checkpoint_dir": str(tiny_model_dir), "base_model": str(tiny_model_dir)}
    result = _materialise(["features_only", "base", "fine_tuned"], raw, tmp_path, monkeypatch, model=model)
    assert result.success
    comparison = result.output_for_node("disentanglement__comparison")
    assert set(zip(comparison["system_a"], comparison["system_b"])) == {("fine_tuned", "features_only"), ("base", "features_only"), ("fine_tuned", "base")}
    fine = comparison[(comparison["system_a"] == "fine_tuned") & (comparison["system_b"] == "features_only")].set_index("metric")
    own = pd.read_parquet(tmp_path / "data" / "disentanglement" / "fine_tuned" / "metrics.parquet").set_index("metric")["value"]
    assert fine.loc["exact_f", "a"] == pytest.approx(own["exact_f"])  # scored from the links the variant wrote
    assert (fine["ci_low"] <= fine["delta"] + 1e-9).all() and (fine["delta"] <= fine["ci_high"] + 1e-9).all()
    for variant in ("features_only", "fine_tuned"):
        meta = result.asset_materializations_for_node(f"disentanglement__{variant}")[0].metadata
        assert meta["test_messages"].value == 80 and 0 <= meta["conversation_f"].value <= 100
        folder = tmp_path / "data" / "disentanglement" / variant
        links = parse_annotation((folder / "e1.annotation.txt").read_text())
        assert {s for s, _ in links} == set(range(6, 46))  # one link per scored line, upstream numbering
        metrics = pd.read_parquet(folder / "metrics.parquet")
        assert {"link_f", "one_minus_vi", "one_to_one", "exact_f", "ari", "ami"} <= set(metrics["metric"])
        assert ((metrics["ci_low"] <= metrics["value"] + 1e-9) & (metrics["value"] <= metrics["ci_high"] + 1e-9)).all()
    assert json.loads((tmp_path / "data" / "disentanglement" / "fine_tuned" / "scorer.json").read_text())["dims"] == [32, 16]
    assert DisentangleScorer.load(tmp_path / "data" / "disentanglement" / "features_only").dims == []
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "scorer.joblib").write_bytes((tmp_path / "data" / "disentanglement" / "features_only" / "scorer.joblib").read_bytes())
    meta = json.loads((tmp_path / "data" / "disentanglement" / "features_only" / "scorer.json").read_text())
    (stale / "scorer.json").write_text(json.dumps({**meta, "features": meta["features"][:12]}))  # an older version's feature list
    with pytest.raises(ValueError, match="rematerialise"):
        DisentangleScorer.load(stale)

    log = tmp_path / "log.txt"
    log.write_text("[10:01] <alice> grub boot fails\n[10:01] <carol> wifi driver broken\n[10:02] <bob> alice: reinstall grub boot\n[10:03] <dave> carol: wifi kernel card\n")
    capsys.readouterr()
    assert main([str(log)]) == 0  # default: data/disentanglement/fine_tuned, with the model it was trained with
    threads = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line for t in threads for line in t["lines"]) == [1, 2, 3, 4]
    assert all("alice" not in m and "bob" not in m for t in threads for m in t["messages"])  # pseudonymised
    assert main([str(log), "--scorer", str(tmp_path / "data" / "disentanglement" / "features_only")]) == 0
    with pytest.raises(SystemExit):
        main([str(log), "--scorer", str(tmp_path / "nowhere")])
