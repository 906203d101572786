"""The release: a folder users can load and ship, and its publication on the Hugging Face Hub.

:func:`assemble_release` builds the folder from the checkpoint (the ``model`` asset's), the model card
(``README.md``: the eval report's card, with the Hub's model-index metadata) and the dev-chosen hybrid
weight. The folder loads with ``SentenceTransformer(path)``. It is built beside its target and renamed
into place, so a killed run leaves the previous release whole.

:func:`publish_release` uploads the folder with ``huggingface_hub`` (``create_repo`` + ``upload_folder``,
as the reference's ``push_to_hub`` does) and returns the commit it made. Server errors (5xx) and
connection failures are retried with backoff; a refused token (401/403) fails at once with a message
that says what to fix. The token is passed in and is never logged, stored or put into a message.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from thread_embed_pipeline.sources.fetch import RetriesExhausted, describe, with_retries
from thread_embed_pipeline.storage import replace_dir
from thread_embed_pipeline.versioning import file_fingerprint

CARD_FILE = "README.md"
# written by the eval report beside the card, copied into the release when present
EXTRA_FILES = ("hybrid_retriever.json",)


class PublishError(RuntimeError):
    """Publishing the release failed; the message says why and what to do."""


@dataclass(frozen=True)
class PublishSettings:
    repo_id: str  # "<user or org>/<name>"
    private: bool = True
    create_pr: bool = False
    commit_message: str = "Upload ThreadEmbed model"
    endpoint: str | None = None  # None: the Hub (or HF_ENDPOINT)


def assemble_release(checkpoint: Path, out: Path, *, card: str, extras: Path | None = None, onnx_dir: Path | None = None) -> dict:
    """Copy the checkpoint, the card text (as ``README.md``), the files of :data:`EXTRA_FILES` found in
    ``extras`` and the ONNX files of ``onnx_dir`` (as ``onnx/``, the Hub layout) into ``out`` (replaced
    whole). Returns ``{"files": [{"path", "bytes", "sha256"}], "bytes"}``."""
    checkpoint, out = Path(checkpoint), Path(out)
    require_checkpoint(checkpoint)
    if onnx_dir is not None and not any(Path(onnx_dir).glob("*.onnx")):
        raise FileNotFoundError(f"no ONNX files in {onnx_dir}; materialise `model_onnx` first")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(checkpoint, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", "runs", "onnx", CARD_FILE))
        if onnx_dir is not None:
            shutil.copytree(onnx_dir, staging / "onnx", ignore=shutil.ignore_patterns("*.tmp"))
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        for name in EXTRA_FILES:
            if extras is not None and (Path(extras) / name).is_file():
                shutil.copyfile(Path(extras) / name, staging / name)
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = [{"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size, "sha256": file_fingerprint(p)} for p in sorted(out.rglob("*")) if p.is_file()]
    return {"files": files, "bytes": sum(f["bytes"] for f in files)}


def require_checkpoint(checkpoint: Path) -> None:
    if not (Path(checkpoint) / "modules.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a Sentence Transformers checkpoint (no modules.json); materialise `model` first")


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def publish_release(
    folder: Path,
    settings: PublishSettings,
    *,
    token: str,
    log: Callable[[str], None] = print,
    retries: int = 3,
    backoff_s: float = 1.0,
    sleep: Callable[[float], None] | None = None,
) -> dict:
    """Create (if needed) ``settings.repo_id`` and upload ``folder`` as one commit (or pull request).

    Returns ``{"repo_id", "revision" (the commit sha), "commit_url", "pr_url", "private"}``.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN to a token with write access to publish")
    api = HfApi(endpoint=settings.endpoint, token=token)

    def push() -> dict:
        api.create_repo(settings.repo_id, repo_type="model", private=settings.private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=settings.repo_id, repo_type="model", commit_message=settings.commit_message, create_pr=settings.create_pr
        )
        return {"repo_id": settings.repo_id, "revision": info.oid, "commit_url": info.commit_url, "pr_url": info.pr_url, "private": settings.private}

    def permanent(err: BaseException) -> bool:  # a client error (or offline mode) will not change on retry
        status = _status(err)
        return isinstance(err, OfflineModeIsEnabled) or (status is not None and 400 <= status < 500 and status not in (408, 429))

    where = f"{settings.repo_id} on {settings.endpoint or 'the Hugging Face Hub'}"
    extra = {} if sleep is None else {"sleep": sleep}
    try:
        return with_retries(push, retries=retries, backoff_s=backoff_s, what=f"publishing to {where}", log=log, permanent=permanent, **extra)
    except RetriesExhausted as exhausted:
        raise PublishError(f"publishing to {where} failed after {exhausted.attempts} attempts (last: HTTP {_status(exhausted.last) or '-'}, {describe(exhausted.last)[:300]})") from None
    except Exception as err:
        status = _status(err)
        if isinstance(err, OfflineModeIsEnabled):
            raise PublishError(f"publishing to {where} needs the network, but HF_HUB_OFFLINE is set: unset it (or set HF_HUB_OFFLINE=0) to publish") from None
        if status in (401, 403):
            raise PublishError(
                f"the Hub refused the token for {where} (HTTP {status}): HF_TOKEN must be a valid token with write access to "
                f"{settings.repo_id.split('/')[0]} (https://huggingface.co/settings/tokens)"
            ) from None
        raise PublishError(f"publishing to {where} failed (HTTP {status or '-'}): {describe(err)[:300]}") from None


