"""The list of external eval sets to evaluate on: ``configs/external_eval_sets.yaml``.

Each entry is ``{name: <asset name>, path: <pool .jsonl or BEIR folder>}``; relative paths are taken
from the project root. ``THREAD_EMBED_EXTERNAL_EVAL_SETS`` names another registry file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from thread_embed_pipeline import storage

DEFAULT_REGISTRY = storage.PROJECT_ROOT / "configs" / "external_eval_sets.yaml"


@dataclass(frozen=True)
class ExternalEvalSet:
    name: str
    path: Path


def registry_path() -> Path:
    value = os.environ.get("THREAD_EMBED_EXTERNAL_EVAL_SETS")
    return Path(value) if value else DEFAULT_REGISTRY


def load_external_eval_sets(path: Path | None = None) -> list[ExternalEvalSet]:
    path = path or registry_path()
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = data.get("external_eval_sets") or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: `external_eval_sets` must be a list of {{name, path}} entries")
    sets, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"name", "path"} <= set(entry):
            raise ValueError(f"{path}: entry {i + 1} needs `name` and `path`, got {entry!r}")
        name = str(entry["name"])
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or name in seen:
            raise ValueError(f"{path}: entry {i + 1}: name {name!r} must be unique and use letters, digits and _")
        seen.add(name)
        target = Path(entry["path"]).expanduser()
        sets.append(ExternalEvalSet(name=name, path=target if target.is_absolute() else storage.PROJECT_ROOT / target))
    return sets
