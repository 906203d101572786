"""The one Dagster ``Definitions`` of the project: assets, checks, resources, jobs."""

from __future__ import annotations

import dagster as dg

from thread_embed_pipeline import paths
from thread_embed_pipeline.assets.eval_assets import eval_report, eval_sets
from thread_embed_pipeline.assets.source_assets import all_source_assets, raw_key
from thread_embed_pipeline.assets.training_assets import model, training_pairs
from thread_embed_pipeline.checks import all_checks
from thread_embed_pipeline.io import ParquetIOManager
from thread_embed_pipeline.resources import ChatSourcesResource, TrainerResource
from thread_embed_pipeline.sources.registry import SOURCES

main_job = dg.define_asset_job(
    "thread_embed_job",
    selection=dg.AssetSelection.all(),
    description="Everything: every source's raw → corpus → pairs, then training_pairs, eval_sets, model, eval_report.",
)

source_chain_jobs = [
    dg.define_asset_job(
        f"refresh_{name}",
        selection=dg.AssetSelection.assets(raw_key(name)).downstream(),
        description=f"Rebuild {name} and everything downstream of it (merged pairs, model, report).",
    )
    for name in SOURCES
]

defs = dg.Definitions(
    assets=[*all_source_assets(), eval_sets, training_pairs, model, eval_report],
    asset_checks=all_checks(),
    resources={
        "io_manager": ParquetIOManager(),
        "chat_sources": ChatSourcesResource(mirror_dir=paths.default_mirror_dir()),
        "trainer": TrainerResource(),
    },
    jobs=[main_job, *source_chain_jobs],
    executor=dg.in_process_executor,
)
