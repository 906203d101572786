"""The streamed sources: Hugging Face datasets read batch by batch, sampled, never whole in memory.

Each :class:`HfSourceSpec` names the dataset (repository, pinned revision, data files, columns it
reads), its license and provenance, how to sample it, which pair strategies make sense for it,
and its parser (:mod:`.hf_parsers`). Revisions and columns were checked against the dataset cards
and the authors' tooling (through the project's offline search; see each entry); where a card
does not state something, the entry says so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from thread_embed_pipeline.schemas import PAIR_STRATEGIES, RawPiece, raw_table

from . import hf_parsers
from .errors import SourceDataError
from .hf import HfDataset, Sampling, iter_record_batches, matching_files


@dataclass(frozen=True)
class UpstreamChunk:
    """A slice of one data file: ``records`` are the sampled units' records (a RecordBatch, or a
    list of dicts for message dumps; None when a chunk only counts units), ``first_row`` the
    1-based row/line of the first record and ``rows`` every record's row (when not consecutive)."""

    file: str
    first_row: int
    records: object
    units_read: int
    units_kept: int
    rows: np.ndarray | None = None


@dataclass(frozen=True)
class HfSourceSpec:
    name: str
    platform: str  # "irc" | "slack" | "discord"
    mirror_subdir: str  # the dataset's folder inside the mirror / cache
    description: str
    license: str
    provenance: str
    dataset: HfDataset
    # parse(records, source=, file=, first_row=, first_message_id=) -> raw rows
    parse: Callable[..., pd.DataFrame]
    default_sampling: Sampling = Sampling()
    pair_strategies: tuple[str, ...] = PAIR_STRATEGIES
    require_question_mark: bool = True  # query_response: only questions (a "?") as queries
    # "rows": one unit per record of a Parquet / JSON Lines file; "tar_zst_members": one unit per
    # member file (a server) of a tar.zst archive of JSON Lines, records = its lines
    unit: str = "rows"
    # raw columns whose value changes only between conversations: the corpus stage cuts its
    # stream there ("line": one upstream record per conversation group)
    corpus_cut_keys: tuple[str, ...] = ("file", "line")
    # upstream records per batch: what bounds memory (a channel-day holds ~140 messages on
    # average, a ChatML exchange 2-3, a Discord server line 1)
    batch_rows: int = 20_000

    # -- what every source spec answers (``sources.catalog.Source``) -----------------------------
    kind = "hub"
    linker = "native"  # conversations as upstream labels them
    predicted_labels = False
    streamed = True
    origin_without_mirror = "hub, pinned revision"

    @property
    def upstream_ref(self) -> str:
        """``<dataset repo>@<pinned revision>``."""
        return f"{self.dataset.repo_id}@{self.dataset.revision}"

    def mirror_files(self, root: Path, max_files_per_folder: int | None = None) -> list[str]:
        """The data files present in a mirror folder of this dataset (``max_files_per_folder`` is for file sources)."""
        present = [p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file()]
        return matching_files(present, self.dataset.data_files)

    piece_rows = 200_000  # corpus and pairs are built this many rows at a time (never splitting a record / conversation)

    def pieces(self, root: Path, files: list[str], sampling: Sampling, *, batch_rows: int | None = None, opener=None) -> Iterator[RawPiece]:
        """The raw stream: the sampled records of ``files``, parsed ``batch_rows`` (default: the source's) at a time.

        ``message_id`` runs on across the pieces of one data file.
        """
        next_mid: dict[str, int] = {}
        for chunk in self.iter_chunks(root, files, sampling, batch_rows=batch_rows or self.batch_rows, opener=opener):
            if chunk.records is None:
                yield RawPiece(None, chunk.units_read, chunk.units_kept)
                continue
            first_mid = next_mid.get(chunk.file, 0)
            parsed = self.parse(chunk.records, source=self.name, file=chunk.file, first_row=chunk.first_row, first_message_id=first_mid, rows=chunk.rows)
            table = raw_table(parsed)
            if table.num_rows:
                next_mid[chunk.file] = int(pc.max(table.column("message_id")).as_py()) + 1
            yield RawPiece(table, chunk.units_read, chunk.units_kept)

    def iter_chunks(self, root: Path, files: list[str], sampling: Sampling, *, batch_rows: int = 20_000, opener=None) -> Iterator[UpstreamChunk]:
        """The sampled records of ``files`` (relative to ``root``), in order, ``batch_rows`` at a time.

        ``opener(rel)`` opens a data file as a binary stream (``ResolvedFiles.open``; default: local).
        """
        if self.unit == "tar_zst_members":
            yield from _tar_member_chunks(self, root, files, sampling, batch_rows, opener)
            return
        kept_total = 0
        for rel in files:
            row = 1
            batches = iter_record_batches(
                root / rel, self.dataset.file_format, self.dataset.columns, batch_rows=batch_rows, rel_path=rel, optional_columns=self.dataset.optional_columns
            )
            for batch in batches:
                n = batch.num_rows
                if sampling.unit_fraction < 1.0:
                    keep = np.fromiter((sampling.keep_unit(f"{rel}:{r}") for r in range(row, row + n)), dtype=bool, count=n)
                else:
                    keep = np.ones(n, dtype=bool)
                if sampling.max_units is not None:
                    keep &= np.cumsum(keep) <= sampling.max_units - kept_total
                kept = int(keep.sum())
                # one chunk per batch: the kept records and their true row numbers
                records = batch if kept == n else batch.filter(pa.array(keep))
                yield UpstreamChunk(rel, row, records if kept else None, units_read=n, units_kept=kept, rows=row + np.flatnonzero(keep))
                kept_total += kept
                row += n
                if sampling.max_units is not None and kept_total >= sampling.max_units:
                    return