OWN_PROTOCOLS = {"threadembed": "pseudonymised", "threadembed-names_visible": "names visible"}
CARD_METRICS = {"mrr@10": ("mrr_at_10", "MRR@10"), "ndcg@10": ("ndcg_at_10", "NDCG@10")}


def eval_results(results, *, model: str = "fine_tuned") -> list:
    """The report's test numbers for ``model`` at its largest dim as ``huggingface_hub.EvalResult``s
    (what the Hub renders from a card's ``model-index``): one per protocol, source, task and metric."""
    from huggingface_hub import EvalResult

    rows = results[(results["model"] == model) & results["eval_set"].isin(list(OWN_PROTOCOLS)) & results["metric"].isin(list(CARD_METRICS))]
    if rows.empty:
        return []
    rows = rows[rows["dim"] == rows["dim"].max()].sort_values(["eval_set", "source", "task", "metric"])
    return [
        EvalResult(
            task_type="sentence-similarity",
            task_name=f"{r.task} retrieval",
            # the Hub groups results by (task type, dataset type, config, split): one group per set and protocol
            dataset_type=f"threadembed/{r.source}/{r.task}",
            dataset_config=r.eval_set,
            dataset_name=f"ThreadEmbed {r.source} {r.task} ({OWN_PROTOCOLS[r.eval_set]}, n={int(r.n)})",
            dataset_split="test",
            metric_type=CARD_METRICS[r.metric][0],
            metric_name=f"{CARD_METRICS[r.metric][1]} @ {int(r.dim)} dims",
            metric_value=round(float(r.value), 4),
        )
        for r in rows.itertuples()
    ]


def release_card(checkpoint: Path, project_card: Path, results, model_summary: dict, *, model_name: str = "ThreadEmbed chat embedding model", onnx: dict | None = None) -> str:
    """The release's README.md, the ecosystem's way: sentence-transformers' own card for the checkpoint
    (``SentenceTransformerModelCardData``: language, base model, tags; architecture and usage), with
    the eval report's test numbers as ``model-index`` metadata, then this project's sections (protocols
    in both forms, the recommended retriever, results, limitations) from the eval report's card."""
    from huggingface_hub import ModelCard
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.model_card import generate_model_card

    model = SentenceTransformer(str(checkpoint), device="cpu", local_files_only=True)
    data = model.model_card_data
    data.language = "en"
    data.model_name = model_name
    data.local_files_only = True
    data.generate_widget_examples = False
    base = model_summary.get("base_model")
    if base and not Path(str(base)).exists():
        data.base_model = str(base)
    data.add_tags(["chat", "thread-retrieval", "matryoshka", "threadembed"])
    card = ModelCard(generate_model_card(model))
    card.data.model_name = model_name
    card.data.eval_results = eval_results(results) or None
    body = Path(project_card).read_text(encoding="utf-8")
    if body.startswith("---"):
        body = body.split("---", 2)[2]
    onnx_section = onnx_card_section(onnx) if onnx else ""
    card.text = f"{card.text.rstrip()}\n\n{onnx_section}# ThreadEmbed: how this model was trained and evaluated\n\n{body.strip()}\n"
    return str(card)


