"""The whole asset graph on a slice of the real mirror with the tiny model, in an ephemeral instance.

Also registers two external eval sets (pool .jsonl and BEIR) and an API model served by a local
fake server with a fake key, and checks the key never reaches the event log or any output file.
"""

import json

import dagster as dg
import pandas as pd
import pytest

from thread_embed_pipeline.orchestration.training_assets import OPTIONAL_INPUT_LOADER
from thread_embed_pipeline.definitions import build_definitions
from thread_embed_pipeline.evaluation.registry import ExternalEvalSet
from thread_embed_pipeline.orchestration.io import ParquetIOManager
from thread_embed_pipeline.orchestration.release_assets import HubResource
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource, EmbeddingApisResource, TrainerResource
from thread_embed_pipeline.sources.catalog import ALL_SOURCES
from thread_embed_pipeline.sources.hf_registry import HF_SOURCES
from thread_embed_pipeline_tests import hf_fixtures
from thread_embed_pipeline_tests.fake_embedding_server import FakeEmbeddingServer
from thread_embed_pipeline_tests.fake_hub import FakeHub
from thread_embed_pipeline.definitions import OPT_IN

FAKE_KEY = "sk-test-DO-NOT-LEAK-4b1d9e"
FAKE_HF_TOKEN = "hf_test_DO_NOT_LEAK_7c2e0a"
RELEASE_REPO = "someone/threadembed-e2e"
DIMS = [32, 16]
METRICS = {"mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10"}


def _run_config(tiny_model_dir) -> dict:
    return {
        "ops": {
            "training_pairs": {"config": {"budget": 96, "streamed_sources": ["ubuntu_irc", "flyte_slack"]}},
            "discord_unveiled__raw": {"config": {"unit_fraction": 1.0}},
            "model": {"config": {"base_model": str(tiny_model_dir), "matryoshka_dims": DIMS, "batch_size": 16, "max_seq_length": 32, "bf16": False}},
            "eval_sets": {"config": {"max_queries_per_set": 20, "pool_size": 20, "protocols": ["pseudonymised", "names_visible"]}},
            "dev_eval_sets": {"config": {"max_queries_per_set": 20, "pool_size": 20, "protocols": ["pseudonymised", "names_visible"]}},
            "eval_report": {"config": {"bootstrap_resamples": 100, "extra_models": ["openai:text-embedding-3-small"]}},
            "release__model": {"config": {"push": True, "repo_id": RELEASE_REPO}},
        }
    }


def _write_external_sets(folder) -> list[ExternalEvalSet]:
    pools = folder / "pools.jsonl"
    lines = [
        {"query": f"alice: how do I fix error {i}?", "corpus": [f"bob: for error {i} run the fixer {i}", *[f"carol: unrelated chat {j}" for j in range(5)]], "relevant_idx": 0, "source": "toy", "conversation_id": f"c{i}"}
        for i in range(4)
    ]
    pools.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    beir = folder / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"answer about topic {i} and widgets {i}"}) for i in range(6)) + "\n")
    (beir / "queries.jsonl").write_text("\n".join(json.dumps({"_id": f"q{i}", "text": f"question on topic {i}"}) for i in range(3)) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)))
    return [ExternalEvalSet("toy_pools", pools), ExternalEvalSet("toy_beir", beir)]


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory, mirror_root, tiny_model_dir):
    """Materialise everything once; returns (instance, resources, run result, base dir, assets, defs, server)."""
    base = tmp_path_factory.mktemp("e2e")
    defs = build_definitions(external_eval_sets=_write_external_sets(base), streamed_sources=tuple(HF_SOURCES))
    # the real mirror's three sources, plus small files in the streamed sources' real layouts
    mirror = base / "mirror"
    mirror.mkdir()
    for folder in mirror_root.iterdir():
        if folder.is_dir():
            (mirror / folder.name).symlink_to(folder, target_is_directory=True)
    hf_fixtures.write_all(mirror)
    with FakeEmbeddingServer() as server, FakeHub(token=FAKE_HF_TOKEN) as hub:
        resources = {
            "io_manager": ParquetIOManager(),
            OPTIONAL_INPUT_LOADER: ParquetIOManager(optional_paths=True),
            "chat_sources": ChatSourcesResource(mirror_dir=str(mirror), max_files_per_folder=1),
            "trainer": TrainerResource(models_dir=str(base / "models"), device="cpu"),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
            "embedding_apis": EmbeddingApisResource(openai_api_key=FAKE_KEY, openai_base_url=server.openai_base_url),
            "hub": HubResource(token=FAKE_HF_TOKEN, endpoint=hub.endpoint),
        }
        instance = dg.DagsterInstance.ephemeral()
        assets = list(defs.assets)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("THREAD_EMBED_DATA_DIR", str(base / "data"))  # the IO manager's files, reports, exports, the embedding cache
            import huggingface_hub.constants

            patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the release goes to the fake Hub on 127.0.0.1
            result = dg.materialize([*assets, *defs.asset_checks], instance=instance, resources=resources, run_config=_run_config(tiny_model_dir))
            yield instance, resources, result, base, assets, server


