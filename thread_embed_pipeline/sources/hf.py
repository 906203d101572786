"""Hugging Face dataset sources: locate their files (mirror or pinned download) and stream them.

A streamed source (:class:`HfSourceSpec`) names one dataset repository on the Hub at a pinned
revision, the data files it reads (glob patterns in the repository's own layout), their format and
the columns its parser needs. Its files come from:

* the mirror: ``<mirror>/<mirror_subdir>/`` holds the dataset's files in the repository's layout
  (what ``huggingface-cli download <repo> --repo-type dataset --revision <rev> --local-dir <folder>``
  writes). Nothing is fetched.
* the Hub, when the mirror is off (``THREAD_EMBED_MIRROR=none``): ``huggingface_hub`` lists the
  repository's files at the pinned revision and fetches only the selected ones with
  ``hf_hub_download`` into ``<cache>/hf`` (its cache resumes interrupted downloads and skips files
  it already holds); each file is retried with exponential backoff. A dump too large to fetch
  (``stream_from_hub``) is read sequentially over HTTP range requests instead and never stored.

Either way :func:`select_files` applies the source's file sampling (a seeded, stable fraction of
the data files: how a 2-billion-message dump is sampled without ever being fetched whole), and
:func:`iter_record_batches` yields ``pyarrow.RecordBatch`` es of at most ``batch_rows`` rows from
Parquet (``pyarrow.parquet``) or JSON Lines (``pyarrow.json.open_json`` over a gzip / zstd / plain
stream, 16 MiB blocks), so no file is ever read into memory whole.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from thread_embed_pipeline.schemas import Log, hash_fraction

from .errors import MIRROR_HINT, SourceDataError
from .fetch import RetriesExhausted, with_retries


FILE_FORMATS = ("parquet", "json")
STREAM_BLOCK_BYTES = 1 << 23  # HTTP range request size when streaming a file from the Hub
JSON_BLOCK_BYTES = 1 << 24  # JSON Lines are parsed 16 MiB at a time (the schema comes from the first block)


@dataclass(frozen=True)
class HfDataset:
    """Where a streamed source lives on the Hub, and the shape of its files."""

    repo_id: str
    revision: str  # pinned: a commit sha where known (see the source's comment), else a branch
    data_files: tuple[str, ...]  # glob patterns relative to the repository root
    file_format: str  # "parquet" | "json" (JSON Lines; .jsonl, .json, .jsonl.gz, .jsonl.zst)
    columns: tuple[str, ...]  # upstream columns the parser reads; a file lacking one is an error
    optional_columns: tuple[str, ...] = ()  # read when the file has them
    # a dump too large to fetch (Discord Unveiled: one 118 GB archive): stream it from the Hub
    stream_from_hub: bool = False

    def __post_init__(self) -> None:
        if self.file_format not in FILE_FORMATS:
            raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {self.file_format!r}")


@dataclass(frozen=True)
class Sampling:
    """Which part of a streamed source to read: seeded, stable, recorded in metadata.

    * ``file_fraction``: keep a data file when ``hash(seed, path) < file_fraction`` (at least one file).
    * ``unit_fraction``: keep an upstream unit (a row: document, exchange, Q&A pair; or a channel for
      message-level dumps) when ``hash(seed, unit key) < unit_fraction``.
    * ``max_units``: stop after this many kept units (in file order: files sorted by path).
    """

    file_fraction: float = 1.0
    unit_fraction: float = 1.0
    max_units: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("file_fraction", "unit_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.max_units is not None and self.max_units < 1:
            raise ValueError(f"max_units must be >= 1 or None, got {self.max_units}")

    def keep_unit(self, key: str) -> bool:
        return self.unit_fraction >= 1.0 or hash_fraction(f"{self.seed}:{key}") < self.unit_fraction

    def as_metadata(self) -> dict:
        return {
            "sampling/file_fraction": self.file_fraction,
            "sampling/unit_fraction": self.unit_fraction,
            "sampling/max_units": self.max_units if self.max_units is not None else "all",
            "sampling/seed": self.seed,
        }


def matching_files(paths: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The paths (POSIX, relative to the repository root) matching any pattern, sorted."""
    return sorted({p for p in paths if any(fnmatch.fnmatchcase(p, pat) for pat in patterns)})


