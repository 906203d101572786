"""``release/model``: the folder users load and ship, published to the Hugging Face Hub on request.

Thin wrapper around :func:`thread_embed_pipeline.release.make_release`. Pushing is opt-in
(``push: true`` and a ``repo_id``); the token is ``HF_TOKEN``, read through ``dg.EnvVar`` into
:class:`HubResource` and never logged or stored. Without it the folder is still written, and the
metadata says what would have been pushed.
"""

from typing import Optional

import dagster as dg

from thread_embed_pipeline import storage
from thread_embed_pipeline.orchestration.automation import versioned_output
from thread_embed_pipeline.release import PublishError, PublishSettings, make_release
from thread_embed_pipeline.versioning import code_version

RELEASE_KEY = dg.AssetKey(["release", "model"])
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
    key=RELEASE_KEY,
    ins={"model": dg.AssetIn("model")},
    deps=["eval_report"],
    group_name="release",
    kinds={"huggingface"},
    code_version=code_version("release"),
    description=(
        "The release folder (data/release/model/): the checkpoint, the model card as README.md and the dev-chosen "
        "hybrid weight; loads with SentenceTransformer(path). With push: true and repo_id it is published to the Hub "
        "(HF_TOKEN); the revision is recorded."
    ),
)
def release_model(context: dg.AssetExecutionContext, config: ReleaseConfig, hub: HubResource, model: dict) -> dg.Output[dict]:
    reports = storage.data_dir() / "reports"
    try:
        summary = make_release(model, reports, storage.data_dir() / "release" / "model", publish=config.publish(hub.endpoint), token=hub.token, log=context.log.info)
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
