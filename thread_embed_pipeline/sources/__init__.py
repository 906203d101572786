"""Chat sources: the registry, download and mirror access, one parser per upstream format and user export.

Enters: a dataset mirror, a download, or a user's export folder. Leaves: raw rows (``schemas.RAW_SCHEMA``),
written out of core by :mod:`.raw_stream`. May import: the shared modules only (the first stage).
"""

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
