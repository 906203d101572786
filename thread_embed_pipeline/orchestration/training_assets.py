"""training_pairs (all sources' train pairs, decontaminated and sampled) → model (a Matryoshka checkpoint)."""

import tempfile
from dataclasses import asdict
from pathlib import Path
from collections.abc import Mapping
from typing import Optional, Sequence

import dagster as dg
import pandas as pd

from thread_embed_pipeline import storage
from thread_embed_pipeline.orchestration.automation import UPDATE_ON_CHANGE, update_on_change, versioned_output
from thread_embed_pipeline.orchestration.metadata import png_md, table, table_md
from thread_embed_pipeline.evaluation.report import plot_loss_curve
from thread_embed_pipeline.versioning import code_version, files_content_fingerprint
from thread_embed_pipeline.orchestration.keys import pairs_key
from thread_embed_pipeline.evaluation.eval_sets import eval_message_lines, eval_texts
from thread_embed_pipeline.pairs.builders import select_training_pairs
from thread_embed_pipeline.orchestration.resources import TrainerResource
from thread_embed_pipeline.sources.catalog import ALL_SOURCES, Source
from thread_embed_pipeline.sources.hf_registry import HF_SOURCES
from thread_embed_pipeline.sources.registry import SOURCES
from thread_embed_pipeline.training.launch import RESULT_KEY, launch_command, launch_environment, result_from_json, write_launch_files
from thread_embed_pipeline.training.settings import CPU_RECIPE, TrainingResult, TrainingSettings
from thread_embed_pipeline.training.inputs import check_training_inputs

# The CPU default: at most this many pairs (and training.CPU_RECIPE's time budget), so the whole main
# job keeps to its time target on 2 cores (docs/main_job_timings.md).
DEFAULT_CPU_PAIR_BUDGET = 4000
_CPU = CPU_RECIPE
# The reference recipe's scale (200,000 pairs) lives in configs/full_recipe.yaml, for GPU runs.


class TrainingPairsConfig(dg.Config):
    """How many training pairs, in which shares per strategy, drawn with which seed."""

    budget: int = DEFAULT_CPU_PAIR_BUDGET
    strategy_shares: dict[str, float] = {"thread": 0.5, "query_response": 0.25, "adjacency": 0.25}
    # share of each source within every strategy (sources not named split the rest equally)
    source_shares: dict[str, float] = {}
    # with source_shares empty: every source trained on gets an equal share, so the small, hard ones
    # (Slack, Discord) get more of a small budget (docs/ablation.md); off: sources come by size
    equal_source_shares: bool = True
    seed: int = 7
    # cross-platform transfer: train without these platforms ("irc", "slack", "discord") and
    # evaluate on them; the report marks which platforms the model saw in training
    exclude_platforms: list[str] = []
    # streamed (Hugging Face) sources to train on as well; each must have been materialised.
    # Empty by default: the CPU default run reads only the mirrored sources.
    streamed_sources: list[str] = []


class ModelConfig(dg.Config):
    """Training hyper-parameters: the fields of training.TrainingSettings (documented there), with the
    CPU recipe's defaults (training.CPU_RECIPE, on the bundled all-MiniLM-L6-v2), plus the checkpoint
    folder's name and the Matryoshka weighting switch."""

    base_model: str = _CPU.base_model
    model_name: str = "thread-embed-minilm"
    matryoshka_dims: list[int] = list(_CPU.matryoshka_dims)
    batch_size: int = _CPU.batch_size
    gradient_accumulation_steps: int = _CPU.gradient_accumulation_steps
    learning_rate: float = _CPU.learning_rate
    warmup_ratio: float = _CPU.warmup_ratio
    epochs: float = _CPU.epochs
    max_seq_length: int = _CPU.max_seq_length
    bf16: Optional[bool] = _CPU.bf16
    seed: int = _CPU.seed
    logging_steps: int = _CPU.logging_steps
    batch_sampler: str = _CPU.batch_sampler  # "length_grouped", "no_duplicates" or "conversation_disjoint"
    loss: str = _CPU.loss  # or "cached_mnrl": GradCache, for batches of 128-512 in CPU memory
    mini_batch_size: int = _CPU.mini_batch_size
    matryoshka_weights: Optional[list[float]] = None  # one per dim; unset: see small_dims_weigh_more
    # with matryoshka_weights unset, the two smallest dims weigh 2 and 3 and the others 1 (64-dim
    # retention, docs/ablation.md); off: every dim weighs 1
    small_dims_weigh_more: bool = True
    use_negatives: bool = _CPU.use_negatives  # train on (anchor, positive, chat hard negative) triplets only
    save_steps: Optional[int] = _CPU.save_steps  # checkpoint every N steps; a rerun resumes from the last one
    # seconds of optimizer steps, sized from the step time measured in the first steps; None trains every pair
    time_budget_s: Optional[float] = _CPU.time_budget_s
    frozen_layers: int = _CPU.frozen_layers  # freeze the embeddings and the lowest N layers: cheaper steps
    speaker_dropout: float = _CPU.speaker_dropout  # each pair side loses its "speaker_<k>: " prefixes with this probability
    # processes on this node: 1 runs the training program alone, N > 1 under `torchrun --nproc_per_node N`
    # (DDP: batch_size is per process, the loss gathers every process's negatives; docs/deploy.md)
    nproc_per_node: int = 1
    # extra transformers TrainerCallbacks for the training program, as "package.module:Class" (e.g. a tracker's)
    callbacks: list[str] = []

    def settings(self) -> TrainingSettings:
        values = self.model_dump(exclude={"model_name", "small_dims_weigh_more", "nproc_per_node", "callbacks"})
        values["matryoshka_dims"] = tuple(values["matryoshka_dims"])
        if values["matryoshka_weights"] is not None:
            values["matryoshka_weights"] = tuple(values["matryoshka_weights"])
        elif self.small_dims_weigh_more and len(values["matryoshka_dims"]) >= 3:
            values["matryoshka_weights"] = (1.0,) * (len(values["matryoshka_dims"]) - 2) + (2.0, 3.0)
        return TrainingSettings(**values)


