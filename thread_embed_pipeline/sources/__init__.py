"""Chat sources: registry, download/mirror access and parsers (sources -> raw)."""

from .download import ensure_source_files
from .errors import MIRROR_HINT, SourceDataError, SourceParseError
from .registry import SOURCES, SourceSpec, get_source, load_manifest

__all__ = [
    "MIRROR_HINT",
    "SOURCES",
    "SourceDataError",
    "SourceParseError",
    "SourceSpec",
    "ensure_source_files",
    "get_source",
    "load_manifest",
]
