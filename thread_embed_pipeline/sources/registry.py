"""The registry of chat sources: what each is, where its files live, how to parse them.

Adding a source = one :class:`SourceSpec` entry in :data:`SOURCES` + one parser + a manifest
(``manifests/<name>.json``, written by ``scripts/build_source_manifests.py``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from thread_embed_pipeline.schemas import PAIR_STRATEGIES, RawPiece, raw_table

from .annot import parse_annot
from .hf import Sampling
from .chat_xml import parse_chat_xml
from .irc import parse_irc

MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"

ParseFn = Callable[[Path, list[str]], pd.DataFrame]


@functools.lru_cache(maxsize=None)
def _load_manifest(name: str) -> str:
    path = MANIFEST_DIR / f"{name}.json"
    return path.read_text(encoding="utf-8")


def load_manifest(name: str) -> dict[str, Any]:
    """The manifest of source ``name`` (a fresh dict each call)."""
    return json.loads(_load_manifest(name))


@dataclass(frozen=True)
class SourceSpec:
    name: str
    platform: str  # "irc" | "slack" | "discord"
    mirror_subdir: str  # folder of this source inside the mirror / download cache
    description: str
    license: str
    # parse(root folder of this source, file paths relative to it) -> raw table (RAW_COLUMNS)
    parse: ParseFn

    @property
    def manifest(self) -> dict[str, Any]:
        """``{"source", "upstream": {"repo", "commit"}, "files": [{"path", "url", "size", "sha256"}]}``."""
        return load_manifest(self.name)

    @property
    def file_paths(self) -> list[str]:
        """Paths (relative to the source folder) of every file in the manifest."""
        return [f["path"] for f in self.manifest["files"]]

    def load_raw(self, root: Path) -> pd.DataFrame:
        """Parse every manifest file under ``root`` (as returned by ``ensure_source_files``)."""
        return self.parse(Path(root), self.file_paths)

    # -- what every source spec answers (``sources.catalog.Source``) -----------------------------
    kind = "mirror"
    linker = "native"  # conversations as upstream labels them
    predicted_labels = False
    streamed = False
    origin_without_mirror = "download, pinned commit"
    piece_rows = None  # one piece: conversations (IRC link components) may span a whole file
    corpus_cut_keys = ("file",)
    pair_strategies = PAIR_STRATEGIES
    require_question_mark = True

    def pieces(self, root: Path, files: list[str], sampling: Sampling | None = None, *, batch_rows: int | None = None, opener=None) -> Iterator[RawPiece]:
        """The raw stream of a file source: ``files`` parsed whole, one piece (a file source takes no sampling)."""
        if sampling is not None and sampling != Sampling():
            raise ValueError(f"{self.name} is a file source: it reads its manifest files whole (no sampling); got {sampling}")
        yield RawPiece(raw_table(self.parse(Path(root), list(files))), len(files), len(files))

    @property
    def upstream_ref(self) -> str:
        """``<upstream repo>@<pinned commit>``."""
        upstream = self.manifest["upstream"]
        return f"{upstream['repo']}@{upstream['commit']}"

    def mirror_files(self, root: Path, max_files_per_folder: int | None = None) -> list[str]:
        """The files of this source a mirror folder must hold (the manifest's, sliced per folder)."""
        return slice_files(self.file_paths, max_files_per_folder)


# --- per-source parse functions -------------------------------------------------------------


def _parse_irc_disentangle(root: Path, files: list[str]) -> pd.DataFrame:
    return parse_irc(root, files, source="irc_disentangle")


def _parse_slack_dev_chats(root: Path, files: list[str]) -> pd.DataFrame:
    xml = [f for f in files if f.endswith(".xml")]
    return parse_chat_xml(root, xml, source="slack_dev_chats", unescape=False)


DISCORD_ANNOT_CHANNELS = {"codi-annot/python_march_2020_algorithm.annot": "python/general"}


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)] or list(frames[:1])
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def _parse_discord_disco(root: Path, files: list[str]) -> pd.DataFrame:
    xml = [f for f in files if f.endswith((".xml.out", ".xml"))]
    annot = [f for f in files if f.endswith(".annot")]
    return _concat(
        [
            parse_chat_xml(root, xml, source="discord_disco", unescape=True),
            parse_annot(root, annot, source="discord_disco", channels=DISCORD_ANNOT_CHANNELS, unescape=True),
        ]
    )


SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec(
            name="irc_disentangle",
            platform="irc",
            mirror_subdir="irc-disentanglement",
            description=(
                "Ubuntu #ubuntu IRC logs 2004-2016 with gold reply-to links "
                "(Kummerfeld et al., ACL 2019); upstream train/dev/test splits."
            ),
            license="CC-BY-4.0 (attribution: Kummerfeld et al., ACL 2019)",
            parse=_parse_irc_disentangle,
        ),
        SourceSpec(
            name="slack_dev_chats",
            platform="slack",
            mirror_subdir="slack-disentangled",
            description=(
                "Slack developer chats (clojurians, elmlang, racket) with automatically "
                "disentangled conversation ids (Chatterjee et al., MSR 2020)."
            ),
            license="not stated upstream (unverified)",
            parse=_parse_slack_dev_chats,
        ),
        SourceSpec(
            name="discord_disco",
            platform="discord",
            mirror_subdir="discord-disco",
            description=(
                "Discord developer chats (DISCO, Subash et al., MSR 2022: clojure, racket) plus "
                "the CODI python #general .annot file; automatic conversation ids."
            ),
            license="not stated upstream (unverified)",
            parse=_parse_discord_disco,
        ),
    )
}


def get_source(name: str) -> SourceSpec:
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown source {name!r}; known sources: {', '.join(SOURCES)}") from None


def slice_files(files: list[str], max_per_folder: int | None) -> list[str]:
    """The first ``max_per_folder`` file groups of each folder; a group is one stem (``x.ascii.txt`` + ``x.annotation.txt``)."""
    if max_per_folder is None:
        return list(files)
    groups: dict[str, list[str]] = {}
    for path in sorted(files):
        folder, _, base = path.rpartition("/")
        stem = _file_stem(base)
        groups.setdefault(folder, [])
        if stem not in groups[folder]:
            groups[folder].append(stem)
    keep = {(folder, stem) for folder, stems in groups.items() for stem in stems[:max_per_folder]}
    return [p for p in files if (p.rpartition("/")[0], _file_stem(p.rpartition("/")[2])) in keep]


def _file_stem(base: str) -> str:
    return re.sub(r"(\.ascii\.txt|\.annotation\.txt|\.xml\.out|\.xml|\.annot)$", "", base)
