"""``message_index``: every message of every file source, embedded by the released model, in a LanceDB table
with an ANN index (:mod:`thread_embed_pipeline.search.message_index`), for searching a workspace's whole history.

Opt-in (group ``workspace_search``, job ``message_index_job``): encoding ~170,000 messages takes about an
hour on a 2-core CPU. Once it has been built, the automation sensor keeps it current: a source whose
text changed updates the index incrementally (only new messages are encoded).
"""


import json
from collections.abc import Sequence
from typing import Optional

import dagster as dg
import pandas as pd

from thread_embed_pipeline import storage
from thread_embed_pipeline.evaluation.embedders import load_local_embedder, model_fingerprint
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
from thread_embed_pipeline.search.message_index import IndexSettings, default_index_dir as message_index_dir, message_rows, update_index
from thread_embed_pipeline.orchestration.automation import UPDATE_ON_CHANGE, versioned_output
from thread_embed_pipeline.orchestration.keys import text_key
from thread_embed_pipeline.orchestration.release_assets import RELEASE_KEY
from thread_embed_pipeline.search.retriever import SETTINGS_FILE
from thread_embed_pipeline.versioning import code_version

MESSAGE_INDEX_KEY = dg.AssetKey(["message_index"])
GROUP = "workspace_search"
_DEFAULT = IndexSettings()


class MessageIndexConfig(dg.Config):
    """Which messages go in, and the index parameters (defaults: ``message_index.IndexSettings``)."""

    split: str = "all"  # train, dev, test or all
    index_type: str = _DEFAULT.index_type
    ann_min_rows: int = _DEFAULT.ann_min_rows
    num_partitions: Optional[int] = _DEFAULT.num_partitions
    m: int = _DEFAULT.m
    ef_construction: int = _DEFAULT.ef_construction
    ef: int = _DEFAULT.ef
    nprobes: int = _DEFAULT.nprobes
    refine_factor: int = _DEFAULT.refine_factor
    candidates: int = _DEFAULT.candidates

    def settings(self) -> IndexSettings:
        return IndexSettings(**self.model_dump(exclude={"split"}))


def build_message_index_asset(sources: Sequence[str]) -> dg.AssetsDefinition:
    @dg.asset(
        key=MESSAGE_INDEX_KEY,
        ins={f"text_{name}": dg.AssetIn(text_key(name)) for name in sources},
        deps=[RELEASE_KEY],
        group_name=GROUP,
        kinds={"lancedb"},
        code_version=code_version("message_index"),
        # updated by the sensor once a user has built it; never built unasked (it is the costly one)
        automation_condition=UPDATE_ON_CHANGE & ~dg.AutomationCondition.missing(),
        description=(
            "Every message of every file source embedded by data/release/model at its dev-chosen dim, in a LanceDB table "
            "with an IVF_HNSW_SQ index and float32 rescoring (data/search/messages/, or the folder or LanceDB URI in "
            "THREAD_EMBED_MESSAGE_INDEX). Rebuilt only when the model changes; "
            "otherwise only new messages are encoded and added. Search it with "
            "python -m thread_embed_pipeline.search \"<question>\" --index messages."
        ),
    )
    def message_index(context: dg.AssetExecutionContext, config: MessageIndexConfig, **texts: pd.DataFrame) -> dg.Output[dict]:
        if config.split not in ("train", "dev", "test", "all"):
            raise dg.Failure(description=f"split must be train, dev, test or all, got {config.split!r}")
        release = storage.data_dir() / "release" / "model"
        settings_file = release / SETTINGS_FILE
        if not settings_file.is_file():
            raise dg.Failure(description=f"no {settings_file}: materialise release/model first")
        dim = int(json.loads(settings_file.read_text(encoding="utf-8"))["dim"])
        rows = pd.concat([message_rows(frame, None if config.split == "all" else config.split) for frame in texts.values()], ignore_index=True)
        try:
            settings = config.settings()
        except (TypeError, ValueError) as err:
            raise dg.Failure(description=f"message_index config: {err}") from None
        with EmbeddingCache(storage.data_dir() / "embedding_cache.duckdb") as cache:
            embedder = load_local_embedder(str(release), name="message_index", cache=cache, log=context.log.info)
            summary = update_index(
                message_index_dir(), rows, lambda batch: embedder.embed(batch, dim),
                model_id=model_fingerprint(release, max_seq_length=getattr(embedder.model, "max_seq_length", None)),
                dim=dim, settings=settings, log=context.log.info,
            )
        meta = {k: summary[k] for k in ("mode", "messages", "added", "removed", "dim", "precision", "ann", "encode_s", "seconds")}
        meta["model_fingerprint"] = summary["model_id"][:12]
        if summary["bytes"] is not None:  # a local index (a URI's size is the store's to report)
            meta["bytes_per_message"] = round(summary["bytes"] / max(summary["messages"], 1), 1)
        meta["index_parameters"] = dg.MetadataValue.json(summary["settings"])
        meta["index"] = dg.MetadataValue.path(str(message_index_dir()))  # THREAD_EMBED_MESSAGE_INDEX, or data/search/messages
        meta["try_it"] = dg.MetadataValue.md("```\npython -m thread_embed_pipeline.search \"<a question>\" --index messages\n```")
        context.add_output_metadata(meta)
        return versioned_output({k: v for k, v in summary.items() if k not in ("encode_s", "seconds")})

    return message_index