OPTIONAL_INPUT_LOADER = "optional_parquet_loader"


def model_metadata(summary: dict, loss_history: list[dict], settings: TrainingSettings, output_dir) -> dict:
    """The ``model`` page: the training config, the data by source and strategy, throughput, memory,
    the pair count the time budget chose and why, and the loss curve as a plot."""
    offered = pd.DataFrame({"pairs_by_source": summary["pairs_by_source"]}).rename_axis("source").reset_index()
    by_strategy = pd.DataFrame({"pairs_by_strategy": summary["pairs_by_strategy"]}).rename_axis("strategy").reset_index()
    losses = pd.DataFrame(loss_history, columns=["step", "loss", "elapsed_s"])
    plot = plot_loss_curve(losses, storage.data_dir() / "model" / "loss_curve.png")  # beside model.json, the asset's own
    final_loss = summary["final_loss"]
    return {
        "checkpoint_dir": dg.MetadataValue.path(str(output_dir)),
        "base_model": settings.base_model,
        "learning_rate": settings.learning_rate,
        "batch_size": settings.batch_size,
        "epochs": settings.epochs,
        "max_seq_length": settings.max_seq_length,
        "matryoshka_dims": ", ".join(str(d) for d in settings.matryoshka_dims),
        "time_budget_s": settings.time_budget_s if settings.time_budget_s is not None else "none",
        "training_config": dg.MetadataValue.json({k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()}),
        "pairs_offered_by_source": table(offered),
        "pairs_offered_by_strategy": table(by_strategy),
        "train_pairs": summary["train_pairs"],
        "train_pairs_reason": summary["train_pairs_reason"],
        "steps": summary["steps"],
        "planned_steps": summary["planned_steps"],
        "train_seconds": round(float(summary["train_seconds"]), 1),
        "pairs_per_second": round(float(summary["pairs_per_second"]), 2),
        "final_loss": round(float(final_loss), 4) if final_loss is not None else float("nan"),
        "bf16": summary["bf16"],
        "device": summary["device"],
        "peak_rss_mb": round(float(summary["peak_rss_mb"] or 0.0), 1),
        "processes": summary["processes"],
        "candidates_per_anchor": summary["candidates_per_anchor"],
        "resumed_from_step": summary["resumed_from_step"] if summary["resumed_from_step"] is not None else "none",
        "loss_curve": png_md(plot, "training loss per step"),
    }


