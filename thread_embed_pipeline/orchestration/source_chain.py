"""One chain for every source: ``<source>/raw → corpus → (text) → pairs``, built by one factory.

Every source is a stream of raw rows. A file source (``sources/registry.py``) is a stream of one
piece: its manifest files parsed whole. A streamed source (``sources/hf_registry.py``) is read from
a Hugging Face dataset in record batches, sampled, out of core. From there on the chain is one:

* ``corpus``: ``streaming.build_corpus_stream`` over the raw Parquet file, in the source's pieces
  (``spec.piece_rows``; None: one piece), with the one corpus builder, ``corpus.corpus_table``.
* ``text`` (file sources): the text stage over the whole corpus, so pseudonyms are numbered per
  channel log. A streamed source applies it inside ``pairs``, per piece, to its sample of
  conversations only (a streamed corpus is too large to rewrite whole).
* ``pairs``: ``streaming.build_pairs_stream``, in the same pieces: seeded pairs, a seeded sample of
  conversations, chat hard negatives.

The assets are thin: they read config and resources, call the work function, attach metadata.
"""

from pathlib import Path
from typing import Optional, Sequence

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from thread_embed_pipeline import storage
from thread_embed_pipeline.disentanglement.scorers import DisentangleScorer
from thread_embed_pipeline.disentanglement.linking import link_export_timelines
from thread_embed_pipeline.orchestration.automation import UPDATE_ON_CHANGE, versioned_output
from thread_embed_pipeline.orchestration.keys import corpus_key, pairs_key, raw_key, text_key, upstream_key
from thread_embed_pipeline.orchestration.metadata import accounting_metadata, table_md
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource
from thread_embed_pipeline.pairs.builders import PairBuilderSettings
from thread_embed_pipeline.sources.catalog import ALL_SOURCES, Source
from thread_embed_pipeline.sources.download import ensure_source_files
from thread_embed_pipeline.sources.errors import SourceDataError
from thread_embed_pipeline.sources.hf import Sampling, resolve_files
from thread_embed_pipeline.sources.registry import slice_files
from thread_embed_pipeline.corpus.streaming import build_corpus_stream
from thread_embed_pipeline.pairs.streaming import build_pairs_stream
from thread_embed_pipeline.sources.raw_stream import write_raw_stream
from thread_embed_pipeline.text import TextSettings, prepare_text
from thread_embed_pipeline.versioning import code_version

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


# PairsConfig fields that are pair-builder settings (the rest: seed and hard negatives)
PAIR_BUILDER_FIELDS = tuple(name for name in PairsConfig.model_fields if name in PairBuilderSettings.__dataclass_fields__)


def pair_builder_settings(config: PairsConfig, **overrides) -> PairBuilderSettings:
    """The pair builder's settings from a pairs asset's config (plus per-source ``overrides``)."""
    return PairBuilderSettings(**config.model_dump(include=set(PAIR_BUILDER_FIELDS)), **overrides)


# --- metadata: what each stage shows in the UI, the same for every source --------------------


def raw_metadata(spec: Source, stats: dict, origin: dict) -> dict:
    """Files, rows by record type, and where the bytes came from (plus the dataset and sampling of a streamed
    source, and what a user export's reader counted: ``export/<what>``)."""
    return {
        **origin,
        "files": stats["files"],
        "read": stats["read"],
        "kept": stats["kept"],
        "dropped_total": 0,
        **{f"record_type/{k}": int(v) for k, v in sorted(stats["by_record_type"].items())},
        **{f"export/{k}": int(v) for k, v in sorted(stats.get("counts", {}).items())},
    }


def corpus_metadata(accounting: dict, path: Path) -> dict:
    """Row accounting, messages and conversations per split, the disentangler's links (``linked/<what>``,
    a user export without native threads), and a preview of the first rows."""
    meta = accounting_metadata(accounting)
    meta.update({k: int(v) for k, v in sorted(accounting.get("linked", {}).items())})
    meta.update({f"messages/{k}": int(v) for k, v in sorted(accounting["messages"].items())})
    meta.update({f"conversations/{k}": int(v) for k, v in sorted(accounting["conversations"].items())})
    head = next(pq.ParquetFile(path).iter_batches(batch_size=20, columns=["conversation_id", "message_idx", "author", "text", "split"]), None)
    if head is not None:
        meta["preview"] = table_md(head.to_pandas())
    return meta