def test_whole_graph_materialises_and_report_covers_every_model_set_task_dim(graph_run):
    _, _, result, base, _, server = graph_run
    assert result.success
    report = pd.read_parquet(base / "data" / "eval_report.parquet")
    eval_sets = pd.read_parquet(base / "data" / "eval_sets.parquet")
    own = eval_sets.groupby(["eval_set", "source", "task"]).size().index
    assert {"thread", "response", "concurrent_thread"} <= {t for _, _, t in own}
    assert {e for e, _, _ in own} == {"threadembed", "threadembed-names_visible"}  # both protocols
    models = ("base", "fine_tuned", "bm25", "hybrid:base", "hybrid:fine_tuned", "rrf:base", "rrf:fine_tuned", "openai:text-embedding-3-small")
    groups = list(own) + [("toy_pools", "toy", "pool"), ("toy_beir", "toy_beir", "beir")]
    for model in models:
        for eval_set, source, task in groups:
            for dim in DIMS:
                rows = report[(report["model"] == model) & (report["eval_set"] == eval_set) & (report["source"] == source) & (report["task"] == task) & (report["dim"] == dim)]
                assert set(rows["metric"]) == METRICS, (model, eval_set, source, task, dim)
    assert report["value"].between(0, 1).all()
    assert ((report["ci_low"] <= report["value"] + 1e-9) & (report["value"] <= report["ci_high"] + 1e-9)).all()
    assert (report["n"] > 0).all()
    assert server.request_count > 0  # the API model really was called (on the fake server)
    trained_on = set(json.loads((base / "data" / "model.json").read_text())["training_platforms"])
    assert trained_on
    own_rows = report[report["eval_set"].str.startswith("threadembed")]
    assert (own_rows["seen_in_training"] == own_rows["platform"].isin(trained_on)).all()
    assert not report.loc[~report["eval_set"].str.startswith("threadembed"), "seen_in_training"].any()
    assert set(own_rows["protocol"]) == {"pseudonymised", "names_visible"} and report.loc[~report["eval_set"].str.startswith("threadembed"), "protocol"].isna().all()
    # the fine-tuned vectors in int8 / binary indexes: every set and dim, and the dims x precision panel
    for precision in ("int8", "int8+rescore", "binary", "binary+rescore"):
        rows = report[report["model"] == f"fine_tuned@{precision}"]
        assert set(zip(rows["eval_set"], rows["source"], rows["task"])) >= set(own) and set(rows["dim"]) == set(DIMS)
    panel = result.asset_materializations_for_node("eval_report")[0].metadata["dims_x_precision"].value
    assert {"int8", "binary+rescore", "float32"} <= {c.name for c in panel.schema.columns}
    assert "## Embedding precision (dims × precision)" in (base / "data" / "reports" / "eval_report.md").read_text()
    for name in ("irc_disentangle", "slack_dev_chats", "discord_disco"):
        index = result.asset_materializations_for_node(f"search_index__{name}")[0].metadata
        assert index["threads"].value > 0 and index["precision"].value == "float32" and index["model"].value == "model"
        assert (base / "data" / "search" / f"{name}__test.parquet").is_file()
    fusion = pd.read_parquet(base / "data" / "reports" / "fusion.parquet")
    assert set(fusion.loc[fusion["on_dev"], "eval_set"]) == {"threadembed", "threadembed-names_visible"}  # weights chosen on dev

    checkpoint = base / "models" / "thread-embed-minilm"
    assert (checkpoint / "model.safetensors").exists()
    card = (base / "data" / "reports" / "model_card.md").read_text()  # eval_report's folder, not the checkpoint's
    assert "hybrid:fine_tuned" in card and "bm25" in card and "concurrent_thread" in card
    assert (base / "data" / "exports" / "pools" / "threadembed.jsonl").exists()
    for name in ALL_SOURCES:
        meta = result.asset_materializations_for_node(f"{name}__corpus")[0].metadata
        assert meta["read"].value == meta["kept"].value + meta["dropped_total"].value
    training = result.asset_materializations_for_node("training_pairs")[0].metadata
    assert training["streamed/ubuntu_irc"].value.endswith(" pairs") and training["streamed/flyte_slack"].value.endswith(" pairs")
    kept_sources = set(pd.read_parquet(base / "data" / "training_pairs.parquet")["source"])
    assert kept_sources & {"ubuntu_irc", "flyte_slack"}  # the selected streamed sources are sampled from
    assert training["streamed/discord_dialogues"].value == "not selected (materialised, ignored)"
    # the UI pages: the training config and a loss plot on model, the leaderboard inline on eval_report
    model_meta = result.asset_materializations_for_node("model")[0].metadata
    assert model_meta["learning_rate"].value == 5e-5 and model_meta["training_config"].data["max_seq_length"] == model_meta["max_seq_length"].value
    assert model_meta["loss_curve"].value.startswith("![training loss per step](data:image/png;base64,")
    assert isinstance(model_meta["pairs_offered_by_source"], dg.TableMetadataValue)
    report_meta = result.asset_materializations_for_node("eval_report")[0].metadata
    leaderboard = report_meta["leaderboard"]
    assert isinstance(leaderboard, dg.TableMetadataValue) and {"set", "winner", "bm25", "fine_tuned"} <= {c.name for c in leaderboard.schema.columns}
    assert report_meta["skipped_models"].value != report_meta["training_platforms"].value and "platforms seen" not in report_meta["skipped_models"].value
    checks = result.get_asset_check_evaluations()
    blocking = [c for c in checks if c.check_name != "at_least_as_good_as_base_on_dev"]
    assert blocking and all(c.passed for c in blocking)
    (dev_check,) = [c for c in checks if c.check_name == "at_least_as_good_as_base_on_dev"]
    assert dev_check.severity == dg.AssetCheckSeverity.WARN and "mean_delta_mrr@10" in dev_check.metadata
    assert any(k.endswith("/thread") for k in dev_check.metadata)  # scored on dev thread sets


