"""Every source of the project: the mirrored file sources and the streamed Hugging Face ones."""

from __future__ import annotations

from .hf_registry import HF_SOURCES, HfSourceSpec
from .registry import SOURCES, SourceSpec

ALL_SOURCES: dict[str, SourceSpec | HfSourceSpec] = {**SOURCES, **HF_SOURCES}
"""Name -> spec, file sources first. Names are unique across both registries."""

assert not set(SOURCES) & set(HF_SOURCES), "a source name is in both registries"
