"""Where the project keeps its data, models and the default dataset mirror.

Everything is relative to the project root unless an environment variable says otherwise, so no
machine-specific path is ever written into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def data_dir() -> Path:
    """Asset storage (Parquet, JSON, the DuckDB warehouse, reports): ``THREAD_EMBED_DATA_DIR`` or ``data/``."""
    return _env_path("THREAD_EMBED_DATA_DIR", PROJECT_ROOT / "data")


def models_dir() -> Path:
    """Trained checkpoints: ``THREAD_EMBED_MODELS_DIR`` or ``models/``."""
    return _env_path("THREAD_EMBED_MODELS_DIR", PROJECT_ROOT / "models")


DEFAULT_MIRROR = PROJECT_ROOT.parent / "shared" / "datasets"


def default_mirror_dir() -> str | None:
    """The local dataset mirror: ``THREAD_EMBED_MIRROR``, else ``../shared/datasets`` next to the project.

    ``THREAD_EMBED_MIRROR=none`` (or empty) switches the mirror off: sources are downloaded upstream.
    """
    value = os.environ.get("THREAD_EMBED_MIRROR")
    if value is None:
        return str(DEFAULT_MIRROR)
    if value.strip().lower() in ("", "none", "off"):
        return None
    return value


def max_files_per_folder() -> int | None:
    """``THREAD_EMBED_MAX_FILES_PER_FOLDER``: read only the first N file groups of each source folder
    (a quick slice of the real data for smoke tests and the UI test); unset: everything."""
    value = os.environ.get("THREAD_EMBED_MAX_FILES_PER_FOLDER", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"THREAD_EMBED_MAX_FILES_PER_FOLDER must be a positive integer, got {value!r}")
    return int(value)
