"""<source>/raw → <source>/corpus → <source>/pairs for the streamed (Hugging Face) sources.

Thin wrappers around :mod:`thread_embed_pipeline.streaming`: raw and corpus are written out of
core (Parquet row groups) and handed to the IO manager as a ``Path``; pairs are a seeded sample
of conversations, small enough to be a DataFrame.
"""

from typing import Optional, Sequence

from pathlib import Path

import dagster as dg
import pandas as pd

from thread_embed_pipeline.orchestration.automation import UPDATE_ON_CHANGE, versioned_output
from thread_embed_pipeline.orchestration.keys import corpus_key, pairs_key, raw_key, upstream_key
from thread_embed_pipeline.orchestration.source_assets import PairsConfig, TextConfig, pair_builder_settings, pairs_metadata, text_metadata
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource
from thread_embed_pipeline.sources.errors import SourceDataError
from thread_embed_pipeline.sources.hf import Sampling, resolve_files
from thread_embed_pipeline.sources.hf_registry import HF_SOURCES, HfSourceSpec
from thread_embed_pipeline.versioning import code_version
from thread_embed_pipeline.streaming import build_corpus_stream, build_pairs_stream, write_raw_stream


class StreamSamplingConfig(dg.Config):
    """Which part of a streamed source to read; unset fields take the source's default (see the
    asset description). ``all_units`` lifts the default cap on upstream records."""

    file_fraction: Optional[float] = None
    unit_fraction: Optional[float] = None
    max_units: Optional[int] = None
    all_units: bool = False
    seed: int = 0
    batch_rows: Optional[int] = None  # upstream records per batch; None: the source's default

    def sampling(self, default: Sampling) -> Sampling:
        return Sampling(
            file_fraction=self.file_fraction if self.file_fraction is not None else default.file_fraction,
            unit_fraction=self.unit_fraction if self.unit_fraction is not None else default.unit_fraction,
            max_units=None if self.all_units else (self.max_units if self.max_units is not None else default.max_units),
            seed=self.seed,
        )


class StreamedPairsConfig(PairsConfig):
    """``PairsConfig`` plus a seeded sample of conversations, and the text stage applied to each
    piece before pairing (the streamed chains have no separate text asset: they are built out of core)."""

    conversation_fraction: float = 1.0
    max_conversations: Optional[int] = None
    text: TextConfig = TextConfig()


def _staging(chat_sources: ChatSourcesResource) -> Path:
    """Where streamed Parquet files are written before the IO manager moves them into place
    (same file system as the default data folder, so the move is a rename)."""
    folder = chat_sources.cache_path() / "staging"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _raw_metadata(spec: HfSourceSpec, resolved, stats: dict, sampling) -> dict:
    return {
        "dataset": spec.dataset.repo_id,
        "revision": spec.dataset.revision,
        "license": spec.license,
        "provenance": spec.provenance,
        "origin": resolved.origin,
        "data_files/available": resolved.available,
        "data_files/read": len(resolved.paths),
        "units_read": stats["units_read"],
        "units_kept": stats["units_kept"],
        "read": stats["read"],
        "kept": stats["kept"],
        "dropped_total": 0,
        **{f"record_type/{k}": v for k, v in stats["by_record_type"].items()},
        **sampling.as_metadata(),
    }


