"""Your own chat, end to end: a Slack workspace export and a DiscordChatExporter export, declared in a
sources file, go through their own chains (``<name>/upstream → raw → corpus → text → pairs``), into
``training_pairs``, the ``model`` (the tiny test BERT) and ``eval_report`` (rows for their own test
conversations), then ``search_index/<name>``, which the search CLI answers from. Nothing from the exports'
user lists (names, e-mails) or their mentions of people who never post reaches anything the model trains
on or the pipeline publishes. Also: the sources file's rules, and the upstream observation hashing the
export's content."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from thread_embed_pipeline.definitions import OPT_IN, build_definitions
from thread_embed_pipeline.orchestration.automation import observe_source
from thread_embed_pipeline.orchestration.io import ParquetIOManager
from thread_embed_pipeline.orchestration.release_assets import HubResource
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource, EmbeddingApisResource, TrainerResource
from thread_embed_pipeline.orchestration.training_assets import OPTIONAL_INPUT_LOADER
from thread_embed_pipeline.sources.errors import SourceDataError
from thread_embed_pipeline.sources.exports.synthetic import generate_slack_export
from thread_embed_pipeline.sources.user import load_user_sources
from thread_embed_pipeline.text.audit import original_handles

from thread_embed_pipeline_tests.export_helpers import DCE_OUTSIDER, DCE_PEOPLE, write_dce_export

DIMS = [32, 16]


def _declare(folder: Path, body: str) -> Path:
    path = folder / "my_sources.yaml"
    path.write_text(body)
    return path


@pytest.fixture(scope="module")
def own_chat(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("own_chat")
    slack = base / "exports" / "acme_slack"
    generate_slack_export(slack, 2400, channels=3, users=30, posting_share=0.7, per_day=150, seed=3)
    write_dce_export(base / "exports" / "workshop")
    sources = load_user_sources(_declare(base, "sources:\n  - {name: acme, format: slack_export, path: %s}\n  - {name: workshop, format: discord_chat_exporter, path: %s}\n" % (slack, base / "exports" / "workshop")))
    defs = build_definitions(external_eval_sets=[], streamed_sources=(), mirrored_sources=(), user_sources=sources)
    resources = {
        "io_manager": ParquetIOManager(),
        OPTIONAL_INPUT_LOADER: ParquetIOManager(optional_paths=True),
        "chat_sources": ChatSourcesResource(mirror_dir=str(base / "no-mirror")),
        "trainer": TrainerResource(models_dir=str(base / "models"), device="cpu"),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "embedding_apis": EmbeddingApisResource(),
        "hub": HubResource(),
    }
    run_config = {
        "ops": {
            "training_pairs": {"config": {"budget": 96}},
            "model": {"config": {"base_model": str(tiny_model_dir), "matryoshka_dims": DIMS, "batch_size": 16, "max_seq_length": 48, "bf16": False, "time_budget_s": None}},
            "eval_sets": {"config": {"max_queries_per_set": 20, "pool_size": 20}},
            "dev_eval_sets": {"config": {"max_queries_per_set": 20, "pool_size": 20}},
            "eval_report": {"config": {"bootstrap_resamples": 50}},
        }
    }
    selection = dg.AssetSelection.all() - OPT_IN
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THREAD_EMBED_DATA_DIR", str(base / "data"))
        result = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, instance=dg.DagsterInstance.ephemeral(), resources=resources, run_config=run_config)
        yield base, result, defs, sources


def test_each_declared_export_gets_its_own_chain_group_and_refresh_job(own_chat):
    _, _, defs, _ = own_chat
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for name in ("acme", "workshop"):
        assert {f"{name}/{stage}" for stage in ("upstream", "raw", "corpus", "text", "pairs")} | {f"search_index/{name}"} <= keys
        assert defs.resolve_job_def(f"refresh_{name}") is not None
        assert defs.resolve_assets_def(dg.AssetKey([name, "corpus"])).group_names_by_key[dg.AssetKey([name, "corpus"])] == name


def test_the_exports_are_trained_on_evaluated_on_their_test_conversations_and_indexed(own_chat):
    base, result, _, _ = own_chat
    assert result.success
    data = base / "data"
    assert set(pd.read_parquet(data / "training_pairs.parquet")["source"]) == {"acme", "workshop"}
    model = json.loads((data / "model.json").read_text())
    assert model["training_platforms"] == ["discord", "slack"]
    report = pd.read_parquet(data / "eval_report.parquet")
    own = report[report["eval_set"] == "threadembed"]
    for name, platform in (("acme", "slack"), ("workshop", "discord")):
        rows = own[(own["source"] == name) & (own["model"] == "fine_tuned")]
        assert {"thread", "response"} <= set(rows["task"]) and set(rows["platform"]) == {platform}
        assert rows["seen_in_training"].all()
    eval_sets = pd.read_parquet(data / "eval_sets.parquet")
    corpus = pd.read_parquet(data / "corpus" / "acme.parquet")
    test_ids = set(corpus.loc[corpus["split"] == "test", "conversation_id"])
    assert set(eval_sets.loc[eval_sets["source"] == "acme", "conversation_id"]) <= test_ids  # test conversations only
    for name in ("acme", "workshop"):
        index = data / "search" / f"{name}__test.parquet"
        assert index.is_file() and len(pd.read_parquet(index)) > 0


def test_the_search_cli_answers_from_a_user_sources_index(own_chat, capsys):
    from thread_embed_pipeline.search.cli import main

    base, _, _, _ = own_chat
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THREAD_EMBED_DATA_DIR", str(base / "data"))
        assert main(["how do I keep the solder tip temperature right", "--source", "workshop", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "workshop" in out and "speaker_" in out  # threads from the source's index, pseudonymised


def test_raw_metadata_counts_what_the_readers_did_and_the_corpus_accounts_for_every_row(own_chat):
    _, result, _, _ = own_chat
    raw = result.asset_materializations_for_node("acme__raw")[0].metadata
    assert raw["format"].value == "slack_export" and raw["export/threads/replies"].value > 0 and raw["record_type/bot"].value > 0
    corpus = result.asset_materializations_for_node("acme__corpus")[0].metadata
    assert corpus["read"].value == raw["read"].value == corpus["kept"].value + corpus["dropped_total"].value
    assert corpus["dropped/system"].value > 0 and corpus["dropped/bot"].value > 0 and corpus["dropped/deleted"].value > 0


def _published(base: Path) -> list[Path]:
    data = base / "data"
    return [
        *sorted((data / "text").glob("*.parquet")), *sorted((data / "pairs").glob("*.parquet")), data / "training_pairs.parquet",
        *sorted(p for folder in ("exports", "reports", "release", "search") for p in (data / folder).rglob("*") if p.is_file()),
        *sorted(p for p in (base / "models").rglob("*") if p.is_file()),
    ]  # fmt: skip


def test_no_name_e_mail_or_mention_from_the_exports_reaches_what_is_trained_on_or_published(own_chat):
    base, _, _, _ = own_chat
    users = json.loads((base / "exports" / "acme_slack" / "users.json").read_text())
    forbidden = {u["real_name"] for u in users} | {u["name"] for u in users if "." in u["name"]} | {u["profile"].get("email") for u in users if u["profile"].get("email")}
    forbidden |= {n for person in (*DCE_PEOPLE, DCE_OUTSIDER) for n in person}
    forbidden.discard("Deploy Bot")
    assert len(forbidden) > 40
    pattern = re.compile("|".join(sorted((re.escape(f) for f in forbidden), key=len, reverse=True)), re.IGNORECASE)
    corpus_text = " ".join(pd.read_parquet(base / "data" / "corpus" / "workshop.parquet")["author"])
    assert pattern.search(corpus_text)  # the corpus keeps upstream names: the scan can fail
    leaks = {}
    for path in _published(base):
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            text = " ".join(" ".join(map(str, frame[c].dropna())) for c in frame.columns if frame[c].dtype == object)
        else:
            text = path.read_bytes().decode("utf-8", errors="ignore")
        if found := set(pattern.findall(text)):
            leaks[str(path.relative_to(base))] = sorted(found)[:5]
    assert leaks == {}
    texts = [t for name in ("acme", "workshop") for t in pd.read_parquet(base / "data" / "text" / f"{name}.parquet")["text"]]
    assert original_handles(texts) == {}


# --- the sources file ---------------------------------------------------------------------------------


def test_the_sources_file_rules(tmp_path):
    assert load_user_sources(tmp_path / "absent.yaml") == []
    spec = load_user_sources(_declare(tmp_path, "sources:\n  - {name: ops, format: irc_log, path: logs/, train: false}\n"))[0]
    assert (spec.platform, spec.train, spec.linker, spec.predicted_labels) == ("irc", False, "disentangler", True)
    assert spec.path.is_absolute() and spec.path.name == "logs"  # relative paths start at the project root
    linked = load_user_sources(_declare(tmp_path, "sources:\n  - {name: s, format: slack_export, path: x.zip, link_unthreaded: disentangler}\n"))[0]
    assert (linked.linker, linked.predicted_labels) == ("disentangler", False)
    for body, message in (
        ("sources:\n  - {name: acme, format: slack_zip, path: x}\n", r"unknown export format 'slack_zip'; known formats: slack_export"),
        ("sources:\n  - {name: Acme, format: slack_export, path: x}\n", r"name 'Acme' must start with a lowercase letter"),
        ("sources:\n  - {name: a, format: slack_export}\n", r"needs `name`, `format` and `path`"),
        ("sources:\n  - {name: a, format: slack_export, path: x, trian: true}\n", r"unknown keys \['trian'\]"),
        ("sources:\n  - {name: a, format: slack_export, path: x}\n  - {name: a, format: irc_log, path: y}\n", r"the name 'a' is already taken"),
        ("sources:\n  - {name: a, format: slack_export, path: x, link_unthreaded: yes}\n", r"link_unthreaded must be one of"),
        ("sources: {name: a}\n", r"`sources` must be a list"),
        ("sources: [\n", r"not valid YAML"),
    ):
        with pytest.raises(SourceDataError, match=message):
            load_user_sources(_declare(tmp_path, body))
    with pytest.raises(SourceDataError, match=r"the name 'irc_disentangle' is already taken"):
        load_user_sources(_declare(tmp_path, "sources:\n  - {name: irc_disentangle, format: irc_log, path: x}\n"), taken={"irc_disentangle"})


def test_the_upstream_observation_hashes_the_exports_content(tmp_path):
    slack = tmp_path / "slack"
    generate_slack_export(slack, 300, channels=2, users=10, seed=1)
    spec = load_user_sources(_declare(tmp_path, f"sources:\n  - {{name: s, format: slack_export, path: {slack}}}\n"))[0]
    resource = ChatSourcesResource(mirror_dir=None)
    first, meta = observe_source(spec, resource)
    day = sorted(slack.rglob("20*.json"))[0]
    day.touch()  # a re-export that changes nothing but the file times
    assert observe_source(spec, resource)[0] == first and meta["files"] == len(list(slack.rglob("*.json")))
    day.write_text(day.read_text().replace("the", "teh", 1))  # one message edited
    assert observe_source(spec, resource)[0] != first
    missing = load_user_sources(_declare(tmp_path, f"sources:\n  - {{name: m, format: slack_export, path: {tmp_path / 'gone.zip'}}}\n"))[0]
    assert observe_source(missing, resource)[0].startswith("missing:")


def test_an_irc_log_source_is_linked_by_the_disentangler_in_its_corpus_stage(tmp_path):
    """An IRC log has no thread labels: the corpus stage links its lines with the features-only scorer
    (``disentanglement/features_only``, here a small one fitted on synthetic logs and saved where that
    asset saves it), so its conversations have several messages and its metadata counts the links."""
    from thread_embed_pipeline.disentanglement.logs import channel_logs
    from thread_embed_pipeline.disentanglement.features import file_features, gold_links
    from thread_embed_pipeline.disentanglement.scorers import fit_scorer
    from thread_embed_pipeline.orchestration.keys import corpus_key, raw_key, text_key

    from thread_embed_pipeline_tests.export_helpers import FIXTURES
    from thread_embed_pipeline_tests.disentanglement.test_disentangle import SPLITS, synthetic_raw

    logs = channel_logs(synthetic_raw(SPLITS))
    feats = file_features(logs, None, [], window=20)
    gold = {f: gold_links(g) for f, g in logs.groupby("file")}
    train = pd.concat([feats[f].frame for f in ("t1", "t2", "t3")], ignore_index=True)
    fit_scorer(train, {"d1": feats["d1"]}, {"d1": gold["d1"]}, dims=[], models=("logreg:0.1",)).save(tmp_path / "data" / "disentanglement" / "features_only")
    sources = load_user_sources(_declare(tmp_path, f"sources:\n  - {{name: ops, format: irc_log, path: {FIXTURES / 'irc_log'}}}\n"))
    defs = build_definitions(external_eval_sets=[], streamed_sources=(), mirrored_sources=("irc_disentangle",), user_sources=sources)
    assert dg.AssetKey(["disentanglement", "features_only"]) in defs.resolve_job_def("thread_embed_job").asset_layer.selected_asset_keys  # built before the corpus
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
        result = dg.materialize(list(defs.assets), selection=[raw_key("ops"), corpus_key("ops"), text_key("ops")], instance=dg.DagsterInstance.ephemeral(),
                                resources={**defs.resources, "io_manager": ParquetIOManager(), "chat_sources": ChatSourcesResource(mirror_dir=None)})  # fmt: skip
    assert result.success
    meta = result.asset_materializations_for_node("ops__corpus")[0].metadata
    assert meta["linked/predicted"].value > 0 and meta["linked/predicted"].value == meta["linked/self"].value + meta["linked/parent"].value
    corpus = pd.read_parquet(tmp_path / "data" / "corpus" / "ops.parquet")
    assert corpus.groupby("conversation_id").size().max() > 1 and corpus["reply_to"].notna().any()
    with pytest.raises(ValueError, match=r"linked by the disentangler, which is trained on irc_disentangle"):
        build_definitions(external_eval_sets=[], streamed_sources=(), mirrored_sources=(), user_sources=sources)
