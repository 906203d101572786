"""The one Dagster ``Definitions`` of the project: assets, checks, resources, jobs.

The five streamed (Hugging Face) sources are opt-in: their chains are part of the code location
only when ``THREAD_EMBED_STREAMED_SOURCES`` names them (``ubuntu_irc,flyte_slack`` or ``all``),
because they need a mirror folder or the Hub that a fresh machine lacks. So the default graph --
what *Materialize all* in the UI selects -- is exactly what the main job builds, and a newcomer's
first click succeeds. One code location keeps ``refresh_<source>`` able to run a streamed chain
through ``training_pairs``, ``model`` and ``eval_report`` in one run.
"""

from __future__ import annotations

import os
from typing import Sequence

import dagster as dg

from thread_embed_pipeline import storage
from thread_embed_pipeline.evaluation.runner import API_ENVIRONMENT, SECRET_FIELDS
from thread_embed_pipeline.orchestration.automation import build_upstream_asset
from thread_embed_pipeline.orchestration.keys import raw_key, upstream_key
from thread_embed_pipeline.orchestration.eval_assets import build_eval_report_asset, build_eval_sets_assets, build_external_eval_asset, eval_exports
from thread_embed_pipeline.orchestration.release_assets import RELEASE_KEY, HubResource, build_search_index_asset, model_onnx, release_model
from thread_embed_pipeline.orchestration.disentangle_assets import SOURCE as DISENTANGLER_SOURCE, disentanglement_assets, disentanglement_key
from thread_embed_pipeline.orchestration.search_assets import GROUP as SEARCH_GROUP, build_message_index_asset
from thread_embed_pipeline.orchestration.source_chain import LINKING_SCORER, source_chain_assets
from thread_embed_pipeline.orchestration.training_assets import OPTIONAL_INPUT_LOADER, build_model_asset, build_training_pairs_asset
from thread_embed_pipeline.orchestration.checks import all_checks
from thread_embed_pipeline.evaluation.registry import ExternalEvalSet, load_external_eval_sets
from thread_embed_pipeline.orchestration.io import ParquetIOManager
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource, EmbeddingApisResource, TrainerResource
from thread_embed_pipeline.sources.catalog import ALL_SOURCES
from thread_embed_pipeline.sources.hf_registry import HF_SOURCES
from thread_embed_pipeline.sources.registry import SOURCES
from thread_embed_pipeline.sources.user import UserSourceSpec, load_user_sources


def _secret(name: str) -> dg.EnvVar | None:
    """The key as a ``dg.EnvVar`` (resolved at run time, masked in the UI) when set; None skips those API models."""
    return dg.EnvVar(name) if os.environ.get(name) else None


STREAMED_SOURCES_ENV = "THREAD_EMBED_STREAMED_SOURCES"


