"""Every source of the project: the mirrored file sources and the streamed Hugging Face ones."""

from __future__ import annotations

from .hf_registry import HF_SOURCES, HfSourceSpec
from .registry import SOURCES, SourceSpec

# Both spec types answer the same questions: name, platform, mirror_subdir, description, license,
# streamed, upstream_ref, origin_without_mirror, mirror_files(root, max_files_per_folder); what
# differs is how their bytes become raw rows (a manifest of files parsed whole, or a Hub dataset
# read in record batches).
Source = SourceSpec | HfSourceSpec

ALL_SOURCES: dict[str, Source] = {**SOURCES, **HF_SOURCES}
"""Name -> spec, file sources first. Names are unique across both registries."""

assert not set(SOURCES) & set(HF_SOURCES), "a source name is in both registries"
