"""Asset keys of the per-source chains, in one place.

A source's assets are keyed ``<source>/<stage>`` (``irc_disentangle/raw``, ``irc_disentangle/corpus``,
...), so the lineage labels each node with its stage while its group names the source. Until
release 0.3 the keys were stage-first (``raw/irc_disentangle``; CHANGELOG.md lists the change). The
files stay stage-first on disk (``data/corpus/<source>.parquet``, warehouse view ``corpus__<source>``):
``stage_first`` maps a key to that layout for the IO manager.
"""

from __future__ import annotations

import dagster as dg

SOURCE_STAGES = ("upstream", "raw", "corpus", "text", "pairs")


def source_key(name: str, stage: str) -> dg.AssetKey:
    if stage not in SOURCE_STAGES:
        raise ValueError(f"unknown source stage {stage!r}; stages: {SOURCE_STAGES}")
    return dg.AssetKey([name, stage])


def upstream_key(name: str) -> dg.AssetKey:
    return source_key(name, "upstream")


def raw_key(name: str) -> dg.AssetKey:
    return source_key(name, "raw")


def corpus_key(name: str) -> dg.AssetKey:
    return source_key(name, "corpus")


def text_key(name: str) -> dg.AssetKey:
    return source_key(name, "text")


def pairs_key(name: str) -> dg.AssetKey:
    return source_key(name, "pairs")


def stage_first(path: list[str] | tuple[str, ...]) -> list[str]:
    """``[source, stage]`` → ``[stage, source]`` (the storage layout and the pre-0.3 key); other keys unchanged."""
    if len(path) == 2 and path[1] in SOURCE_STAGES:
        return [path[1], path[0]]
    return list(path)
