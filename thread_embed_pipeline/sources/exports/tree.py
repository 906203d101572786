"""A user's chat export as the files it holds: a folder, a ``.zip`` of one, or a single file.

Every reader sees the export through :class:`ExportTree`, so a zip a workspace admin downloads and the
folder it unpacks to read the same. Members are named by their path inside the export (``general/
2020-01-02.json``); errors name them as ``<export>/<member>`` with the line where the reader knows it.

* A zip member whose path is absolute or climbs out with ``..`` is refused (a zip-slip), never read.
* :meth:`ExportTree.fingerprint` hashes the export's *content*: a folder's files by sha256, a zip by
  its members' names, sizes and CRC-32s (the zip's own content checksums: no decompression), a single
  file by sha256. A re-export with the same messages keeps its data version; a new day of messages
  changes it.
* :meth:`ExportTree.local_folder` gives a folder on disk with the export's files: the folder itself,
  or a zip extracted once per fingerprint under a cache folder (for readers that hand files to DuckDB).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..errors import SourceDataError, SourceParseError

_SKIP = ("__MACOSX/", ".DS_Store")


def _safe_member(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and not name.startswith(("/", "\\"))


class ExportTree:
    """The files of one export (see the module docstring); ``path`` is a folder, a ``.zip`` or a file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise SourceDataError(f"{self.path}: the export does not exist (expected a folder, a .zip or a file)")
        if self.path.is_dir():
            self.kind = "folder"
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
        else:
            self.kind = "file"
        self._zip: zipfile.ZipFile | None = None
        self._files: list[str] | None = None

    # -- listing ------------------------------------------------------------------------------
    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile as err:
                raise SourceDataError(f"{self.path}: not a readable zip archive ({err})") from None
        return self._zip

    def files(self) -> list[str]:
        """Every file of the export, as sorted POSIX paths relative to it (a single file: its name)."""
        if self._files is None:
            if self.kind == "folder":
                found = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
            elif self.kind == "zip":
                found = []
                for info in self._zipfile().infolist():
                    if info.is_dir():
                        continue
                    if not _safe_member(info.filename):
                        raise SourceDataError(f"{self.path}: member {info.filename!r} escapes the archive's folder; refusing to read the export")
                    found.append(info.filename)
            else:
                found = [self.path.name]
            self._files = sorted(f for f in found if not any(part in f for part in _SKIP))
        return self._files

    def exists(self, rel: str) -> bool:
        return rel in set(self.files())

    def display(self, rel: str) -> str:
        """How errors name a member: ``<export>/<member>`` (a single-file export: its path)."""
        return str(self.path) if self.kind == "file" else f"{self.path}/{rel}"

    # -- reading ------------------------------------------------------------------------------
    def open(self, rel: str) -> IO[bytes]:
        """A member as a binary stream."""
        if not self.exists(rel):
            raise SourceDataError(f"{self.display(rel)}: no such file in the export")
        if self.kind == "zip":
            return self._zipfile().open(rel)
        return open(self.path if self.kind == "file" else self.path / rel, "rb")

    def read_bytes(self, rel: str) -> bytes:
        with self.open(rel) as handle:
            return handle.read()

    def read_json(self, rel: str, expected: str = "JSON") -> Any:
        """A member parsed as JSON; invalid JSON (or UTF-8) raises :class:`SourceParseError` with its line."""
        data = self.read_bytes(rel)
        try:
            return json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            raise SourceParseError(self.display(rel), line, f"{expected} in UTF-8", _line_of(data, line)) from None
        except json.JSONDecodeError as err:
            raise SourceParseError(self.display(rel), err.lineno, f"{expected} ({err.msg}, column {err.colno})", _line_of(data, err.lineno)) from None

    def iter_json_lines(self, rel: str, expected: str = "one JSON object per line") -> Iterator[tuple[int, Any]]:
        """``(line number, object)`` of a JSON Lines member (blank lines skipped); a bad line raises with its number."""
        with self.open(rel) as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    yield number, json.loads(raw.decode("utf-8-sig"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise SourceParseError(self.display(rel), number, expected, raw.decode("utf-8", errors="replace").rstrip("\n")) from None

    # -- identity -----------------------------------------------------------------------------
    def fingerprint(self) -> tuple[str, dict]:
        """(sha256 hex of the export's content, ``{"files", "bytes", "kind"}``); see the module docstring."""
        digest = hashlib.sha256()
        total = 0
        if self.kind == "zip":
            for info in sorted(self._zipfile().infolist(), key=lambda i: i.filename):
                if info.is_dir() or any(part in info.filename for part in _SKIP):
                    continue
                digest.update(f"{info.filename}\0{info.file_size}\0{info.CRC:08x}\n".encode())
                total += info.file_size
        else:
            for rel in self.files():
                digest.update(rel.encode() + b"\0")
                with self.open(rel) as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
                        total += len(chunk)
                digest.update(b"\n")
        return digest.hexdigest(), {"files": len(self.files()), "bytes": total, "kind": self.kind}

    def local_folder(self, cache_dir: Path) -> Path:
        """A folder on disk holding the export's files: the export itself, or (a zip or a single file)
        a copy under ``cache_dir/<fingerprint>/``, made once and reused."""
        if self.kind == "folder":
            return self.path
        version, _ = self.fingerprint()
        target = Path(cache_dir) / version[:24]
        if (target / ".complete").is_file():
            return target
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if self.kind == "zip":
            for rel in self.files():  # listed (and checked for escapes) first
                out = staging / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with self._zipfile().open(rel) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        else:
            shutil.copyfile(self.path, staging / self.path.name)
        (staging / ".complete").write_text(version + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return target


def _line_of(data: bytes, line: int) -> str | None:
    lines = data.split(b"\n")
    return lines[line - 1].decode("utf-8", errors="replace") if 1 <= line <= len(lines) else None