def text_metadata(accounting: dict) -> dict:
    """Row accounting of the text stage plus its redaction and pseudonymisation counts."""
    meta = accounting_metadata(accounting)
    meta["speakers"] = accounting["scheme"]
    meta.update({f"redacted/{reason}": int(n) for reason, n in accounting["redacted"].items()})
    meta["mentions_rewritten"] = int(accounting["mentions_rewritten"])
    meta["speakers_pseudonymised"] = int(accounting["speakers_pseudonymised"])
    return meta


def pairs_metadata(frame: pd.DataFrame, stats: dict) -> dict:
    """What every pairs asset reports: conversations, skips, pairs per strategy and split, hard negatives, a preview."""
    meta = {
        "conversations_read": stats["conversations_read"],
        "conversations_sampled": stats["conversations_sampled"],
        "skipped_short_conversations": stats["skipped_short_conversations"],
        "skipped_identical_sides": stats["skipped_identical_sides"],
        **{f"pairs/{k}": int(v) for k, v in stats["pairs"].items()},
        **{f"pairs_in_split/{k}": int(v) for k, v in frame["split"].value_counts().sort_index().items()},
        **{f"hard_negatives/{k}": int(v["with_negative"]) for k, v in stats["hard_negatives"].items()},
        "preview": table_md(frame[["strategy", "anchor", "positive", "split"]]),
    }
    if stats["text"]:
        meta.update({f"text/{k}": v for k, v in text_metadata(stats["text"]).items()})
    return meta


# --- the chain ---------------------------------------------------------------------------------


_KEYS = {"raw": raw_key, "corpus": corpus_key, "text": text_key, "pairs": pairs_key}
# every chain step carries its stage as an op tag, for executors' tag_concurrency_limits (deploy/k8s/run_config.yaml)
STAGE_TAG = "thread_embed/stage"


def _chain_asset(spec: Source, stage: str, *, description: str, reads: tuple[str, str] | None = None, deps=(), kinds=frozenset({"parquet"}), automation=UPDATE_ON_CHANGE):
    """The ``dg.asset`` decorator of one stage of ``spec``'s chain: key ``<source>/<stage>``, the source's
    group, the stage's code version. ``reads``: (parameter name, upstream stage); None (raw): the observed source.
    ``deps``: further upstream assets it reads from disk (the disentangler's scorer)."""
    wiring = {"ins": {reads[0]: dg.AssetIn(_KEYS[reads[1]](spec.name))}, "deps": list(deps)} if reads else {"deps": [upstream_key(spec.name), *deps]}
    return dg.asset(
        key=_KEYS[stage](spec.name),
        group_name=spec.name,
        kinds=set(kinds),
        code_version=code_version(stage),
        automation_condition=automation,
        description=description,
        op_tags={STAGE_TAG: stage},
        **wiring,
    )


def _staging(chat_sources: ChatSourcesResource) -> Path:
    """Where Parquet files are written before the IO manager moves them into place (same file
    system as the default data folder, so the move is a rename)."""
    folder = chat_sources.cache_path() / "staging"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _failure(spec: Source, err: Exception) -> dg.Failure:
    # the message names the folder, file and line (or the dataset and setting); no traceback needed
    return dg.Failure(description=f"{spec.name}: {err}", metadata={"source": spec.name, "upstream": spec.upstream_ref})


def _file_raw(spec: Source, chat_sources: ChatSourcesResource, out: Path, log) -> dict:
    """A file source's raw stream: its manifest files (sliced per folder), parsed whole, one piece."""
    files = slice_files(spec.file_paths, chat_sources.max_files_per_folder)
    root = ensure_source_files(spec, mirror_dir=chat_sources.mirror_path(), cache_dir=chat_sources.cache_path(), verify_checksums=chat_sources.verify_checksums, log=log)
    log(f"parsing {len(files)} files of {spec.name}")
    stats = write_raw_stream(spec, root, files, Sampling(), out, log=log)
    return {"stats": stats, "origin": {"origin": "mirror" if chat_sources.mirror_path() else "upstream download"}}