def onnx_card_section(onnx: dict) -> str:
    """The card's "ONNX" section: the files, their size and fidelity, and how to run them."""
    rows = "\n".join(
        f"| `{v['file']}` | {v['bytes'] / 1e6:.1f} MB | {v['min_cosine_vs_pytorch']:.4f} |" for v in onnx["variants"].values()
    )
    return (
        "## ONNX for CPU inference\n\n"
        "| file | size | min cosine to PyTorch (probe texts) |\n|---|---:|---:|\n"
        f"{rows}\n\n"
        f"Exported with `torch.onnx` (opset {onnx['opset']}) and ONNX Runtime's transformer fusions; the int8 file has "
        "per-channel int8 MatMul weights and dynamic activations (`onnxruntime.quantization.quantize_dynamic`). "
        "The files follow the layout of sentence-transformers' `backend=\"onnx\"` "
        "(`model_kwargs={\"file_name\": \"onnx/model_qint8.onnx\"}`), which needs `optimum-onnx`; its current release does not "
        "install next to transformers 5, so this project runs them with "
        "`thread_embed_pipeline.onnx_export.load_onnx_model(path, \"onnx/model_qint8.onnx\")` (ONNX Runtime inside the "
        "folder's SentenceTransformer).\n\n"
    )


def make_release(
    model_summary: dict,
    reports_dir: Path,
    out: Path,
    *,
    publish: PublishSettings | None,
    token: str | None,
    onnx: dict | None = None,
    log: Callable[[str], None] = print,
    **publish_options,
) -> dict:
    """Assemble the release folder ``out`` from the ``model`` summary, the eval report's folder and the
    ``model_onnx`` summary (``onnx``: its ``onnx/`` files ship too), then publish it when ``publish`` is
    given and a token is there.

    Returns ``{"folder", "files", "bytes", "pushed", "repo_id", "revision", "commit_url", "pr_url",
    "private", "not_pushed"}``; ``not_pushed`` says why nothing was pushed (None when it was).
    """
    import pandas as pd

    checkpoint = Path(model_summary["checkpoint_dir"])
    reports_dir = Path(reports_dir)
    missing = [p.name for p in (reports_dir / "model_card.md", reports_dir / "results.parquet") if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing in {reports_dir}; materialise `eval_report` first")
    require_checkpoint(checkpoint)
    card = release_card(checkpoint, reports_dir / "model_card.md", pd.read_parquet(reports_dir / "results.parquet"), model_summary, onnx=onnx)
    onnx_dir = Path(onnx["folder"]) / "onnx" if onnx else None
    manifest = assemble_release(checkpoint, out, card=card, extras=reports_dir, onnx_dir=onnx_dir)
    log(f"release folder {out}: {len(manifest['files'])} files, {manifest['bytes'] / 1e6:.1f} MB")
    summary = {"folder": str(out), "files": len(manifest["files"]), "bytes": manifest["bytes"], "manifest": manifest["files"], "pushed": False,
               "repo_id": publish.repo_id if publish else None, "private": publish.private if publish else None,
               "revision": None, "commit_url": None, "pr_url": None, "not_pushed": None}
    if publish is None:
        summary["not_pushed"] = "push is off (the default): set push: true and repo_id to publish"
    elif not token:
        summary["not_pushed"] = f"HF_TOKEN is not set: would have pushed {len(manifest['files'])} files to {publish.repo_id} (private={publish.private})"
    else:
        summary.update(publish_release(out, publish, token=token, log=log, **publish_options), pushed=True)
        log(f"published {publish.repo_id} at revision {summary['revision']}" + (f" (pull request {summary['pr_url']})" if summary["pr_url"] else ""))
    if summary["not_pushed"]:
        log(f"not published: {summary['not_pushed']}")
    return summary
