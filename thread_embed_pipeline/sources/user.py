"""Sources the user declares: their own chat exports, listed in ``configs/my_sources.yaml``.

Each entry is ``{name, format, path}`` plus two optional keys::

    sources:
      - {name: acme_slack, format: slack_export, path: ~/exports/acme.zip}
      - {name: guild, format: discord_chat_exporter, path: exports/guild/, train: false}
      - {name: ops_slack, format: slack_export, path: exports/ops.zip, link_unthreaded: disentangler}

* ``format``: one of ``exports.FORMATS`` (``docs/sources/<format>.md`` says what each reads).
* ``path``: a file, a zip or a folder; ``~`` is expanded, a relative path starts at the project root.
* ``train`` (default true): whether ``training_pairs`` takes this source's train pairs. Its dev and test
  conversations are always evaluated (``eval_sets``) and its test threads indexed (``search_index``).
* ``link_unthreaded`` (default ``none``): ``disentangler`` links the messages that sit outside any native
  thread (a top-level message nobody replied to) with the project's disentangler, for platforms whose
  users often answer without replying. ``irc_log`` exports have no native threads: always linked so.

``THREAD_EMBED_USER_SOURCES`` names another file. A declared source gets the same chain as a mirrored
one (``<name>/upstream → raw → corpus → text → pairs``), its own group in the UI and its own
``refresh_<name>`` job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from thread_embed_pipeline import storage
from thread_embed_pipeline.schemas import PAIR_STRATEGIES, RawPiece

from .errors import SourceDataError
from .exports import ExportTree, get_format
from .hf import Sampling

DEFAULT_CONFIG = storage.PROJECT_ROOT / "configs" / "my_sources.yaml"
CONFIG_ENV = "THREAD_EMBED_USER_SOURCES"
LINKERS = ("none", "disentangler")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_KEYS = {"name", "format", "path", "train", "link_unthreaded"}


@dataclass(frozen=True)
class UserSourceSpec:
    """A declared export, with the :class:`~thread_embed_pipeline.sources.catalog.Source` interface."""

    name: str
    format: str
    path: Path
    train: bool = True
    link_unthreaded: str = "none"

    # -- what every source spec answers -----------------------------------------------------------
    kind = "export"
    streamed = False
    mirror_subdir = ""  # not in the mirror: read from `path`
    origin_without_mirror = "user export"
    license = "the user's own data (not published)"
    piece_rows = 200_000  # the corpus stage reads the raw file this many rows at a time, never splitting a timeline
    corpus_cut_keys = ("file",)  # a user export's `file` is the timeline (the channel)
    pair_strategies = PAIR_STRATEGIES
    require_question_mark = True

    @property
    def export_format(self):
        return get_format(self.format)

    @property
    def platform(self) -> str:
        return self.export_format.platform

    @property
    def description(self) -> str:
        return f"your {self.format} export ({self.export_format.summary})"

    @property
    def upstream_ref(self) -> str:
        return f"{self.format}:{self.path}"

    @property
    def linker(self) -> str:
        """``disentangler`` when the corpus stage links messages with the disentangler (every message of an
        IRC log; with ``link_unthreaded``, the messages outside native threads), else ``native``."""
        if self.export_format.threads == "disentangler" or self.link_unthreaded == "disentangler":
            return "disentangler"
        return "native"

    @property
    def predicted_labels(self) -> bool:
        """True when every conversation label is the disentangler's (no native threads at all)."""
        return self.export_format.threads == "disentangler"

    def mirror_files(self, root: Path, max_files_per_folder: int | None = None) -> list[str]:
        return []

    def tree(self) -> ExportTree:
        return ExportTree(self.path)

    def pieces(self, root: Path | None = None, files: list[str] | None = None, sampling: Sampling | None = None, *, batch_rows: int | None = None, opener=None) -> Iterator[RawPiece]:
        """The export's raw stream: its format's reader over ``path`` (``root``, ``files`` and sampling do not apply)."""
        if sampling is not None and sampling != Sampling():
            raise ValueError(f"{self.name} is a user export: it is read whole (no sampling); got {sampling}")
        yield from self.export_format.read(self.tree(), self.name)


def config_path() -> Path:
    value = os.environ.get(CONFIG_ENV)
    return Path(value).expanduser() if value else DEFAULT_CONFIG


def load_user_sources(path: Path | None = None, *, taken: set[str] = frozenset()) -> list[UserSourceSpec]:
    """The sources declared in ``path`` (default: :func:`config_path`; a missing file declares none).
    ``taken``: names already used (the project's own sources, group names); a clash is an error."""
    path = Path(path) if path is not None else config_path()
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise SourceDataError(f"{path}: not valid YAML ({err})") from None
    entries = data.get("sources") if isinstance(data, dict) else None
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise SourceDataError(f"{path}: `sources` must be a list of {{name, format, path}} entries")
    specs: list[UserSourceSpec] = []
    for i, entry in enumerate(entries, start=1):
        where = f"{path}: source {i}"
        if not isinstance(entry, dict) or not {"name", "format", "path"} <= set(entry):
            raise SourceDataError(f"{where} needs `name`, `format` and `path`, got {entry!r}")
        unknown = set(entry) - _KEYS
        if unknown:
            raise SourceDataError(f"{where} ({entry['name']}): unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        name = str(entry["name"])
        if not _NAME.fullmatch(name):
            raise SourceDataError(f"{where}: name {name!r} must start with a lowercase letter and use a-z, 0-9 and _ (at most 64)")
        if name in taken or name in {s.name for s in specs}:
            raise SourceDataError(f"{where}: the name {name!r} is already taken; choose another")
        try:
            get_format(str(entry["format"]))
        except ValueError as err:
            raise SourceDataError(f"{where} ({name}): {err}") from None
        link = str(entry.get("link_unthreaded", "none"))
        if link not in LINKERS:
            raise SourceDataError(f"{where} ({name}): link_unthreaded must be one of {LINKERS}, got {link!r}")
        train = entry.get("train", True)
        if not isinstance(train, bool):
            raise SourceDataError(f"{where} ({name}): train must be true or false, got {train!r}")
        target = Path(str(entry["path"])).expanduser()
        specs.append(UserSourceSpec(name=name, format=str(entry["format"]), path=target if target.is_absolute() else storage.PROJECT_ROOT / target, train=train, link_unthreaded=link))
    return specs
