"""<source>/raw → <source>/corpus → <source>/text → <source>/pairs, one chain per entry of the source registry."""


import dagster as dg
import pandas as pd

from thread_embed_pipeline.orchestration.automation import UPDATE_ON_CHANGE, versioned_output
from thread_embed_pipeline.orchestration.keys import corpus_key, pairs_key, raw_key, text_key, upstream_key
from thread_embed_pipeline.orchestration.metadata import accounting_metadata, table_md
from thread_embed_pipeline.versioning import code_version
from thread_embed_pipeline.corpus import build_corpus
from thread_embed_pipeline.hard_negatives import add_chat_hard_negatives
from thread_embed_pipeline.pairs import PairBuilderSettings, build_pairs
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource
from thread_embed_pipeline.sources.download import ensure_source_files
from thread_embed_pipeline.sources.errors import SourceDataError
from thread_embed_pipeline.sources.registry import SOURCES, SourceSpec, slice_files
from thread_embed_pipeline.text import TextSettings, prepare_text

_TEXT_DEFAULTS = TextSettings()
_PAIR_DEFAULTS = PairBuilderSettings()


class TextConfig(dg.Config):
    """What the model trains on: speaker pseudonyms, redaction, bot and short-conversation drops
    (fields and defaults are ``text.TextSettings``; a test keeps the two equal)."""

    speakers: str = _TEXT_DEFAULTS.speakers  # one of SPEAKER_SCHEMES
    rewrite_mentions: bool = _TEXT_DEFAULTS.rewrite_mentions
    redact_urls: bool = _TEXT_DEFAULTS.redact_urls
    redact_emails: bool = _TEXT_DEFAULTS.redact_emails
    redact_secrets: bool = _TEXT_DEFAULTS.redact_secrets
    drop_bots: bool = _TEXT_DEFAULTS.drop_bots
    min_conversation_messages: int = _TEXT_DEFAULTS.min_conversation_messages

    def settings(self) -> TextSettings:
        return TextSettings(**self.model_dump())


class PairsConfig(dg.Config):
    """How many pairs of each shape to draw per conversation (defaults: ``pairs.PairBuilderSettings``),
    the sampling seed and the chat hard negatives."""

    seed: int = 13
    thread_pairs_per_conversation: int = _PAIR_DEFAULTS.thread_pairs_per_conversation
    thread_positive_messages: int = _PAIR_DEFAULTS.thread_positive_messages
    query_response_pairs_per_conversation: int = _PAIR_DEFAULTS.query_response_pairs_per_conversation
    adjacency_window_messages: int = _PAIR_DEFAULTS.adjacency_window_messages
    adjacency_pairs_per_conversation: int = _PAIR_DEFAULTS.adjacency_pairs_per_conversation
    # a hard negative per pair from another thread of the same channel at the same time (None if none)
    hard_negatives: bool = True
    hard_negative_window_minutes: int = 30


# PairsConfig fields that are pair-builder settings (the rest: seed and hard negatives)
PAIR_BUILDER_FIELDS = tuple(name for name in PairsConfig.model_fields if name in PairBuilderSettings.__dataclass_fields__)


def pair_builder_settings(config: PairsConfig, **overrides) -> PairBuilderSettings:
    """The pair builder's settings from a pairs asset's config (plus per-source ``overrides``)."""
    return PairBuilderSettings(**config.model_dump(include=set(PAIR_BUILDER_FIELDS)), **overrides)


def pairs_metadata(frame: pd.DataFrame, stats: dict, negative_counts: dict) -> dict:
    """What every pairs asset reports: skips, pairs per strategy and split, hard negatives, a preview."""
    return {
        "skipped_short_conversations": stats["skipped_short_conversations"],
        "skipped_identical_sides": stats["skipped_identical_sides"],
        **{f"pairs/{k}": int(v) for k, v in stats["pairs"].items()},
        **{f"pairs_in_split/{k}": int(v) for k, v in frame["split"].value_counts().sort_index().items()},
        **{f"hard_negatives/{k}": int(v["with_negative"]) for k, v in negative_counts.items()},
        "preview": table_md(frame[["strategy", "anchor", "positive", "split"]]),
    }


def text_metadata(accounting: dict) -> dict:
    """Row accounting of the text stage plus its redaction and pseudonymisation counts."""
    meta = accounting_metadata(accounting)
    meta["speakers"] = accounting["scheme"]
    meta.update({f"redacted/{reason}": int(n) for reason, n in accounting["redacted"].items()})
    meta["mentions_rewritten"] = int(accounting["mentions_rewritten"])
    meta["speakers_pseudonymised"] = int(accounting["speakers_pseudonymised"])
    return meta



