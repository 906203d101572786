"""``model_onnx`` (the checkpoint exported to ONNX, fp32 and int8), ``release/model`` (the folder users
load and ship, published to the Hugging Face Hub on request) and ``search_index/<source>`` (each
source's threads indexed with the released model, for ``python -m thread_embed_pipeline.search``).

Thin wrapper around :func:`thread_embed_pipeline.release.make_release`. Pushing is opt-in
(``push: true`` and a ``repo_id``); the token is ``HF_TOKEN``, read through ``dg.EnvVar`` into
:class:`HubResource` and never logged or stored. Without it the folder is still written, and the
metadata says what would have been pushed.
"""

from pathlib import Path
from typing import Optional

import dagster as dg

from thread_embed_pipeline import storage
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
from thread_embed_pipeline.release.onnx import export_onnx
from thread_embed_pipeline.orchestration.automation import versioned_output
from thread_embed_pipeline.orchestration.keys import text_key
from thread_embed_pipeline.orchestration.metadata import table_md
from thread_embed_pipeline.release.hub import PublishError, PublishSettings, make_release
from thread_embed_pipeline.search.retriever import build_search_index, index_path
from thread_embed_pipeline.versioning import code_version

RELEASE_KEY = dg.AssetKey(["release", "model"])
ONNX_SUFFIX = "-onnx"  # models/<checkpoint name>-onnx/
_DEFAULT_PUBLISH = PublishSettings(repo_id="")


class HubResource(dg.ConfigurableResource):
    """Where releases go: the token (``HF_TOKEN``, as a ``dg.EnvVar``) and the Hub endpoint (``HF_ENDPOINT``; None: huggingface.co)."""

    token: Optional[str] = None
    endpoint: Optional[str] = None


class ReleaseConfig(dg.Config):
    """Whether and where to publish (defaults: ``release.PublishSettings``)."""

    push: bool = False
    repo_id: Optional[str] = None  # "<user or org>/<name>"
    private: bool = _DEFAULT_PUBLISH.private
    create_pr: bool = _DEFAULT_PUBLISH.create_pr
    commit_message: str = _DEFAULT_PUBLISH.commit_message

    def publish(self, endpoint: Optional[str]) -> Optional[PublishSettings]:
        if not self.push:
            return None
        if not self.repo_id or "/" not in self.repo_id:
            raise dg.Failure(description=f"push: true needs repo_id as '<user or org>/<name>', got {self.repo_id!r}")
        return PublishSettings(repo_id=self.repo_id, private=self.private, create_pr=self.create_pr, commit_message=self.commit_message, endpoint=endpoint)


@dg.asset(
    group_name="release",
    kinds={"onnx"},
    code_version=code_version("onnx"),
    description=(
        "The checkpoint exported to ONNX for CPU inference: models/<name>-onnx/ holds the checkpoint's files and "
        "onnx/model.onnx (fp32) and onnx/model_qint8.onnx (dynamic int8), each checked against PyTorch. "
        "Score them with eval_report's onnx_variants: true; the release folder ships both."
    ),
)
def model_onnx(context: dg.AssetExecutionContext, model: dict) -> dg.Output[dict]:
    checkpoint = Path(model["checkpoint_dir"])
    try:
        summary = export_onnx(checkpoint, checkpoint.with_name(checkpoint.name + ONNX_SUFFIX), log=context.log.info)
    except FileNotFoundError as err:
        raise dg.Failure(description=str(err)) from None
    meta: dict = {"folder": dg.MetadataValue.path(summary["folder"]), "opset": summary["opset"], "export_s": summary["export_s"], "quantize_s": summary["quantize_s"]}
    meta["fused_operators"] = ", ".join(f"{op} {n}" for op, n in summary["fused"].items()) or "none"
    for name, variant in summary["variants"].items():
        meta[f"{name}/file"] = variant["file"]
        meta[f"{name}/megabytes"] = round(variant["bytes"] / 1e6, 1)
        meta[f"{name}/min_cosine_vs_pytorch"] = variant["min_cosine_vs_pytorch"]
    context.add_output_metadata(meta)
    return versioned_output(summary)