def build_training_pairs_asset(streamed_sources: Sequence[str] = tuple(HF_SOURCES), user_sources: Sequence[Source] = (), mirrored_sources: Sequence[str] = tuple(SOURCES)) -> dg.AssetsDefinition:
    """``training_pairs`` over the mirrored sources, the streamed sources enabled in this code location
    (``definitions.enabled_streamed_sources``; optional inputs) and the user's exports declared with
    ``train: true``."""
    streamed_sources = tuple(streamed_sources)
    trained = {spec.name: spec for spec in user_sources if spec.train}

    @dg.asset(
        name="training_pairs",
        ins={
            **{f"pairs_{name}": dg.AssetIn(pairs_key(name)) for name in [*mirrored_sources, *trained]},
            **{f"pairs_{name}": dg.AssetIn(pairs_key(name), input_manager_key=OPTIONAL_INPUT_LOADER) for name in streamed_sources},
            "eval_sets": dg.AssetIn("eval_sets"),
        },
        group_name="training",
        kinds={"parquet"},
        code_version=code_version("training_pairs"),
        automation_condition=update_on_change(optional_deps=dg.AssetSelection.assets(*[pairs_key(name) for name in streamed_sources])),
        description="Train-split pairs of every source, minus anything that touches an eval conversation or text, de-duplicated and sampled to a budget.",
    )
    def training_pairs(context: dg.AssetExecutionContext, config: TrainingPairsConfig, eval_sets: pd.DataFrame, **pairs_by_source) -> dg.Output[pd.DataFrame]:
        return _training_pairs(context, config, eval_sets, streamed_sources, pairs_by_source, trained)

    return training_pairs


def _training_pairs(context, config: TrainingPairsConfig, eval_sets: pd.DataFrame, enabled: tuple[str, ...], pairs_by_source: dict, user: Mapping[str, Source] = {}) -> dg.Output[pd.DataFrame]:
    unknown_streamed = set(config.streamed_sources) - set(HF_SOURCES)
    if unknown_streamed:
        raise dg.Failure(description=f"streamed_sources has unknown names {sorted(unknown_streamed)}; streamed sources: {sorted(HF_SOURCES)}")
    not_enabled = set(config.streamed_sources) - set(enabled)
    if not_enabled:
        raise dg.Failure(
            description=f"streamed_sources names {sorted(not_enabled)}, which this code location does not define: streamed sources are opt-in; "
            f"start Dagster with THREAD_EMBED_STREAMED_SOURCES={','.join(sorted(not_enabled))} (or 'all') to add their chains (docs/data_sources.md, Streamed sources)"
        )
    frames = []
    streamed_meta: dict = {}
    specs = {**ALL_SOURCES, **user}
    for name, spec in specs.items():
        frame = pairs_by_source.get(f"pairs_{name}")
        if not spec.streamed and frame is None:
            continue  # not in this code location, or an export declared with train: false
        if spec.streamed:
            if name not in enabled:
                continue
            if name not in config.streamed_sources:
                streamed_meta[f"streamed/{name}"] = "not selected" + (" (materialised, ignored)" if frame is not None else "")
                continue
            if frame is None:
                raise dg.Failure(
                    description=f"streamed source {name!r} is selected in streamed_sources but {name}/pairs has never been materialised; "
                    f"run `dg launch --job refresh_{name}` (or materialise its chain) first"
                )
            frame = pd.read_parquet(frame)  # streamed pairs arrive as a path: only the selected ones are read
            streamed_meta[f"streamed/{name}"] = f"{len(frame)} pairs"
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True)
    platforms = {spec.platform for spec in specs.values()}
    unknown = set(config.exclude_platforms) - platforms
    if unknown:
        raise dg.Failure(description=f"exclude_platforms has unknown platforms {sorted(unknown)}; known: {sorted(platforms)}")
    excluded = {name for name, spec in specs.items() if spec.platform in config.exclude_platforms}
    selected_streamed = set(config.streamed_sources) - excluded
    selected, stats = select_training_pairs(
        merged,
        budget=config.budget,
        strategy_shares=config.strategy_shares,
        seed=config.seed,
        eval_texts=eval_texts(eval_sets),
        eval_conversation_ids=set(eval_sets["conversation_id"]),
        exclude_sources=excluded,
        eval_lines=eval_message_lines(eval_sets) if selected_streamed else frozenset(),
        line_checked_sources=selected_streamed,
        source_shares=config.source_shares or ({name: 1.0 for name in merged["source"].unique()} if config.equal_source_shares else None),
    )
    if selected.empty:
        raise dg.Failure(description="no training pairs left after the exclusions; check exclude_platforms and the pair assets")
    info = stats.as_dict()
    meta: dict = {"read": info["read"], "kept": info["kept"], "dropped_total": int(sum(info["dropped"].values()))}
    meta.update({f"dropped/{k}": int(v) for k, v in sorted(info["dropped"].items())})
    meta.update({f"available/{k}": int(v) for k, v in info["available_by_strategy"].items()})
    meta.update({f"kept_by_strategy/{k}": int(v) for k, v in info["kept_by_strategy"].items()})
    meta.update({f"kept_by_source/{k}": int(v) for k, v in info["kept_by_source"].items()})
    meta.update(streamed_meta)
    meta["preview"] = table_md(selected[["strategy", "source", "anchor", "positive"]])
    context.add_output_metadata(meta)
    return versioned_output(selected)