def _tar_member_chunks(spec: HfSourceSpec, root: Path, files: list[str], sampling: Sampling, batch_rows: int, opener=None) -> Iterator[UpstreamChunk]:
    import json

    kept_total = 0
    for rel in files:
        try:
            handle = opener(rel) if opener is not None else open(root / rel, "rb")
        except SourceDataError:
            raise
        except OSError as err:
            raise SourceDataError(f"{rel}: cannot open ({err})") from err
        with handle:
            try:
                for name, lines in hf_parsers.iter_tar_zst_members(handle):
                    keep = sampling.keep_unit(name)
                    if keep and sampling.max_units is not None and kept_total >= sampling.max_units:
                        return
                    member = f"{rel}/{name}"
                    if not keep:
                        for _ in lines:  # a tar stream can only be read through
                            pass
                        yield UpstreamChunk(member, 1, None, units_read=1, units_kept=0)
                        continue
                    kept_total += 1
                    buf: list = []
                    first = 1
                    for i, raw_line in enumerate(lines, 1):
                        try:
                            buf.append(json.loads(raw_line))
                        except ValueError:
                            buf.append(raw_line.decode("utf-8", "replace")[:200])  # becomes a malformed row
                        if len(buf) >= batch_rows:
                            yield UpstreamChunk(member, first, buf, units_read=0, units_kept=0)
                            buf, first = [], i + 1
                    if buf:
                        yield UpstreamChunk(member, first, buf, units_read=0, units_kept=0)
                    yield UpstreamChunk(member, 1, None, units_read=1, units_kept=1)
            except SourceDataError:
                raise
            except Exception as err:  # zstd / tar errors: truncated or corrupt archive
                raise SourceDataError(f"{rel}: corrupt or truncated tar.zst archive ({type(err).__name__}: {err})") from err


def _batch_parser(fn, channel: str):
    @functools.wraps(fn)
    def parse(records: pa.RecordBatch, **kw) -> pd.DataFrame:
        return fn(records, channel=channel, **kw)

    return parse


def _discord_parser(records: list[dict], *, source: str, file: str, first_row: int, first_message_id: int, rows=None) -> pd.DataFrame:
    server = file.rsplit("/", 1)[-1].removesuffix(".json")
    return hf_parsers.parse_discord_messages(records, source=source, file=file, first_row=first_row, first_message_id=first_message_id, server=server)


def _flyte_qa_spec(*, name: str, repo_id: str, revision: str, description: str, layout: str) -> HfSourceSpec:
    """A Flyte Slack (input, output) pair table: one Parquet file, query-response pairs only."""
    return HfSourceSpec(
        name=name,
        platform="slack",
        mirror_subdir="hf/" + repo_id.replace("/", "__"),
        description=description,
        license="not stated on the dataset card (unverified)",
        provenance=f"https://huggingface.co/datasets/{repo_id}; {layout}",
        dataset=HfDataset(repo_id=repo_id, revision=revision, data_files=("data/*.parquet",), file_format="parquet", columns=("input", "output")),
        parse=_batch_parser(hf_parsers.parse_qa_pairs, "flyte"),
        pair_strategies=("query_response",),
        require_question_mark=False,
    )


