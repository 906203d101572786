"""Rebuild only what changed: Dagster's in-process evaluation of the project's automation condition.

Materialisations and observations are reported as runless events carrying data versions (what the
real assets report: a hash of what they wrote), then ``evaluate_automation_conditions`` ticks like
the automation sensor does. Each scenario steps through the ticks: whatever a tick requests is
"run" by reporting its new data version, until nothing more is requested.
"""

from __future__ import annotations

import os

import dagster as dg
import pytest

from thread_embed_pipeline import versioning
from thread_embed_pipeline.orchestration.automation import observe_source
from thread_embed_pipeline.orchestration.keys import upstream_key
from thread_embed_pipeline.definitions import build_definitions
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource
from thread_embed_pipeline.sources.catalog import ALL_SOURCES
from thread_embed_pipeline.sources.hf_registry import HF_SOURCES
from thread_embed_pipeline.sources.registry import SOURCES

from thread_embed_pipeline_tests import hf_fixtures as F

DATA_VERSION_TAG = "dagster/data_version"


class World:
    """An instance holding every asset at a known data version, and the automation cursor."""

    def __init__(self, defs: dg.Definitions, never_materialised: set[str] = frozenset()) -> None:
        self.defs = defs
        self.instance = dg.DagsterInstance.ephemeral()
        self.graph = defs.resolve_asset_graph()
        self.cursor = None
        self.versions: dict[dg.AssetKey, int] = {}
        for key in self.graph.get_all_asset_keys():
            if key.path[-1] == "upstream":
                self.observe(key, "v0")
            elif key.path[0] not in never_materialised:
                self.materialize(key, changed=True)
        assert self.tick() == set()  # a settled graph asks for nothing

    def observe(self, key: dg.AssetKey, version: str) -> None:
        self.instance.report_runless_asset_event(dg.AssetObservation(key, tags={DATA_VERSION_TAG: version}))

    def materialize(self, key: dg.AssetKey, *, changed: bool) -> None:
        if changed:
            self.versions[key] = self.versions.get(key, 0) + 1
        self.instance.report_runless_asset_event(dg.AssetMaterialization(key, tags={DATA_VERSION_TAG: f"d{self.versions[key]}"}))

    def tick(self, defs: dg.Definitions | None = None) -> set[str]:
        defs = defs or self.defs
        result = dg.evaluate_automation_conditions(defs=defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {k.to_user_string() for k in self.graph.get_all_asset_keys() if result.get_num_requested(k)}

    def run_until_settled(self, unchanged: set[str] = frozenset(), defs: dg.Definitions | None = None, first: set[str] | None = None) -> list[set[str]]:
        """Tick, "run" what was requested (new data versions, except for ``unchanged`` assets), repeat."""
        ticks = []
        requested = first if first is not None else self.tick(defs)
        while requested:
            ticks.append(requested)
            for name in requested:
                self.materialize(dg.AssetKey.from_user_string(name), changed=name not in unchanged)
            requested = self.tick(defs)
        return ticks


@pytest.fixture
def world() -> World:
    return World(build_definitions(external_eval_sets=[], streamed_sources=tuple(HF_SOURCES)))


MERGED_BELOW = {"training_pairs", "model", "eval_report"}
EVAL_SETS = {"eval_sets", "dev_eval_sets"}


def test_changed_irc_file_rebuilds_only_the_irc_chain_and_what_reads_it(world):
    world.observe(upstream_key("irc_disentangle"), "v1")  # a file of the mirror changed
    ticks = world.run_until_settled(unchanged=EVAL_SETS)  # the change touched no eval conversation
    assert ticks[0] == {"irc_disentangle/raw"}
    assert ticks[1] == {"irc_disentangle/corpus"}
    # the eval sets read every corpus, so they are rebuilt too; their content (a data version) did not change
    assert ticks[2] == {"irc_disentangle/text"} | EVAL_SETS
    # the message index, built before, takes the new messages in (incrementally: message_index.update_index)
    assert ticks[3:] == [{"irc_disentangle/pairs", "message_index"}, {"training_pairs"}, {"model"}, {"eval_report"}]
    rebuilt = set().union(*ticks)
    assert rebuilt == {"irc_disentangle/raw", "irc_disentangle/corpus", "irc_disentangle/text", "irc_disentangle/pairs", "message_index"} | EVAL_SETS | MERGED_BELOW
    assert "eval_exports" not in rebuilt and not any(k.endswith("slack_dev_chats") for k in rebuilt)


def test_unchanged_refresh_requests_nothing(world):
    for name in ALL_SOURCES:
        world.observe(upstream_key(name), "v0")  # the nightly observation finds every source as it was
    assert world.tick() == set()
    # rematerialising a source with the same content (same data version) triggers nothing either
    world.materialize(dg.AssetKey(["slack_dev_chats", "raw"]), changed=False)
    assert world.tick() == set()


def test_pair_builder_code_bump_rebuilds_every_pairs_asset_and_below(world, monkeypatch):
    monkeypatch.setitem(versioning.CODE_VERSIONS, "pairs", "99")
    bumped = build_definitions(external_eval_sets=[], streamed_sources=tuple(HF_SOURCES))
    ticks = world.run_until_settled(defs=bumped)
    assert ticks[0] == {f"{name}/pairs" for name in ALL_SOURCES}
    assert ticks[1:] == [{"training_pairs"}, {"model"}, {"eval_report"}]


def test_a_change_that_comes_out_the_same_stops_there(world):
    world.observe(upstream_key("discord_disco"), "v1")
    ticks = world.run_until_settled(unchanged={"discord_disco/corpus"})  # e.g. only whitespace changed upstream
    assert ticks == [{"discord_disco/raw"}, {"discord_disco/corpus"}]


def test_observation_hashes_sizes_and_mtimes_of_the_mirror_files(tmp_path):
    F.write_ubuntu_irc(tmp_path)
    resource = ChatSourcesResource(mirror_dir=str(tmp_path))
    spec = ALL_SOURCES["ubuntu_irc"]
    first, meta = observe_source(spec, resource)
    assert meta["files"] == 1 and meta["origin"] == "mirror"
    assert observe_source(spec, resource)[0] == first  # nothing changed, nothing read
    shard = next((tmp_path / spec.mirror_subdir).rglob("*.jsonl.gz"))
    stamp = shard.stat().st_mtime_ns + 10**9
    os.utime(shard, ns=(stamp, stamp))
    assert observe_source(spec, resource)[0] != first
    F.write_ubuntu_irc(tmp_path, shard="00001_ubuntu.jsonl.gz")  # a new shard
    assert observe_source(spec, resource)[1]["files"] == 2
    missing, meta = observe_source(SOURCES["irc_disentangle"], ChatSourcesResource(mirror_dir=str(tmp_path)))
    assert missing.startswith("missing:") and "does not exist" in meta["note"]
    pinned, meta = observe_source(spec, ChatSourcesResource(mirror_dir=None))
    assert pinned == f"common-pile/ubuntu_irc@{spec.dataset.revision}"


def test_observable_sources_feed_raw_assets_and_automation_is_declared_running():
    defs = build_definitions(external_eval_sets=[], streamed_sources=tuple(HF_SOURCES))
    graph = defs.resolve_asset_graph()
    for name in ALL_SOURCES:
        assert upstream_key(name) in graph.get(dg.AssetKey([name, "raw"])).parent_keys
    (sensor,) = defs.sensors
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["nightly_source_refresh"].cron_schedule == "0 2 * * *"
    assert schedules["weekly_retrain"].cron_schedule == "0 4 * * 0"
    assert {s.default_status for s in schedules.values()} == {dg.DefaultScheduleStatus.STOPPED}
    assert schedules["nightly_source_refresh"].job_name == "observe_sources_job"
    retrain = {k.to_user_string() for k in defs.resolve_job_def("retrain_and_eval_job").asset_layer.selected_asset_keys}
    assert retrain == MERGED_BELOW | {"model_onnx"}  # the weekly retrain re-exports, so a release ships matching ONNX files


def test_assets_report_content_data_versions(tmp_path, mirror_root, monkeypatch):
    """A real materialisation: the same input gives the same data version, a changed one a new one."""
    from thread_embed_pipeline.orchestration.source_chain import build_source_chain
    from thread_embed_pipeline.orchestration.io import ParquetIOManager

    assets = build_source_chain(SOURCES["slack_dev_chats"])
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
    resources = {"io_manager": ParquetIOManager(), "chat_sources": ChatSourcesResource(mirror_dir=str(mirror_root), max_files_per_folder=1)}

    def versions():
        result = dg.materialize(assets, instance=instance, resources=resources, selection=dg.AssetSelection.assets(*[a.key for a in assets]))
        assert result.success
        return {e.asset_key.to_user_string(): e.step_materialization_data.materialization.tags[DATA_VERSION_TAG] for e in result.get_asset_materialization_events()}

    first = versions()
    assert set(first) == {"slack_dev_chats/raw", "slack_dev_chats/corpus", "slack_dev_chats/text", "slack_dev_chats/pairs"}
    assert versions() == first  # rebuilt from the same files: same content, same versions
    result = dg.materialize(assets, instance=instance, resources=resources, run_config={"ops": {"slack_dev_chats__pairs": {"config": {"seed": 99}}}})
    new = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.tags[DATA_VERSION_TAG] for e in result.get_asset_materialization_events()}
    assert new["slack_dev_chats/raw"] == first["slack_dev_chats/raw"] and new["slack_dev_chats/pairs"] != first["slack_dev_chats/pairs"]