def build_model_asset(platforms: Mapping[str, str] | None = None) -> dg.AssetsDefinition:
    """``model``; ``platforms`` (source -> platform; default: the project's own sources) names the platforms it trains on."""
    platform_of = dict(platforms) if platforms is not None else {name: spec.platform for name, spec in ALL_SOURCES.items()}

    @dg.asset(
        name="model",
        group_name="training",
        kinds={"pytorch"},
        code_version=code_version("model"),
        automation_condition=UPDATE_ON_CHANGE,
        description="A sentence-transformers checkpoint (safetensors) trained with MatryoshkaLoss(MultipleNegativesRankingLoss).",
    )
    def model(
        context: dg.AssetExecutionContext, config: ModelConfig, trainer: TrainerResource, pipes_subprocess_client: dg.PipesSubprocessClient, training_pairs: pd.DataFrame
    ) -> dg.Output[dict]:
        trainer.apply_environment()
        settings = config.settings()
        output_dir = trainer.models_path() / config.model_name
        result = _launch_training(context, pipes_subprocess_client, training_pairs, settings, output_dir, config, trainer.device)
        summary = _model_summary(result, config, settings, training_pairs, output_dir, platform_of)
        context.add_output_metadata(model_metadata(summary, result.loss_history, settings, output_dir))
        # the data version is the trained weights' hash, not the summary (which holds timings)
        weights = sorted(output_dir.glob("*.safetensors"))
        return dg.Output(summary, data_version=dg.DataVersion(files_content_fingerprint(weights)))

    return model


def _model_summary(result: TrainingResult, config: ModelConfig, settings: TrainingSettings, training_pairs: pd.DataFrame, output_dir, platform_of: Mapping[str, str]) -> dict:
    """The ``model`` asset's value: where the checkpoint is, how it was trained, what it was offered."""
    return {
        "checkpoint_dir": str(output_dir),
        "base_model": settings.base_model,
        "matryoshka_dims": list(settings.matryoshka_dims),
        "train_pairs": result.train_pairs,
        "steps": result.steps,
        "planned_steps": result.planned_steps,
        "train_pairs_reason": result.budget_reason,
        "train_seconds": result.seconds,
        "pairs_per_second": result.pairs_per_second,
        "final_loss": result.final_loss,
        "bf16": result.bf16,
        "device": result.device,
        "peak_rss_mb": result.peak_rss_mb,
        "peak_gpu_mb": result.peak_gpu_mb,
        "processes": result.processes,
        "candidates_per_anchor": result.candidates_per_anchor,
        "resumed_from_step": result.resumed_from_step,
        "settings": config.model_dump(),
        # the pairs offered to training; with a time budget only `train_pairs` of them were trained
        "pairs_by_strategy": training_pairs["strategy"].value_counts().sort_index().to_dict(),
        "pairs_by_source": training_pairs["source"].value_counts().sort_index().to_dict(),
        "training_platforms": sorted({platform_of[s] for s in training_pairs["source"].unique() if s in platform_of}),
    }


def _launch_training(context, client: dg.PipesSubprocessClient, pairs: pd.DataFrame, settings: TrainingSettings, output_dir, config: ModelConfig, device) -> TrainingResult:
    """Run :mod:`thread_embed_pipeline.training.launch` through Dagster Pipes (under torchrun for
    ``nproc_per_node`` > 1); its rank 0 streams the logs and reports the :class:`TrainingResult`."""
    nproc = config.nproc_per_node
    try:
        check_training_inputs(pairs, settings, nproc)
        if nproc < 1:
            raise ValueError(f"nproc_per_node must be >= 1, got {nproc}")
    except ValueError as err:
        raise dg.Failure(description=f"model: {err}") from None
    with tempfile.TemporaryDirectory(prefix="thread-embed-launch-") as folder:
        pairs_path, settings_path = write_launch_files(pairs, settings, Path(folder))
        command = launch_command(nproc, pairs=pairs_path, settings=settings_path, output_dir=output_dir, device=device, callbacks=config.callbacks)
        context.log.info(f"launching the training program: {' '.join(command[1:])}")
        invocation = client.run(command=command, context=context, env=launch_environment(nproc, device))
    return result_from_json(invocation.get_materialize_result().metadata[RESULT_KEY].value)


training_pairs = build_training_pairs_asset()
model = build_model_asset()
