"""Make a source's files available: from a local mirror, or downloaded from upstream.

``ensure_source_files`` returns the folder that holds the source's files laid out like upstream
(``<folder>/<manifest path>``), which is what ``SourceSpec.parse`` takes.

* With ``mirror_dir``: ``mirror_dir/<mirror_subdir>`` must exist and hold every manifest file
  with the manifest's size (and sha256 when ``verify_checksums``). Nothing is copied.
* Without: every manifest file is fetched with ``requests`` into
  ``cache_dir/<mirror_subdir>/<path>``. Files already there with the right size and sha256 are
  skipped; a corrupt one is fetched again. Downloads go to ``<path>.part`` and resume with an
  HTTP ``Range`` header (a server that answers ``200`` instead of ``206`` restarts the file);
  each file is retried with exponential backoff, verified (size + sha256) and then renamed into
  place atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from thread_embed_pipeline.versioning import file_fingerprint

from .errors import MIRROR_HINT, SourceDataError
from .fetch import RetriesExhausted, describe, with_retries
from .registry import SourceSpec

CHUNK = 1 << 20


def _file_problem(path: Path, entry: dict[str, Any], verify: bool) -> str | None:
    """Why ``path`` does not match its manifest entry, or None when it does."""
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"has {size} bytes, the manifest says {entry['size']}"
    if verify:
        digest = file_fingerprint(path)
        if digest != entry["sha256"]:
            return f"has sha256 {digest}, the manifest says {entry['sha256']}"
    return None


def ensure_source_files(
    spec: SourceSpec,
    *,
    mirror_dir: Path | None,
    cache_dir: Path,
    verify_checksums: bool = True,
    log: Callable[[str], None] = print,
    manifest: dict[str, Any] | None = None,
    base_url_override: str | None = None,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    session: requests.Session | None = None,
) -> Path:
    """Folder holding ``spec``'s files, laid out like upstream.

    ``manifest`` replaces ``spec.manifest`` and ``base_url_override`` replaces each file's URL by
    ``<base_url_override>/<path>`` (both for tests / private mirrors served over HTTP).
    """
    manifest = manifest if manifest is not None else spec.manifest
    files: list[dict[str, Any]] = manifest["files"]

    if mirror_dir is not None:
        mirror_dir = Path(mirror_dir)
        root = mirror_dir / spec.mirror_subdir
        if not root.is_dir():
            raise SourceDataError(
                f"mirror folder {root} for source {spec.name!r} does not exist "
                f"(mirror_dir={mirror_dir}); {MIRROR_HINT}, or leave it unset to download from upstream"
            )
        for entry in files:
            path = root / entry["path"]
            problem = _file_problem(path, entry, verify_checksums)
            if problem:
                raise SourceDataError(
                    f"mirror file {path} of source {spec.name!r} {problem}; restore it from {entry['url']} "
                    f"or {MIRROR_HINT}"
                )
        log(f"{spec.name}: using {len(files)} files from mirror {root}")
        return root

    root = Path(cache_dir) / spec.mirror_subdir
    own_session = session is None
    session = session or requests.Session()
    try:
        for i, entry in enumerate(files, 1):
            url = entry["url"] if base_url_override is None else f"{base_url_override.rstrip('/')}/{entry['path']}"
            dest = root / entry["path"]
            prefix = f"{spec.name} [{i}/{len(files)}] {entry['path']}"
            if dest.exists():
                problem = _file_problem(dest, entry, verify_checksums)
                if problem is None:
                    log(f"{prefix}: cached")
                    continue
                log(f"{prefix}: cached copy {problem}; fetching again")
                dest.unlink()
            _download(session, url, dest, entry, verify_checksums, retries, backoff_s, timeout_s, log, prefix)
    finally:
        if own_session:
            session.close()
    return root


def _download(
    session: requests.Session,
    url: str,
    dest: Path,
    entry: dict[str, Any],
    verify: bool,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    log: Callable[[str], None],
    prefix: str,
) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    size = int(entry["size"])
    def attempt() -> None:
        offset = part.stat().st_size if part.exists() else 0
        if offset > size:
            part.unlink()
            offset = 0
        if offset < size:
            # identity: byte ranges and sizes must refer to the file itself, not a gzip stream
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            with session.get(url, headers=headers, stream=True, timeout=timeout_s) as r:
                if r.status_code == 416:
                    part.unlink(missing_ok=True)
                    raise _Retry("server refused the byte range (416); restarting")
                r.raise_for_status()
                if offset and r.status_code == 206:
                    mode = "ab"
                    log(f"{prefix}: resuming at byte {offset}")
                else:
                    mode, offset = "wb", 0
                with open(part, mode) as f:
                    for block in r.iter_content(CHUNK):
                        f.write(block)
        got = part.stat().st_size
        if got != size:
            if got > size:
                part.unlink()
            raise _Retry(f"got {got} bytes of {size}")
        if verify:
            digest = file_fingerprint(part)
            if digest != entry["sha256"]:
                part.unlink()
                raise _Retry(f"sha256 {digest} != manifest {entry['sha256']}")
        os.replace(part, dest)
        log(f"{prefix}: downloaded {size} bytes")

    try:
        with_retries(attempt, retries=retries, backoff_s=backoff_s, what=prefix, log=log, retry_on=(_Retry, requests.RequestException, OSError))
    except RetriesExhausted as exhausted:
        raise SourceDataError(
            f"could not download {url} to {dest} after {exhausted.attempts} attempts ({describe(exhausted.last)}); "
            f"check the network or {MIRROR_HINT}"
        ) from exhausted.last


class _Retry(Exception):
    pass