HF_SOURCES: dict[str, HfSourceSpec] = {
    spec.name: spec
    for spec in (
        HfSourceSpec(
            name="discord_dialogues",
            platform="discord",
            mirror_subdir="hf/mookiezi__Discord-Dialogues",
            description="Anonymised Discord exchanges (2025) in ChatML, 7.3M exchanges / 16.9M turns (mookiezi/Discord-Dialogues).",
            license="Apache-2.0 (as reported for the dataset card; verify on the card)",
            provenance="https://huggingface.co/datasets/mookiezi/Discord-Dialogues; one Parquet file data/train.parquet, column `text` (ChatML turns, roles alternate, ends with <|end_of_text|>)",
            dataset=HfDataset(
                repo_id="mookiezi/Discord-Dialogues",
                # the latest commit seen offline (a README fix); data/train.parquet predates it
                revision="df837dd28c9757de199b57f7be45de9d437f6ac1",
                data_files=("data/*.parquet",),
                file_format="parquet",
                columns=("text",),
            ),
            parse=_batch_parser(hf_parsers.parse_chatml, "discord-dialogues"),
            default_sampling=Sampling(max_units=20_000),
        ),
        HfSourceSpec(
            name="discord_unveiled",
            platform="discord",
            mirror_subdir="hf/SaisExperiments__Discord-Unveiled-Compressed",
            description=(
                "Discord Unveiled (2B+ messages, 3,167 public servers, 2015-2024; arXiv:2502.00627): a seeded ~1% "
                "sample of servers read from the compressed dump, never the whole of it."
            ),
            license="CC-BY-4.0 as declared by the Hugging Face mirror; the original Zenodo record was withdrawn (reason: personal data) -- review before use",
            provenance=(
                "https://huggingface.co/datasets/SaisExperiments/Discord-Unveiled-Compressed (also fvdfs41/Discord-Unveiled, "
                "not supported: its file layout is unverified); dataset.zst = tar.zst of ./<guild_id>.json, JSON Lines of Discord API messages"
            ),
            dataset=HfDataset(
                repo_id="SaisExperiments/Discord-Unveiled-Compressed",
                revision="3d3053f1b951617a5b560c0025affc6261b6ffe1",
                data_files=("dataset.zst",),
                file_format="json",
                columns=("content", "author", "timestamp", "channel_id", "channel_name", "type", "message_reference"),
                stream_from_hub=True,
            ),
            parse=_discord_parser,
            default_sampling=Sampling(unit_fraction=0.01, max_units=3),
            unit="tar_zst_members",
            corpus_cut_keys=("file", "conversation_key"),
        ),
        HfSourceSpec(
            name="ubuntu_irc",
            platform="irc",
            mirror_subdir="hf/common-pile__ubuntu_irc",
            description="Ubuntu IRC logs 2004-2024, one document per channel-day (common-pile/ubuntu_irc, 329k documents); conversations by a reply-by-mention + time-gap heuristic.",
            license="Public Domain (per-document metadata.license)",
            provenance="https://huggingface.co/datasets/common-pile/ubuntu_irc; Dolma JSON Lines shards v0/documents/*_ubuntu.jsonl.gz with id, text, created, metadata{license, authors, url, channel}",
            dataset=HfDataset(
                repo_id="common-pile/ubuntu_irc",
                revision="47d55b0534a62bf0766c621297165451969f3de9",
                data_files=("v0/documents/*.jsonl.gz", "v0/documents/*.jsonl"),
                file_format="json",
                columns=("id", "text", "created"),
                optional_columns=("metadata",),  # metadata.channel; else the channel comes from id
            ),
            parse=hf_parsers.parse_channel_day_logs,
            default_sampling=Sampling(max_units=2_000),
            batch_rows=250,
        ),
        _flyte_qa_spec(
            name="flyte_slack",
            repo_id="unionai/flyte-slack-data",
            revision="d310a9096decef6a6ed5926fd9d55b443adde7da",
            description="Flyte community Slack: 28,218 consecutive-speaker (input, output) pairs of threads (unionai/flyte-slack-data).",
            layout="data/train-00000-of-00001-eee8571970947cde.parquet, columns input, output",
        ),
        _flyte_qa_spec(
            name="flyte_slack_long",
            repo_id="Samhita/slack-data-long-responses",
            revision="226f75ab5e6ca68720bfb63f6e046919b2df5413",
            description="Flyte Slack pairs with long responses, 24.5K rows (Samhita/slack-data-long-responses); overlaps flyte_slack (de-duplicated in training_pairs).",
            layout=(
                "data/train-00000-of-00001-cc69f0b6efb99f63.parquet; columns assumed input, output like flyte_slack "
                "(a file without them fails with a clear error)"
            ),
        ),
    )
}