def test_dev_check_verdict_warns_only_on_a_significant_or_average_loss():
    import pandas as pd

    from thread_embed_pipeline.orchestration.checks import dev_check_verdict

    def frame(deltas, highs):
        return pd.DataFrame({"delta": deltas, "delta_ci_high": highs})

    assert dev_check_verdict(frame([0.05, -0.01], [0.09, 0.03]))  # a small, non-significant dip on one set
    assert not dev_check_verdict(frame([0.05, -0.08], [0.09, -0.02]))  # significantly worse on one set
    assert not dev_check_verdict(frame([-0.02, -0.01], [0.01, 0.02]))  # worse on average
    assert dev_check_verdict(pd.DataFrame(columns=["delta", "delta_ci_high"]))


def test_streamed_sources_never_materialised_hold_nothing_back():
    """The default install: the streamed sources' chains were never materialised (no mirror for them)."""
    world = World(build_definitions(external_eval_sets=[], streamed_sources=tuple(HF_SOURCES)), never_materialised=set(HF_SOURCES))
    world.observe(upstream_key("slack_dev_chats"), "v1")
    world.observe(upstream_key("ubuntu_irc"), "missing:hf/common-pile__ubuntu_irc")  # a first observation
    ticks = world.run_until_settled(unchanged=EVAL_SETS)
    rebuilt = set().union(*ticks)
    assert rebuilt == {"slack_dev_chats/raw", "slack_dev_chats/corpus", "slack_dev_chats/text", "slack_dev_chats/pairs", "message_index"} | EVAL_SETS | MERGED_BELOW
    # a code bump of the pair builder rebuilds the pairs that can be built, not the missing chains
    ticks = world.run_until_settled(defs=_with_pairs_version("98"))
    assert ticks[0] == {f"{name}/pairs" for name in SOURCES}


