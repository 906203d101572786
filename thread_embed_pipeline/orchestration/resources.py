"""Dagster resources: where source files come from, and where/how models are trained."""

from typing import Optional

from pathlib import Path

import dagster as dg

from thread_embed_pipeline import storage
from thread_embed_pipeline.evaluation.runner import ApiSettings


class ChatSourcesResource(dg.ConfigurableResource):
    """Where raw chat files come from.

    mirror_dir set: files are read from that folder, laid out like upstream (one sub-folder per
    dataset, e.g. irc-disentanglement/); nothing is fetched. mirror_dir unset: files are
    downloaded from their upstream URLs into cache_dir (resumable, size- and sha256-checked).
    Default: THREAD_EMBED_MIRROR, else ../shared/datasets beside the project.
    """

    mirror_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    verify_checksums: bool = True
    # a slice for smoke tests: only the first N file groups (a text file and its annotations) per folder
    max_files_per_folder: Optional[int] = None

    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else storage.data_dir() / "downloads"

    def mirror_path(self) -> Path | None:
        return Path(self.mirror_dir) if self.mirror_dir else None


class TrainerResource(dg.ConfigurableResource):
    """Where checkpoints are written and which device trains them (None: CUDA if present, else CPU)."""

    models_dir: Optional[str] = None
    device: Optional[str] = None
    hf_hub_offline: bool = True

    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else storage.models_dir()

    def apply_environment(self) -> None:
        import os

        if self.hf_hub_offline:
            os.environ["HF_HUB_OFFLINE"] = "1"
        if self.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""


class EmbeddingApisResource(dg.ConfigurableResource):
    """Keys and endpoints of embedding APIs. Keys come from the environment through dg.EnvVar
    (see definitions.py) and are never logged or written; an unset key skips that API's models."""

    openai_api_key: Optional[str] = None
    voyage_api_key: Optional[str] = None
    openai_base_url: Optional[str] = None
    voyage_base_url: Optional[str] = None

    def settings(self) -> ApiSettings:
        """The same fields as the work side's :class:`~thread_embed_pipeline.evaluation.runner.ApiSettings`."""
        return ApiSettings(**{name: getattr(self, name) for name in ApiSettings.__dataclass_fields__})