def build_streamed_source_assets(spec: HfSourceSpec) -> list[dg.AssetsDefinition]:
    name = spec.name
    default = spec.default_sampling

    @dg.asset(
        key=raw_key(name),
        deps=[upstream_key(name)],
        group_name=name,
        kinds={"parquet", "huggingface"},
        code_version=code_version("raw"),
        # no automation: a streamed source is opt-in (its mirror folder or the Hub must be there)
        description=(
            f"{spec.description} Streamed from {spec.dataset.repo_id}@{spec.dataset.revision[:12]} (mirror or Hub), "
            f"sampled (default: file_fraction={default.file_fraction}, unit_fraction={default.unit_fraction}, "
            f"max_units={default.max_units}) and written in Parquet row groups."
        ),
    )
    def raw(context: dg.AssetExecutionContext, config: StreamSamplingConfig, chat_sources: ChatSourcesResource) -> dg.Output[Path]:
        sampling = config.sampling(default)
        try:
            resolved = resolve_files(
                name,
                spec.dataset,
                mirror_subdir=spec.mirror_subdir,
                mirror_dir=chat_sources.mirror_path(),
                cache_dir=chat_sources.cache_path(),
                sampling=sampling,
                log=context.log.info,
            )
            out = _staging(chat_sources) / f"raw__{name}.parquet"
            stats = write_raw_stream(spec, resolved.root, resolved.paths, sampling, out, batch_rows=config.batch_rows, log=context.log.info, opener=resolved.open)
        except SourceDataError as err:
            raise dg.Failure(description=f"{name}: {err}", metadata={"source": name, "dataset": spec.dataset.repo_id}) from err
        if stats["read"] == 0:
            raise dg.Failure(description=f"{name}: the sample of {resolved.paths} holds no records (units read {stats['units_read']}); widen the sampling")
        context.add_output_metadata(_raw_metadata(spec, resolved, stats, sampling))
        return versioned_output(out)

    @dg.asset(
        key=corpus_key(name),
        ins={"raw": dg.AssetIn(raw_key(name))},
        group_name=name,
        kinds={"parquet"},
        code_version=code_version("corpus"),
        automation_condition=UPDATE_ON_CHANGE,
        description=f"Messages of {name} grouped into conversations, built out of core, with a stable hash split.",
    )
    def corpus(context: dg.AssetExecutionContext, chat_sources: ChatSourcesResource, raw: Path) -> dg.Output[Path]:
        out = _staging(chat_sources) / f"corpus__{name}.parquet"
        acc = build_corpus_stream(raw, out, source=name, platform=spec.platform, cut_keys=spec.corpus_cut_keys, log=context.log.info)
        meta: dict = {"read": acc["read"], "kept": acc["kept"], "dropped_total": int(sum(acc["dropped"].values()))}
        meta.update({f"dropped/{k}": int(v) for k, v in sorted(acc["dropped"].items())})
        meta.update({f"messages/{k}": int(v) for k, v in sorted(acc["messages"].items())})
        meta.update({f"conversations/{k}": int(v) for k, v in sorted(acc["conversations"].items())})
        if acc["kept"] == 0:
            raise dg.Failure(description=f"{name}: no message survived the corpus stage ({meta})")
        context.add_output_metadata(meta)
        return versioned_output(out)

    @dg.asset(
        key=pairs_key(name),
        ins={"corpus": dg.AssetIn(corpus_key(name))},
        group_name=name,
        kinds={"parquet"},
        code_version=code_version("pairs"),
        automation_condition=UPDATE_ON_CHANGE,
        description=f"Seeded {' / '.join(spec.pair_strategies)} pairs of a seeded sample of {name}'s conversations (all splits).",
    )
    def pairs(context: dg.AssetExecutionContext, config: StreamedPairsConfig, corpus: Path) -> dg.Output[pd.DataFrame]:
        settings = pair_builder_settings(config, require_question_mark=spec.require_question_mark)
        frame, stats = build_pairs_stream(
            corpus,
            seed=config.seed,
            settings=settings,
            strategies=spec.pair_strategies,
            conversation_fraction=config.conversation_fraction,
            max_conversations=config.max_conversations,
            hard_negatives=config.hard_negatives,
            hard_negative_window_minutes=config.hard_negative_window_minutes,
            text_settings=config.text.settings(),
            log=context.log.info,
        )
        meta = {
            "conversations_read": stats["conversations_read"],
            "conversations_sampled": stats["conversations_sampled"],
            "sampling/conversation_fraction": config.conversation_fraction,
            "sampling/max_conversations": config.max_conversations if config.max_conversations is not None else "all",
            **pairs_metadata(frame, stats, stats["hard_negatives"]),
            **{f"text/{k}": v for k, v in text_metadata(stats["text"]).items()},
        }
        context.add_output_metadata(meta)
        return versioned_output(frame)

    return [raw, corpus, pairs]


def all_streamed_source_assets(names: Sequence[str] = tuple(HF_SOURCES)) -> list[dg.AssetsDefinition]:
    return [a for name in names for a in build_streamed_source_assets(HF_SOURCES[name])]