def select_files(paths: Sequence[str], sampling: Sampling) -> list[str]:
    """The seeded ``file_fraction`` of ``paths`` (sorted; at least one when any exist)."""
    paths = sorted(paths)
    if sampling.file_fraction >= 1.0 or not paths:
        return paths
    scored = sorted(paths, key=lambda p: hash_fraction(f"{sampling.seed}:file:{p}"))
    kept = [p for p in scored if hash_fraction(f"{sampling.seed}:file:{p}") < sampling.file_fraction]
    return sorted(kept or scored[:1])


@dataclass
class ResolvedFiles:
    root: Path  # folder the relative paths are under
    paths: list[str]  # selected data files, relative to root
    available: int  # data files matching the patterns before file sampling
    origin: str  # "mirror" | "hub" | "hub-stream"
    revision: str | None = None
    # hub-stream: opens a data file on the Hub as a sequential binary stream (nothing is stored)
    remote_open: Callable[[str], object] | None = None

    def open(self, rel: str):
        """A binary file object for data file ``rel`` (local, or streamed from the Hub)."""
        if self.remote_open is not None:
            return self.remote_open(rel)
        return open(self.root / rel, "rb")


def resolve_files(
    name: str,
    dataset: HfDataset,
    *,
    mirror_subdir: str,
    mirror_dir: Path | None,
    cache_dir: Path,
    sampling: Sampling,
    log: Log = print,
    retries: int = 2,  # on top of huggingface_hub's own retries of each request
    backoff_s: float = 2.0,
    hub_api=None,
    download: Callable[..., str] | None = None,
    hf_fs=None,
) -> ResolvedFiles:
    """The data files of ``dataset`` to read, from the mirror or fetched from the Hub.

    ``hub_api`` / ``download`` / ``hf_fs`` replace ``huggingface_hub.HfApi()`` / ``hf_hub_download`` /
    ``HfFileSystem()`` (tests).
    Raises :class:`SourceDataError` naming the dataset and the mirror setting when nothing can be read.
    """
    if mirror_dir is not None:
        root = Path(mirror_dir) / mirror_subdir
        if not root.is_dir():
            raise SourceDataError(
                f"source {name!r} (Hugging Face dataset {dataset.repo_id}): mirror folder {root} does not exist "
                f"(mirror_dir={mirror_dir}). Put the dataset's files there in its own layout "
                f"(huggingface-cli download {dataset.repo_id} --repo-type dataset --revision {dataset.revision} "
                f"--local-dir {root}), {MIRROR_HINT}, or set THREAD_EMBED_MIRROR=none to download from the Hub"
            )
        present = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        available = matching_files(present, dataset.data_files)
        if not available:
            raise SourceDataError(
                f"source {name!r} (Hugging Face dataset {dataset.repo_id}): no file under mirror folder {root} "
                f"matches {list(dataset.data_files)}; {MIRROR_HINT}"
            )
        chosen = select_files(available, sampling)
        log(f"{name}: {len(chosen)} of {len(available)} data files from mirror {root}")
        return ResolvedFiles(root, chosen, len(available), "mirror")

    if hub_api is None or download is None:
        from huggingface_hub import HfApi, hf_hub_download

        hub_api = hub_api or HfApi()
        download = download or hf_hub_download
    hf_cache = Path(cache_dir) / "hf"

    def hub_call(what: str, fn):
        try:
            # network errors come in many types (requests, httpx, hub errors)
            return with_retries(fn, retries=retries, backoff_s=backoff_s, what=f"{name}: {what}", log=log, permanent=_is_permanent)
        except RetriesExhausted as exhausted:
            last = exhausted.last
            raise SourceDataError(
                f"source {name!r} (Hugging Face dataset {dataset.repo_id}@{dataset.revision}): {what} failed after "
                f"{exhausted.attempts} attempts ({type(last).__name__}: {last}). Without network access, put the dataset's "
                f"files under <mirror>/{mirror_subdir}/ and {MIRROR_HINT}"
            ) from last
        except Exception as err:  # permanent (not found, no access): raised at once
            raise SourceDataError(
                f"source {name!r} (Hugging Face dataset {dataset.repo_id}@{dataset.revision}): {what} failed: "
                f"{type(err).__name__}: {err}. Put the dataset's files under <mirror>/{mirror_subdir}/ and {MIRROR_HINT}"
            ) from err

    listed = hub_call(
        "listing the repository's files",
        lambda: hub_api.list_repo_files(dataset.repo_id, repo_type="dataset", revision=dataset.revision),
    )
    available = matching_files(listed, dataset.data_files)
    if not available:
        raise SourceDataError(f"source {name!r}: no file of {dataset.repo_id}@{dataset.revision} matches {list(dataset.data_files)}")
    chosen = select_files(available, sampling)
    if dataset.stream_from_hub:
        # never downloaded whole: read sequentially over HTTP range requests (huggingface_hub's
        # HfFileSystem) and stopped as soon as the sample is complete
        if hf_fs is None:
            from huggingface_hub import HfFileSystem

            hf_fs = HfFileSystem()

        def remote_open(rel: str):
            url = f"datasets/{dataset.repo_id}@{dataset.revision}/{rel}"
            return hub_call(f"opening {rel} for streaming", lambda: hf_fs.open(url, "rb", block_size=STREAM_BLOCK_BYTES))

        log(f"{name}: streaming {len(chosen)} data file(s) from {dataset.repo_id}@{dataset.revision[:12]} (not stored)")
        return ResolvedFiles(Path(dataset.repo_id), chosen, len(available), "hub-stream", revision=dataset.revision, remote_open=remote_open)
    local_root: Path | None = None
    for i, path in enumerate(chosen, 1):
        local = hub_call(
            f"downloading {path}",
            lambda path=path: download(
                repo_id=dataset.repo_id, filename=path, repo_type="dataset", revision=dataset.revision, cache_dir=str(hf_cache)
            ),
        )
        local = Path(local)
        root = Path(str(local)[: -len(path)]) if str(local.as_posix()).endswith(path) else local.parent
        local_root = local_root or root
        log(f"{name}: [{i}/{len(chosen)}] {path} ready")
    assert local_root is not None
    return ResolvedFiles(local_root, chosen, len(available), "hub", revision=dataset.revision)