def enabled_streamed_sources(value: str | None = None) -> tuple[str, ...]:
    """The streamed sources named by ``THREAD_EMBED_STREAMED_SOURCES`` (comma-separated, or ``all``); none when unset."""
    value = os.environ.get(STREAMED_SOURCES_ENV, "") if value is None else value
    names = [n.strip() for n in value.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(HF_SOURCES)
    unknown = sorted(set(names) - set(HF_SOURCES))
    if unknown:
        raise ValueError(f"{STREAMED_SOURCES_ENV} names unknown streamed sources {unknown}; known: {sorted(HF_SOURCES)} (or 'all')")
    return tuple(n for n in HF_SOURCES if n in names)


OPT_IN = dg.AssetSelection.groups("disentanglement", SEARCH_GROUP)  # in no job but their own (and all_sources_job)
# group names a user source may not take
RESERVED_NAMES = frozenset({"training", "evaluation", "release", "disentanglement", "search_index", SEARCH_GROUP, *ALL_SOURCES})


EXECUTOR_ENV = "THREAD_EMBED_EXECUTOR"
EXECUTORS = ("in_process", "multiprocess", "k8s")
TRAINS_TAG = {"thread_embed/trains": "true"}  # on the jobs that train: a run queue can let one run at a time hold the GPUs


def select_executor(name: str | None = None) -> tuple[dg.ExecutorDefinition, dg.ExecutorDefinition]:
    """(the jobs' default executor, ``sources_parallel_job``'s) for ``THREAD_EMBED_EXECUTOR``:
    ``in_process`` (default; local runs), ``multiprocess`` (one process per step), or ``k8s``
    (``dagster_k8s.k8s_job_executor``: one Kubernetes Job per step, docs/deploy.md)."""
    name = (os.environ.get(EXECUTOR_ENV, "") if name is None else name).strip() or "in_process"
    if name == "in_process":
        return dg.in_process_executor, dg.multiprocess_executor
    if name == "multiprocess":
        return dg.multiprocess_executor, dg.multiprocess_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError:
            raise ImportError(f"{EXECUTOR_ENV}=k8s needs dagster-k8s: pip install 'thread_embed_pipeline[k8s]'") from None
        return k8s_job_executor, k8s_job_executor
    raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected one of {EXECUTORS}")


def build_definitions(
    external_eval_sets: list[ExternalEvalSet] | None = None,
    streamed_sources: Sequence[str] | None = None,
    executor: str | None = None,
    user_sources: Sequence[UserSourceSpec] | None = None,
    mirrored_sources: Sequence[str] | None = None,
) -> dg.Definitions:
    """The code location; ``streamed_sources`` (default: from ``THREAD_EMBED_STREAMED_SOURCES``) adds those opt-in
    chains; ``user_sources`` (default: ``configs/my_sources.yaml``, or ``THREAD_EMBED_USER_SOURCES``) the user's
    own exports; ``mirrored_sources`` (default: all of ``registry.SOURCES``) the project's public datasets to
    include (none: a location of the user's own chat only); ``executor`` (default: from ``THREAD_EMBED_EXECUTOR``)
    is one of :data:`EXECUTORS`."""
    default_executor, parallel_executor = select_executor(executor)
    external_eval_sets = load_external_eval_sets() if external_eval_sets is None else external_eval_sets
    streamed = enabled_streamed_sources() if streamed_sources is None else tuple(streamed_sources)
    user = list(load_user_sources(taken=set(RESERVED_NAMES)) if user_sources is None else user_sources)
    clash = sorted({u.name for u in user} & RESERVED_NAMES)
    if clash:
        raise ValueError(f"user sources {clash} take names of the project's own sources or groups; rename them in the sources file")
    mirrored = tuple(SOURCES) if mirrored_sources is None else tuple(mirrored_sources)
    unknown = sorted(set(mirrored) - set(SOURCES))
    if unknown:
        raise ValueError(f"mirrored_sources names unknown sources {unknown}; known: {sorted(SOURCES)}")
    file_sources = [*mirrored, *(u.name for u in user)]  # every source with a text stage: evaluated and indexed
    platform_of = {**{name: spec.platform for name, spec in ALL_SOURCES.items()}, **{u.name: u.platform for u in user}}
    enabled_sources = [*file_sources, *streamed]
    # an export linked by the disentangler reads its features-only scorer: that one asset of the opt-in group rides along
    linked = [u.name for u in user if u.linker == "disentangler"]
    if linked and DISENTANGLER_SOURCE not in mirrored:
        raise ValueError(f"{linked} are linked by the disentangler, which is trained on {DISENTANGLER_SOURCE}'s gold links: keep {DISENTANGLER_SOURCE} among the mirrored sources")
    linking = dg.AssetSelection.assets(disentanglement_key(LINKING_SCORER)) if linked else dg.AssetSelection.assets()
    # the streamed chains have their own refresh jobs; disentanglement runs only in disentangle_job
    streamed_chains = dg.AssetSelection.groups(*streamed) | (OPT_IN - linking)
    main_job = dg.define_asset_job(
        "thread_embed_job",
        # the file sources are observed first, so a later refresh compares against this run's files
        selection=(dg.AssetSelection.all() - streamed_chains) | dg.AssetSelection.assets(*[upstream_key(name) for name in file_sources]),
        tags=TRAINS_TAG,
        description=(
            "The default run: the mirrored sources' raw → corpus → pairs, then eval_sets, training_pairs, model, eval_report. "
            "Streamed sources have their own refresh_<source> jobs and are trained on when listed in training_pairs' streamed_sources."
        ),
    )
    all_sources_job = dg.define_asset_job(
        "all_sources_job",
        selection=dg.AssetSelection.all(),
        tags=TRAINS_TAG,
        description="Every asset of this code location, the enabled streamed sources' chains included (they need their mirror folders or Hub access).",
    )
    sources_parallel_job = dg.define_asset_job(
        "sources_parallel_job",
        selection=dg.AssetSelection.groups(*enabled_sources),
        executor_def=parallel_executor,
        description=(
            "Every source's raw → corpus → pairs at once, one process per step (multiprocess executor; "
            "set execution.config.max_concurrent). For machines with more cores; the other jobs run in-process."
        ),
    )
    upstream_assets = [build_upstream_asset(spec) for spec in [*(ALL_SOURCES[name] for name in [*mirrored, *streamed]), *user]]
    observe_sources_job = dg.define_asset_job(
        "observe_sources_job",
        selection=dg.AssetSelection.assets(*[upstream_key(name) for name in enabled_sources]),
        description="Observe every source (hash of its files' paths, sizes and mtimes; no parsing). The automation sensor then rebuilds only what changed.",
    )
    retrain_job = dg.define_asset_job(
        "retrain_and_eval_job",
        selection=dg.AssetSelection.assets("training_pairs", "model", "model_onnx", "eval_report"),
        tags=TRAINS_TAG,
        description="Resample the training pairs, retrain the model and re-run the evaluation from the stored pairs and eval sets.",
    )
    schedules = [
        dg.ScheduleDefinition(
            name="nightly_source_refresh",
            job=observe_sources_job,
            cron_schedule="0 2 * * *",
            description="02:00 every night: observe the sources; changed ones are rebuilt by the automation sensor, unchanged ones cost nothing.",
            default_status=dg.DefaultScheduleStatus.STOPPED,
        ),
        dg.ScheduleDefinition(
            name="weekly_retrain",
            job=retrain_job,
            cron_schedule="0 4 * * 0",
            description="04:00 every Sunday: retrain on the current pairs and re-evaluate.",
            default_status=dg.DefaultScheduleStatus.STOPPED,
        ),
    ]
    automation_sensor = dg.AutomationConditionSensorDefinition(
        "thread_embed_automation",
        target=dg.AssetSelection.all(include_sources=True),
        # THREAD_EMBED_AUTOMATION=off declares it stopped (the browser test, or a read-only UI)
        default_status=dg.DefaultSensorStatus.STOPPED if os.environ.get("THREAD_EMBED_AUTOMATION", "").lower() == "off" else dg.DefaultSensorStatus.RUNNING,
        description="Requests an asset when an upstream data version or its own code version changed (see orchestration/automation.py).",
    )
    release_job = dg.define_asset_job(
        "release_job",
        selection=dg.AssetSelection.assets(RELEASE_KEY),
        description="Assemble the release folder from the current model and eval report, and publish it with push: true, repo_id and HF_TOKEN.",
    )
    disentangle_job = dg.define_asset_job(
        "disentangle_job",
        selection=dg.AssetSelection.groups("disentanglement"),
        description="Conversation disentanglement of the IRC test files with the fine-tuned model, the base model and no embeddings (the ablation); see docs/results.md.",
    )
    message_index_job = dg.define_asset_job(
        "message_index_job",
        selection=dg.AssetSelection.groups(SEARCH_GROUP),
        description="Index every message of every file source with the released model (LanceDB, ANN); incremental after the first build. About an hour on 2 CPU cores the first time.",
    )
    source_chain_jobs = [
        dg.define_asset_job(
            f"refresh_{name}",
            selection=dg.AssetSelection.assets(raw_key(name)).downstream() - OPT_IN,
            tags=TRAINS_TAG,
            description=f"Rebuild {name} and everything downstream of it (merged pairs, model, report).",
        )
        for name in enabled_sources
    ]
    return dg.Definitions(
        assets=[
            *upstream_assets,
            *source_chain_assets([*mirrored, *streamed], user),
            *build_eval_sets_assets(file_sources),
            eval_exports,
            *[build_external_eval_asset(entry) for entry in external_eval_sets],
            build_training_pairs_asset(streamed, user, mirrored),
            build_model_asset(platform_of),
            build_eval_report_asset(external_eval_sets, platform_of, [u.name for u in user if u.predicted_labels]),
            model_onnx,
            release_model,
            # the file sources and exports have a text stage (threads to show); the streamed ones go corpus → pairs
            *[build_search_index_asset(name) for name in file_sources],
            build_message_index_asset(file_sources),
            *(disentanglement_assets() if DISENTANGLER_SOURCE in mirrored else []),
        ],
        asset_checks=all_checks(streamed, [u.name for u in user], mirrored),
        resources={
            "io_manager": ParquetIOManager(),
            OPTIONAL_INPUT_LOADER: ParquetIOManager(optional_paths=True),
            "chat_sources": ChatSourcesResource(mirror_dir=storage.default_mirror_dir(), max_files_per_folder=storage.max_files_per_folder()),
            "trainer": TrainerResource(),
            # the model asset launches its training program (one process or torchrun) through Dagster Pipes
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
            # HF_TOKEN as dg.EnvVar (resolved at run time, masked in the UI); HF_ENDPOINT for a mirror of the Hub
            "hub": HubResource(token=_secret("HF_TOKEN"), endpoint=os.environ.get("HF_ENDPOINT")),
            "embedding_apis": EmbeddingApisResource(
                # keys as dg.EnvVar (resolved at run time, masked in the UI), endpoints as plain values
                **{name: _secret(variable) if name in SECRET_FIELDS else os.environ.get(variable) for name, variable in API_ENVIRONMENT.items()}
            ),
        },
        jobs=[main_job, all_sources_job, sources_parallel_job, observe_sources_job, retrain_job, release_job, message_index_job, *([disentangle_job] if DISENTANGLER_SOURCE in mirrored else []), *source_chain_jobs],
        schedules=schedules,
        sensors=[automation_sensor],
        executor=default_executor,
    )


defs = build_definitions()