@dg.asset(
    key=RELEASE_KEY,
    ins={"model": dg.AssetIn("model"), "model_onnx": dg.AssetIn("model_onnx")},
    deps=["eval_report"],
    group_name="release",
    kinds={"huggingface"},
    code_version=code_version("release"),
    description=(
        "The release folder (data/release/model/): the checkpoint, its ONNX exports (onnx/), the model card as README.md "
        "and the dev-chosen hybrid weight; loads with SentenceTransformer(path). With push: true and repo_id it is published to the Hub "
        "(HF_TOKEN); the revision is recorded."
    ),
)
def release_model(context: dg.AssetExecutionContext, config: ReleaseConfig, hub: HubResource, model: dict, model_onnx: dict) -> dg.Output[dict]:
    reports = storage.data_dir() / "reports"
    try:
        summary = make_release(model, reports, storage.data_dir() / "release" / "model", onnx=model_onnx, publish=config.publish(hub.endpoint), token=hub.token, log=context.log.info)
    except (PublishError, FileNotFoundError) as err:
        raise dg.Failure(description=str(err)) from None
    meta = {k: summary[k] for k in ("files", "bytes", "pushed") }
    meta["folder"] = dg.MetadataValue.path(summary["folder"])
    meta["manifest"] = dg.MetadataValue.json(summary["manifest"])
    if summary["pushed"]:
        meta.update(repo_id=summary["repo_id"], revision=summary["revision"], commit=dg.MetadataValue.url(summary["commit_url"]), private=summary["private"])
        if summary["pr_url"]:
            meta["pull_request"] = dg.MetadataValue.url(summary["pr_url"])
    else:
        meta["not_pushed"] = summary["not_pushed"]
    context.add_output_metadata(meta)
    return versioned_output(summary)


class SearchIndexConfig(dg.Config):
    """Which threads to index: ``test`` (the default: what the eval holds out) or ``all``, or ``train`` / ``dev``."""

    split: str = "test"


def search_index_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["search_index", source])


def build_search_index_asset(source: str) -> dg.AssetsDefinition:
    """``search_index/<source>``: the source's threads embedded by the released model (``data/search/<source>__<split>.parquet``)."""

    @dg.asset(
        key=search_index_key(source),
        ins={"text": dg.AssetIn(text_key(source))},
        deps=[RELEASE_KEY],
        group_name="release",
        kinds={"parquet"},
        code_version=code_version("search_index"),
        description=(
            f"The {source} threads (test split by default) embedded by data/release/model at its dev-chosen dim, float32, in "
            f"data/search/{source}__<split>.parquet with the model fingerprint, dim and precision in its metadata: "
            f"python -m thread_embed_pipeline.search \"<question>\" --source {source} answers from it without re-encoding."
        ),
    )
    def _search_index(context: dg.AssetExecutionContext, config: SearchIndexConfig, text) -> dg.Output[dict]:
        if config.split not in ("train", "dev", "test", "all"):
            raise dg.Failure(description=f"split must be train, dev, test or all, got {config.split!r}")
        release = storage.data_dir() / "release" / "model"
        try:
            # through the embedding cache: the test messages eval_report encoded with this model are not encoded again
            with EmbeddingCache(storage.data_dir() / "embedding_cache.duckdb") as cache:
                summary = build_search_index(text, release, index_path(source, config.split), split=config.split, cache=cache, log=context.log.info)
        except (FileNotFoundError, ValueError) as err:
            raise dg.Failure(description=str(err)) from None
        preview = text[text["split"] == config.split] if config.split != "all" else text
        meta = {k: summary[k] for k in ("threads", "messages", "split", "model", "dim", "precision", "weight", "maxsim")}
        meta["model_fingerprint"] = summary["model_fingerprint"][:12]
        meta["megabytes"] = round(summary["bytes"] / 1e6, 2)
        meta["index"] = dg.MetadataValue.path(summary["path"])
        meta["try_it"] = dg.MetadataValue.md(f"```\npython -m thread_embed_pipeline.search \"<a question>\" --source {source} --split {config.split}\n```")
        meta["preview"] = table_md(preview[["conversation_id", "author", "text"]].head(5))
        context.add_output_metadata(meta)
        return versioned_output(summary)

    return _search_index