def _is_permanent(err: Exception) -> bool:
    """Errors a retry cannot fix: unknown repository / revision / file, no access, HF_HUB_OFFLINE set."""
    return type(err).__name__ in {"RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError", "GatedRepoError", "OfflineModeIsEnabled"}


def iter_record_batches(
    path: Path,
    file_format: str,
    columns: Sequence[str],
    *,
    batch_rows: int = 50_000,
    rel_path: str | None = None,
    optional_columns: Sequence[str] = (),
) -> Iterator[pa.RecordBatch]:
    """Record batches (``columns``, plus those of ``optional_columns`` the file has) of one data
    file, at most ``batch_rows`` rows each.

    Raises :class:`SourceDataError` naming the file when it cannot be read or lacks a column.
    """
    shown = rel_path or str(path)
    if file_format == "parquet":
        try:
            pf = pq.ParquetFile(path, pre_buffer=False)  # bounded memory over many batches
        except (pa.ArrowInvalid, OSError) as err:
            raise SourceDataError(f"{shown}: not a readable Parquet file ({err})") from err
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise SourceDataError(f"{shown}: lacks column(s) {missing}; it has {pf.schema_arrow.names}")
        wanted = list(columns) + [c for c in optional_columns if c in pf.schema_arrow.names]
        try:
            yield from pf.iter_batches(batch_size=batch_rows, columns=wanted)
        except (pa.ArrowInvalid, OSError) as err:
            raise SourceDataError(f"{shown}: Parquet data is corrupt ({err})") from err
        return

    import pyarrow.json as pj

    compression = "gzip" if shown.endswith(".gz") else "zstd" if shown.endswith(".zst") else None
    try:
        stream = pa.input_stream(str(path), compression=compression)
    except (pa.ArrowInvalid, OSError) as err:
        raise SourceDataError(f"{shown}: cannot open ({err})") from err
    with stream:
        try:
            reader = pj.open_json(stream, read_options=pj.ReadOptions(block_size=JSON_BLOCK_BYTES))
        except (pa.ArrowInvalid, OSError) as err:
            raise SourceDataError(f"{shown}: not readable as JSON Lines ({_first_line(err)})") from err
        names = reader.schema.names
        missing = [c for c in columns if c not in names]
        if missing:
            raise SourceDataError(f"{shown}: lacks field(s) {missing}; it has {names}")
        wanted = list(columns) + [c for c in optional_columns if c in names]
        records = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as err:
                raise SourceDataError(f"{shown}: malformed JSON Lines after record {records} ({_first_line(err)})") from err
            records += batch.num_rows
            batch = batch.select(wanted)
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
