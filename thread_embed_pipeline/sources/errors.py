"""Errors raised while locating, fetching or parsing source files.

Both carry a message that names the offending path, so a failed asset run says what to fix.
"""

from __future__ import annotations

from pathlib import Path

MIRROR_HINT = "set the mirror folder with THREAD_EMBED_MIRROR or the `mirror_dir` field of the `chat_sources` resource"


class SourceDataError(Exception):
    """A source's files are missing, truncated or corrupt (or could not be downloaded)."""


class SourceParseError(SourceDataError):
    """A line of a source file does not have the expected shape.

    ``str(err)`` is ``"<file>:<line>: <what was expected>, got <repr of the line, cut to 80 chars>"``.
    """

    def __init__(self, file: str | Path, line: int, expected: str, got: str | None) -> None:
        self.file = str(file)
        self.line = int(line)
        self.expected = expected
        self.got = got
        shown = repr(got[:80]) if got is not None else "end of file"
        super().__init__(f"{self.file}:{self.line}: {expected}, got {shown}")

    def __reduce__(self):  # keep picklable (dagster / multiprocessing)
        return (type(self), (self.file, self.line, self.expected, self.got))