def test_api_key_and_hf_token_never_reach_event_log_or_outputs(graph_run):
    instance, _, result, base, _, _ = graph_run
    records = instance.get_records_for_run(result.run_id).records
    assert records
    for record in records:
        for secret in (FAKE_KEY, FAKE_HF_TOKEN):
            assert secret not in str(record.event_log_entry), record.event_log_entry.dagster_event_type
    for path in base.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert FAKE_KEY.encode() not in data and FAKE_HF_TOKEN.encode() not in data, path


def test_release_folder_loads_and_is_published_with_its_revision(graph_run):
    from sentence_transformers import SentenceTransformer

    _, _, result, base, _, _ = graph_run
    folder = base / "data" / "release" / "model"
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "sentence-transformers" and card.data.eval_results  # model-index from the report
    assert {r.dataset_name.split("(")[1].split(",")[0] for r in card.data.eval_results} == {"pseudonymised", "names visible"}
    assert "## Eval protocols" in card.text and "Recommended retriever" in card.text
    assert not (base / "data" / "reports" / "release_card.md").exists()  # nothing written into eval_report's folder
    model = SentenceTransformer(str(folder), device="cpu")
    assert model.encode(["speaker_1: hello"]).shape == (1, DIMS[0])
    meta = result.asset_materializations_for_node("release__model")[0].metadata
    assert meta["pushed"].value is True and meta["repo_id"].value == RELEASE_REPO
    summary = json.loads((base / "data" / "release" / "model.json").read_text())
    assert summary["revision"] == meta["revision"].value and summary["files"] == meta["files"].value


def test_rematerialising_one_source_reruns_only_its_chain_and_the_merged_assets(graph_run, tiny_model_dir):
    instance, resources, _, _, assets, _ = graph_run
    selection = dg.AssetSelection.assets(dg.AssetKey(["slack_dev_chats", "raw"])).downstream() - OPT_IN  # as refresh_slack_dev_chats
    config = _run_config(tiny_model_dir)
    config["ops"]["eval_report"]["config"]["extra_models"] = []
    config["ops"].pop("discord_unveiled__raw")  # not in the selection
    result = dg.materialize(assets, selection=selection, instance=instance, resources={**resources, "embedding_apis": EmbeddingApisResource()}, run_config=config)
    assert result.success
    materialised = {e.event_specific_data.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialised == {
        "slack_dev_chats/raw", "slack_dev_chats/corpus", "slack_dev_chats/text", "slack_dev_chats/pairs",
        "eval_sets", "dev_eval_sets", "eval_exports", "training_pairs", "model", "model_onnx", "eval_report", "release/model",
        # a new model is a new release: every source's index is re-embedded with it
        "search_index/irc_disentangle", "search_index/slack_dev_chats", "search_index/discord_disco",
    }
