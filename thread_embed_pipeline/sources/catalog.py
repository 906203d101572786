"""Every source of the project, and the one interface a source spec has.

There are three ways bytes become raw rows, so three spec dataclasses implement :class:`Source`:

* ``registry.SourceSpec``: a file source, a manifest of upstream files parsed whole (a stream of
  one piece). These are the default graph's sources (``registry.SOURCES``).
* ``hf_registry.HfSourceSpec``: a Hugging Face dataset, read in record batches, sampled, out of core
  (``hf_registry.HF_SOURCES``; opt-in in the code location).
* ``user.UserSourceSpec``: the user's own chat export, declared in ``configs/my_sources.yaml`` and read
  by its format's reader (``exports/``), a piece per channel or group of channels. They are loaded with the
  code location (``user.load_user_sources``), not listed here.

Everything downstream (the chain factory ``orchestration.source_chain``, automation, checks, the
stream writers) takes a :class:`Source` and never asks which kind it has beyond ``streamed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from thread_embed_pipeline.schemas import RawPiece

from .hf import Sampling
from .hf_registry import HF_SOURCES, HfSourceSpec
from .registry import SOURCES, SourceSpec


@runtime_checkable
class Source(Protocol):
    """What every source spec answers."""

    name: str
    platform: str  # "irc" | "slack" | "discord" (mirrored); also "telegram", "matrix", "zulip", "mattermost" (user exports)
    mirror_subdir: str  # the source's folder inside the mirror / download cache
    description: str
    license: str
    kind: str  # "mirror" (manifest files), "hub" (a Hugging Face dataset, streamed), "export" (a user's own export)
    streamed: bool  # sampled and out of core, opt-in (a Hub dataset); False: a file source or an export
    linker: str  # "native": conversations as upstream labels them; "disentangler": (some) links predicted in the corpus stage
    predicted_labels: bool  # every conversation label is predicted (an IRC log export)
    origin_without_mirror: str  # how its data version is known when no mirror is set
    piece_rows: int | None  # corpus and pairs are built this many rows at a time; None: one piece
    corpus_cut_keys: tuple[str, ...]  # raw columns a corpus piece never splits
    pair_strategies: tuple[str, ...]
    require_question_mark: bool  # query_response: only questions (a "?") as queries

    @property
    def upstream_ref(self) -> str:
        """``<upstream repository>@<pinned revision>``."""
        ...

    def mirror_files(self, root: Path, max_files_per_folder: int | None = None) -> list[str]:
        """The files of this source a mirror folder holds (relative paths)."""
        ...

    def pieces(self, root: Path, files: list[str], sampling: Sampling, *, batch_rows: int | None = None, opener=None) -> Iterator[RawPiece]:
        """The raw stream over ``files`` under ``root``: Arrow tables in ``schemas.RAW_SCHEMA``."""
        ...


ALL_SOURCES: dict[str, SourceSpec | HfSourceSpec] = {**SOURCES, **HF_SOURCES}
"""Name -> spec, file sources first. Names are unique across both registries."""

assert not set(SOURCES) & set(HF_SOURCES), "a source name is in both registries"
assert all(isinstance(spec, Source) for spec in ALL_SOURCES.values()), "a source spec lacks part of the Source interface"