def test_a_message_index_never_built_is_never_built_by_the_sensor():
    """The opt-in message index costs an hour on a CPU: the sensor updates it once a user has built it, never before."""
    world = World(build_definitions(external_eval_sets=[], streamed_sources=tuple(HF_SOURCES)), never_materialised={"message_index", *HF_SOURCES})
    world.observe(upstream_key("irc_disentangle"), "v1")
    rebuilt = set().union(*world.run_until_settled(unchanged=EVAL_SETS))
    assert "irc_disentangle/text" in rebuilt and "message_index" not in rebuilt


def _with_pairs_version(version: str) -> dg.Definitions:
    old = versioning.CODE_VERSIONS["pairs"]
    versioning.CODE_VERSIONS["pairs"] = version
    try:
        return build_definitions(external_eval_sets=[], streamed_sources=tuple(HF_SOURCES))
    finally:
        versioning.CODE_VERSIONS["pairs"] = old


def test_observe_sources_job_records_every_source(tmp_path, mirror_root):
    defs = build_definitions(external_eval_sets=[], streamed_sources=tuple(HF_SOURCES))
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("observe_sources_job")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THREAD_EMBED_MIRROR", str(mirror_root))
        result = job.execute_in_process(instance=instance, resources={"chat_sources": ChatSourcesResource(mirror_dir=str(mirror_root), max_files_per_folder=1)})
    assert result.success
    versions = {}
    for name in ALL_SOURCES:
        record = instance.get_latest_data_version_record(upstream_key(name))
        versions[name] = record.asset_observation.tags[DATA_VERSION_TAG] if record else None
    assert all(versions[name] and not versions[name].startswith("missing:") for name in SOURCES)
    assert all(versions[name].startswith("missing:") for name in HF_SOURCES)  # no mirror folder for them here
