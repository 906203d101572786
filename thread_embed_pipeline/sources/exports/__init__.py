"""Users' own chat exports (Slack, Discord, Telegram, Matrix, Zulip, Mattermost, IRC logs) as sources:
one reader per export format, each keeping the platform's own threads as conversation labels.

``formats.FORMATS`` names the formats; ``tree.ExportTree`` reads a folder, zip or file; ``rows.RawRows``
is what every reader writes (the meaning of each raw column for an export is in its docstring).
"""

from .formats import FORMATS, ExportFormat, get_format
from .rows import EXPORT_RECORD_TYPES, RawRows, epoch_ns, mention
from .tree import ExportTree

__all__ = ["EXPORT_RECORD_TYPES", "FORMATS", "ExportFormat", "ExportTree", "RawRows", "epoch_ns", "get_format", "mention"]