def _streamed_raw(spec: Source, chat_sources: ChatSourcesResource, out: Path, log, config: StreamSamplingConfig) -> dict:
    """A streamed source's raw stream: the sampled records of its dataset, batch by batch."""
    sampling = config.sampling(spec.default_sampling)
    resolved = resolve_files(spec.name, spec.dataset, mirror_subdir=spec.mirror_subdir, mirror_dir=chat_sources.mirror_path(), cache_dir=chat_sources.cache_path(), sampling=sampling, log=log)
    stats = write_raw_stream(spec, resolved.root, resolved.paths, sampling, out, batch_rows=config.batch_rows, log=log, opener=resolved.open)
    if stats["read"] == 0:
        raise dg.Failure(description=f"{spec.name}: the sample of {resolved.paths} holds no records (units read {stats['units_read']}); widen the sampling")
    origin = {
        "dataset": spec.dataset.repo_id, "revision": spec.dataset.revision, "license": spec.license, "provenance": spec.provenance, "origin": resolved.origin,
        "data_files/available": resolved.available, "data_files/read": len(resolved.paths), "units_read": stats["units_read"], "units_kept": stats["units_kept"],
        **sampling.as_metadata(),
    }
    return {"stats": stats, "origin": origin}


def _export_raw(spec: Source, chat_sources: ChatSourcesResource, out: Path, log) -> dict:
    """A user export's raw stream: its format's reader over the declared file, zip or folder."""
    tree = spec.tree()
    log(f"reading {spec.name}: a {spec.format} export at {spec.path} ({tree.kind}, {len(tree.files())} files)")
    stats = write_raw_stream(spec, spec.path, [], Sampling(), out, log=log)
    if stats["read"] == 0:
        raise SourceDataError(f"{spec.path}: the export holds no messages ({spec.export_format.summary})")
    version, info = tree.fingerprint()
    origin = {"origin": "user export", "format": spec.format, "path": str(spec.path), "export_sha256": version[:16], "export_bytes": info["bytes"], "threads": spec.linker}
    return {"stats": {**stats, "files": info["files"]}, "origin": origin}


_RAW_READERS = {"mirror": _file_raw, "export": _export_raw}


def _raw_asset(spec: Source) -> dg.AssetsDefinition:
    def body(context: dg.AssetExecutionContext, chat_sources: ChatSourcesResource, config=None) -> dg.Output[Path]:
        out = _staging(chat_sources) / f"raw__{spec.name}.parquet"
        try:
            got = _streamed_raw(spec, chat_sources, out, context.log.info, config) if spec.streamed else _RAW_READERS[spec.kind](spec, chat_sources, out, context.log.info)
        except SourceDataError as err:
            raise _failure(spec, err) from err
        context.add_output_metadata(raw_metadata(spec, got["stats"], got["origin"]))
        return versioned_output(out)

    if spec.streamed:
        default = spec.default_sampling

        def raw(context: dg.AssetExecutionContext, config: StreamSamplingConfig, chat_sources: ChatSourcesResource) -> dg.Output[Path]:
            return body(context, chat_sources, config)

        description = (
            f"{spec.description} Streamed from {spec.dataset.repo_id}@{spec.dataset.revision[:12]} (mirror or Hub), "
            f"sampled (default: file_fraction={default.file_fraction}, unit_fraction={default.unit_fraction}, "
            f"max_units={default.max_units}) and written in Parquet row groups."
        )
    else:

        def raw(context: dg.AssetExecutionContext, chat_sources: ChatSourcesResource) -> dg.Output[Path]:
            return body(context, chat_sources)

        description = f"Every input line/message of {spec.name} ({spec.description}), with file and line."
        if spec.kind == "export":
            description = f"Every message, system event, bot post, edit and deletion of {spec.name} ({spec.description}), with its channel and line."
    # a streamed source is opt-in (its mirror folder or the Hub must be there): refreshed by its job
    return _chain_asset(
        spec, "raw", description=description, kinds={"parquet", "huggingface"} if spec.streamed else {"parquet"}, automation=None if spec.streamed else UPDATE_ON_CHANGE
    )(raw)


# the disentangler a user export without native threads is linked with (no embeddings: the model trains on its pairs)
LINKING_SCORER = "features_only"


