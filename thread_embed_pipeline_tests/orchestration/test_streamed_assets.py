"""The streamed sources in Dagster: eight chains in the graph, out-of-core assets materialised from a
mirror in the datasets' real layouts, metadata, checks, and how training_pairs takes them in."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from thread_embed_pipeline.orchestration.source_chain import build_source_chain
from thread_embed_pipeline.orchestration.training_assets import OPTIONAL_INPUT_LOADER, training_pairs
from thread_embed_pipeline.orchestration.checks import all_checks
from thread_embed_pipeline.definitions import build_definitions, defs, enabled_streamed_sources
from thread_embed_pipeline.orchestration.io import ParquetIOManager
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource
from thread_embed_pipeline.sources.catalog import ALL_SOURCES
from thread_embed_pipeline.sources.hf_registry import HF_SOURCES
from thread_embed_pipeline.sources.registry import SOURCES
from thread_embed_pipeline_tests.chat_fixtures import ONE_MESSAGE_EACH
from thread_embed_pipeline_tests.runs import materialize_in

from thread_embed_pipeline_tests import hf_fixtures as F


def test_streamed_sources_are_opt_in():
    """The default code location is the default graph: no streamed chain, so *Materialize all* needs no Hub."""
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert not any(k.startswith(tuple(f"{n}/" for n in HF_SOURCES)) for k in keys)
    assert not any(c.asset_key.path[0] in HF_SOURCES for checks in defs.asset_checks for c in checks.check_keys)
    assert enabled_streamed_sources("") == () and enabled_streamed_sources("all") == tuple(HF_SOURCES)
    assert enabled_streamed_sources(" flyte_slack , ubuntu_irc") == ("ubuntu_irc", "flyte_slack")  # registry order
    with pytest.raises(ValueError, match="unknown streamed sources \\['nope'\\]"):
        enabled_streamed_sources("ubuntu_irc,nope")
    one = build_definitions(external_eval_sets=[], streamed_sources=["flyte_slack"])
    keys = {k.to_user_string() for k in one.resolve_asset_graph().get_all_asset_keys()}
    assert {"flyte_slack/upstream", "flyte_slack/raw", "flyte_slack/pairs"} <= keys and not any(k.startswith("ubuntu_irc/") for k in keys)
    assert one.resolve_job_def("refresh_flyte_slack") is not None


def test_graph_has_all_eight_chains_and_jobs():
    defs = build_definitions(external_eval_sets=[], streamed_sources=tuple(HF_SOURCES))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert len(ALL_SOURCES) == 8
    for name in ALL_SOURCES:
        assert {f"{name}/raw", f"{name}/corpus", f"{name}/pairs"} <= keys
        assert defs.resolve_job_def(f"refresh_{name}") is not None
    parents = defs.resolve_asset_graph().get(dg.AssetKey("training_pairs")).parent_keys
    assert {dg.AssetKey([n, "pairs"]) for n in ALL_SOURCES} <= parents
    main = {k.to_user_string() for k in defs.resolve_job_def("thread_embed_job").asset_layer.selected_asset_keys}
    assert not any(k.startswith(tuple(f"{n}/" for n in HF_SOURCES)) for k in main)  # the default run needs no Hub
    assert "model" in main and "irc_disentangle/raw" in main
    everything = {k.to_user_string() for k in defs.resolve_job_def("all_sources_job").asset_layer.selected_asset_keys}
    assert "ubuntu_irc/raw" in everything
    parallel = defs.resolve_job_def("sources_parallel_job")
    assert parallel.executor_def.name == "multiprocess" and defs.executor is dg.in_process_executor
    # raw, corpus, pairs per source, and the file sources' text stage
    assert len(parallel.asset_layer.selected_asset_keys) == 3 * len(ALL_SOURCES) + len(SOURCES)
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "executors" / "multiprocess.yaml").read_text())
    assert dg.validate_run_config(parallel, config)


def _chain_checks(name: str):
    wanted = {dg.AssetKey([name, "corpus"]), dg.AssetKey([name, "pairs"])}
    return [c for c in all_checks() if any(k.asset_key in wanted for k in c.check_keys)]


def _materialize(tmp_path: Path, mirror: Path | None, name: str, run_config: dict | None = None):
    return materialize_in(
        tmp_path / "data",
        [*build_source_chain(HF_SOURCES[name]), *_chain_checks(name)],
        resources={
            "io_manager": ParquetIOManager(),
            "chat_sources": ChatSourcesResource(mirror_dir=str(mirror) if mirror else None, cache_dir=str(tmp_path / "cache")),
        },
        run_config=run_config,
        raise_on_error=False,
    )


def _metadata(result, key: str) -> dict:
    (mat,) = [m for m in result.asset_materializations_for_node(key.replace("/", "__"))] or [None]
    return {k: v.value for k, v in mat.metadata.items()}


def test_ubuntu_irc_chain_materialises_out_of_core_with_provenance(tmp_path):
    mirror = tmp_path / "mirror"
    F.write_ubuntu_irc(mirror)
    result = _materialize(tmp_path, mirror, "ubuntu_irc", {"ops": {"ubuntu_irc__raw": {"config": {"max_units": 5, "seed": 2}}}})
    assert result.success
    raw_meta = _metadata(result, "ubuntu_irc/raw")
    assert raw_meta["dataset"] == "common-pile/ubuntu_irc" and raw_meta["revision"] == HF_SOURCES["ubuntu_irc"].dataset.revision
    assert raw_meta["license"].startswith("Public Domain") and raw_meta["origin"] == "mirror"
    assert raw_meta["units_read"] == 12 and raw_meta["units_kept"] == 5  # the first batch was read whole and raw_meta["sampling/max_units"] == 5 and raw_meta["sampling/seed"] == 2
    corpus_meta = _metadata(result, "ubuntu_irc/corpus")
    assert corpus_meta["read"] == corpus_meta["kept"] + corpus_meta["dropped_total"] == raw_meta["read"]
    assert corpus_meta["dropped/system"] == 5  # one "===" line per document
    stored = tmp_path / "data" / "corpus" / "ubuntu_irc.parquet"
    assert stored.is_file() and _metadata(result, "ubuntu_irc/corpus")["rows"] == corpus_meta["kept"]
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb")) as con:
        assert con.execute('SELECT count(*) FROM "corpus__ubuntu_irc"').fetchone()[0] == corpus_meta["kept"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"schema_and_splits": True, "schema_and_sanity": True}
    pairs = pd.read_parquet(tmp_path / "data" / "pairs" / "ubuntu_irc.parquet")
    assert set(pairs["strategy"]) == {"thread", "query_response", "adjacency"}
    assert not list((tmp_path / "cache" / "staging").rglob("*.parquet"))  # staged files were moved into place


def test_streamed_source_without_mirror_folder_fails_naming_dataset_and_setting(tmp_path):
    result = _materialize(tmp_path, tmp_path / "empty-mirror", "flyte_slack")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "unionai/flyte-slack-data" in message and "THREAD_EMBED_MIRROR" in message


def _training_pairs_run(tmp_path, config: dict, pairs_by_source: dict[str, pd.DataFrame], eval_sets: pd.DataFrame):
    data = tmp_path / "data"
    for name, frame in pairs_by_source.items():
        (data / "pairs").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(data / "pairs" / f"{name}.parquet")
    eval_sets.to_parquet(data / "eval_sets.parquet")
    upstream = [dg.SourceAsset(dg.AssetKey([n, "pairs"])) for n in ALL_SOURCES] + [dg.SourceAsset(dg.AssetKey("eval_sets"))]
    return materialize_in(
        data,
        [training_pairs, *upstream],
        resources={"io_manager": ParquetIOManager(), OPTIONAL_INPUT_LOADER: ParquetIOManager(optional_paths=True)},
        run_config={"ops": {"training_pairs": {"config": config}}},
        raise_on_error=False,
    )


def _pairs(source: str, texts: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"anchor": a, "positive": p, "strategy": "thread", "source": source, "conversation_id": f"{source}/{i}", "split": "train", **ONE_MESSAGE_EACH} for i, (a, p) in enumerate(texts)]
    )


def _eval_sets(text: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"eval_set": "threadembed", "source": "irc_disentangle", "task": "thread", "record_type": "document", "record_id": "d:1", "conversation_id": "irc/test/1",
             "text": text, "positive_id": None, "candidate_ids": [], "relevant_ids": []}
        ]
    )


def test_training_pairs_takes_selected_streamed_sources_and_decontaminates_them(tmp_path):
    leaked = "alice: how do I mount an ntfs partition read-write"
    gold = {name: _pairs(name, [(f"{name} anchor {i}", f"{name} positive {i}") for i in range(5)]) for name in ("irc_disentangle", "slack_dev_chats", "discord_disco")}
    streamed = _pairs("ubuntu_irc", [(f"u anchor {i}", f"u positive {i}") for i in range(5)] + [("bob: hi there everyone", leaked + "\nbob: try ntfs-3g")])
    eval_sets = _eval_sets("carol: something else entirely\n" + leaked)
    result = _training_pairs_run(tmp_path, {"budget": 100, "streamed_sources": ["ubuntu_irc"]}, {**gold, "ubuntu_irc": streamed}, eval_sets)
    assert result.success
    meta = _metadata(result, "training_pairs")
    assert meta["kept_by_source/ubuntu_irc"] == 5 and meta["dropped/shares_eval_message"] == 1
    assert meta["streamed/ubuntu_irc"] == "6 pairs" and meta["streamed/flyte_slack"] == "not selected"

    # selected but never materialised: a clear failure, not a silent skip
    result = _training_pairs_run(tmp_path / "b", {"budget": 100, "streamed_sources": ["flyte_slack"]}, gold, eval_sets)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "flyte_slack/pairs has never been materialised" in failure.event_specific_data.error.message

    # selected but not enabled in the code location: says how to enable it
    from thread_embed_pipeline.orchestration.training_assets import build_training_pairs_asset

    data = tmp_path / "d" / "data"
    eval_sets.to_parquet((data.mkdir(parents=True) or data) / "eval_sets.parquet")
    for name, frame in gold.items():
        (data / "pairs").mkdir(exist_ok=True)
        frame.to_parquet(data / "pairs" / f"{name}.parquet")
    result = materialize_in(
        data,
        [build_training_pairs_asset(()), *[dg.SourceAsset(dg.AssetKey([n, "pairs"])) for n in SOURCES], dg.SourceAsset(dg.AssetKey("eval_sets"))],
        resources={"io_manager": ParquetIOManager(), OPTIONAL_INPUT_LOADER: ParquetIOManager(optional_paths=True)},
        run_config={"ops": {"training_pairs": {"config": {"budget": 100, "streamed_sources": ["ubuntu_irc"]}}}},
        raise_on_error=False,
    )
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "THREAD_EMBED_STREAMED_SOURCES=ubuntu_irc" in failure.event_specific_data.error.message

    # materialised but not selected: ignored, and said so
    result = _training_pairs_run(tmp_path / "c", {"budget": 100}, {**gold, "ubuntu_irc": streamed}, eval_sets)
    meta = _metadata(result, "training_pairs")
    assert "kept_by_source/ubuntu_irc" not in meta and meta["streamed/ubuntu_irc"] == "not selected (materialised, ignored)"


@pytest.mark.parametrize("name", sorted(HF_SOURCES))
def test_every_streamed_source_materialises_from_its_real_layout(tmp_path, name):
    mirror = tmp_path / "mirror"
    F.write_all(mirror)
    run_config = {"ops": {f"{name}__raw": {"config": {"unit_fraction": 1.0}}}} if name == "discord_unveiled" else None
    result = _materialize(tmp_path, mirror, name, run_config)
    assert result.success
    assert _metadata(result, f"{name}/raw")["read"] > 0
    assert all(e.passed for e in result.get_asset_check_evaluations())
    pairs = pd.read_parquet(tmp_path / "data" / "pairs" / f"{name}.parquet")
    assert set(pairs["strategy"]) <= set(HF_SOURCES[name].pair_strategies) and len(pairs) > 0


def test_no_mirror_and_no_network_fails_fast_naming_dataset_and_setting(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    result = _materialize(tmp_path, None, "ubuntu_irc")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "common-pile/ubuntu_irc" in message and "THREAD_EMBED_MIRROR" in message and "OfflineModeIsEnabled" in message