def build_source_assets(spec: SourceSpec) -> list[dg.AssetsDefinition]:
    name = spec.name

    @dg.asset(
        key=raw_key(name),
        deps=[upstream_key(name)],
        group_name=name,
        kinds={"parquet"},
        code_version=code_version("raw"),
        automation_condition=UPDATE_ON_CHANGE,
        description=f"Every input line/message of {name} ({spec.description}), with file and line.",
    )
    def raw(context: dg.AssetExecutionContext, chat_sources: ChatSourcesResource) -> dg.Output[pd.DataFrame]:
        files = slice_files([entry["path"] for entry in spec.manifest["files"]], chat_sources.max_files_per_folder)
        try:
            root = ensure_source_files(
                spec,
                mirror_dir=chat_sources.mirror_path(),
                cache_dir=chat_sources.cache_path(),
                verify_checksums=chat_sources.verify_checksums,
                log=context.log.info,
            )
            context.log.info(f"parsing {len(files)} files of {name}")
            frame = spec.parse(root, files)
        except SourceDataError as err:
            # the message names the folder, file and line; no need to read a traceback
            raise dg.Failure(description=f"{name}: {err}", metadata={"source": name}) from err
        by_type = frame["record_type"].value_counts().to_dict()
        context.add_output_metadata(
            {
                "files": len(files),
                "read": len(frame),
                "kept": len(frame),
                "dropped_total": 0,
                **{f"record_type/{k}": int(v) for k, v in sorted(by_type.items())},
                "origin": "mirror" if chat_sources.mirror_path() else "upstream download",
            }
        )
        return versioned_output(frame)

    @dg.asset(
        key=corpus_key(name),
        ins={"raw": dg.AssetIn(raw_key(name))},
        group_name=name,
        kinds={"parquet"},
        code_version=code_version("corpus"),
        automation_condition=UPDATE_ON_CHANGE,
        description=f"Messages of {name} grouped into conversations, with a deterministic train/dev/test split.",
    )
    def corpus(context: dg.AssetExecutionContext, raw: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        frame, accounting = build_corpus(raw, source=name, platform=spec.platform)
        per_split = frame.groupby("split").agg(messages=("text", "size"), conversations=("conversation_id", "nunique"))
        meta = accounting_metadata(accounting)
        for split, row in per_split.iterrows():
            meta[f"messages/{split}"] = int(row["messages"])
            meta[f"conversations/{split}"] = int(row["conversations"])
        meta["preview"] = table_md(frame[["conversation_id", "message_idx", "author", "text", "split"]])
        context.add_output_metadata(meta)
        return versioned_output(frame)

    @dg.asset(
        key=text_key(name),
        ins={"corpus": dg.AssetIn(corpus_key(name))},
        group_name=name,
        kinds={"parquet"},
        code_version=code_version("text"),
        automation_condition=UPDATE_ON_CHANGE,
        description=(
            f"{name}'s conversations as the model sees them: speakers pseudonymised (default per channel log), "
            "mentions rewritten, URLs / e-mails / secrets redacted, bots and too-short conversations dropped. "
            "Nothing downstream of this asset carries an original speaker name."
        ),
    )
    def text(context: dg.AssetExecutionContext, config: TextConfig, corpus: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        frame, accounting = prepare_text(corpus, config.settings())
        meta = text_metadata(accounting)
        meta["preview"] = table_md(frame[["conversation_id", "message_idx", "author", "text", "split"]])
        context.add_output_metadata(meta)
        return versioned_output(frame)

    @dg.asset(
        key=pairs_key(name),
        ins={"corpus": dg.AssetIn(text_key(name))},
        group_name=name,
        kinds={"parquet"},
        code_version=code_version("pairs"),
        automation_condition=UPDATE_ON_CHANGE,
        description=f"Seeded thread / query-response / adjacency pairs of every {name} conversation (all splits).",
    )
    def pairs(context: dg.AssetExecutionContext, config: PairsConfig, corpus: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        frame, stats = build_pairs(corpus, seed=config.seed, settings=pair_builder_settings(config))
        negative_counts: dict = {}
        if config.hard_negatives:
            frame, negative_counts = add_chat_hard_negatives(frame, corpus, seed=config.seed, window_minutes=config.hard_negative_window_minutes)
        meta = {"conversations": stats["conversations"], **pairs_metadata(frame, stats, negative_counts)}
        context.add_output_metadata(meta)
        return versioned_output(frame)

    return [raw, corpus, text, pairs]


def all_source_assets() -> list[dg.AssetsDefinition]:
    return [a for spec in SOURCES.values() for a in build_source_assets(spec)]