def _linker(spec: Source, log):
    """None, or the disentangler's link step for ``spec``'s raw pieces (``link_unthreaded`` / an IRC log)."""
    if spec.linker != "disentangler":
        return None
    folder = storage.data_dir() / "disentanglement" / LINKING_SCORER
    try:
        scorer = DisentangleScorer.load(folder)
    except (FileNotFoundError, ValueError) as err:
        raise dg.Failure(description=f"{spec.name} is linked by the disentangler: {err} (thread_embed_job builds it before {spec.name}/corpus; "
                         f"or run `dg launch --assets 'disentanglement/{LINKING_SCORER}'`)") from None
    only_unthreaded = not spec.predicted_labels
    return lambda piece: link_export_timelines(piece, scorer, unthreaded_only=only_unthreaded, log=log)


def _corpus_asset(spec: Source) -> dg.AssetsDefinition:
    linked = spec.linker == "disentangler"
    note = " Conversations are linked by the project's disentangler (predicted labels, not native)." if linked else ""

    @_chain_asset(spec, "corpus", reads=("raw", "raw"), deps=[dg.AssetKey(["disentanglement", LINKING_SCORER])] if linked else (),
                  description=f"Messages of {spec.name} grouped into conversations, with a deterministic train/dev/test split.{note}")
    def corpus(context: dg.AssetExecutionContext, chat_sources: ChatSourcesResource, raw: Path) -> dg.Output[Path]:
        out = _staging(chat_sources) / f"corpus__{spec.name}.parquet"
        acc = build_corpus_stream(raw, out, source=spec.name, platform=spec.platform, cut_keys=spec.corpus_cut_keys, batch_rows=spec.piece_rows, link=_linker(spec, context.log.info), log=context.log.info)
        if acc["kept"] == 0:
            raise dg.Failure(description=f"{spec.name}: no message survived the corpus stage ({accounting_metadata(acc)})")
        context.add_output_metadata(corpus_metadata(acc, out))
        return versioned_output(out)

    return corpus


def _text_asset(spec: Source) -> dg.AssetsDefinition:
    @_chain_asset(
        spec,
        "text",
        reads=("corpus", "corpus"),
        description=(
            f"{spec.name}'s conversations as the model sees them: speakers pseudonymised (default per channel log), "
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

    return text


def _pairs_asset(spec: Source) -> dg.AssetsDefinition:
    def body(context: dg.AssetExecutionContext, config: PairsConfig, conversations: Path) -> dg.Output[pd.DataFrame]:
        frame, stats = build_pairs_stream(
            conversations,
            seed=config.seed,
            settings=pair_builder_settings(config, require_question_mark=spec.require_question_mark),
            strategies=spec.pair_strategies,
            conversation_fraction=getattr(config, "conversation_fraction", 1.0),
            max_conversations=getattr(config, "max_conversations", None),
            hard_negatives=config.hard_negatives,
            hard_negative_window_minutes=config.hard_negative_window_minutes,
            text_settings=config.text.settings() if spec.streamed else None,  # a file source's text asset did it
            batch_rows=spec.piece_rows,
            log=context.log.info,
        )
        context.add_output_metadata(pairs_metadata(frame, stats))
        return versioned_output(frame)

    if spec.streamed:

        def pairs(context: dg.AssetExecutionContext, config: StreamedPairsConfig, corpus: Path) -> dg.Output[pd.DataFrame]:
            return body(context, config, corpus)

        source_stage, what = "corpus", f"a seeded sample of {spec.name}'s conversations"
    else:

        def pairs(context: dg.AssetExecutionContext, config: PairsConfig, corpus: Path) -> dg.Output[pd.DataFrame]:
            return body(context, config, corpus)

        source_stage, what = "text", f"every {spec.name} conversation"
    return _chain_asset(spec, "pairs", reads=("corpus", source_stage), description=f"Seeded {' / '.join(spec.pair_strategies)} pairs of {what} (all splits).")(pairs)


def build_source_chain(spec: Source) -> list[dg.AssetsDefinition]:
    """``raw, corpus, [text,] pairs`` of one source (a file source has its own text asset)."""
    return [_raw_asset(spec), _corpus_asset(spec), *([] if spec.streamed else [_text_asset(spec)]), _pairs_asset(spec)]


def source_chain_assets(names: Sequence[str], user_sources: Sequence[Source] = ()) -> list[dg.AssetsDefinition]:
    """The chains of the named sources, in registry order, then those of the user's declared exports."""
    return [a for name, spec in ALL_SOURCES.items() if name in set(names) for a in build_source_chain(spec)] + [a for spec in user_sources for a in build_source_chain(spec)]
