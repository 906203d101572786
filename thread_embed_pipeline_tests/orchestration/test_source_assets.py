"""The raw asset turns missing folders/files and unparseable lines into a clear Dagster failure."""

import shutil

import pytest

from thread_embed_pipeline.orchestration.source_chain import build_source_chain
from thread_embed_pipeline.sources.registry import slice_files
from thread_embed_pipeline.orchestration.io import ParquetIOManager
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource
from thread_embed_pipeline.sources.registry import get_source
from thread_embed_pipeline_tests.runs import materialize_in


def _materialize_raw(tmp_path, mirror_dir, name="discord_disco"):
    raw = build_source_chain(get_source(name))[0]
    return materialize_in(
        tmp_path / "data",
        [raw],
        resources={"io_manager": ParquetIOManager(), "chat_sources": ChatSourcesResource(mirror_dir=str(mirror_dir), verify_checksums=False)},
        raise_on_error=False,
    )


def _failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run should have failed"
    return failures[0].event_specific_data.error.message


def test_missing_mirror_folder_names_the_folder_and_the_fix(tmp_path):
    result = _materialize_raw(tmp_path, tmp_path / "no-such-mirror")
    assert not result.success
    message = _failure_message(result)
    assert "no-such-mirror" in message and "THREAD_EMBED_MIRROR" in message


def test_missing_file_and_unparseable_line_name_the_file(tmp_path, mirror_root):
    mirror = tmp_path / "mirror"
    shutil.copytree(mirror_root / "discord-disco", mirror / "discord-disco")
    annot = mirror / "discord-disco" / "codi-annot" / "python_march_2020_algorithm.annot"
    annot.unlink()
    assert "python_march_2020_algorithm.annot" in _failure_message(_materialize_raw(tmp_path, mirror))

    shutil.copy(mirror_root / "discord-disco" / "codi-annot" / "python_march_2020_algorithm.annot", annot)
    lines = annot.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[4] = "X" * (len(lines[4].encode("utf-8")) - 1) + "\n"  # same size: only the parser can object
    annot.write_text("".join(lines), encoding="utf-8")
    message = _failure_message(_materialize_raw(tmp_path, mirror))
    assert "python_march_2020_algorithm.annot:5" in message


@pytest.mark.parametrize(
    "limit, expected",
    [
        (None, 6),
        (1, 4),
    ],
)
def test_slice_keeps_whole_file_groups_per_folder(limit, expected):
    files = [
        "data/train/a.ascii.txt",
        "data/train/a.annotation.txt",
        "data/train/b.ascii.txt",
        "data/train/b.annotation.txt",
        "data/test/c.ascii.txt",
        "data/test/c.annotation.txt",
    ]
    kept = slice_files(files, limit)
    assert len(kept) == expected
    assert ("data/train/a.ascii.txt" in kept) == ("data/train/a.annotation.txt" in kept)


def test_every_spec_is_a_source_and_a_file_source_is_a_stream_of_one_piece(mirror_root):
    from dataclasses import dataclass

    from thread_embed_pipeline.schemas import RAW_SCHEMA
    from thread_embed_pipeline.sources.catalog import ALL_SOURCES, Source
    from thread_embed_pipeline.sources.hf import Sampling

    assert all(isinstance(spec, Source) for spec in ALL_SOURCES.values())

    @dataclass
    class NoStream:  # a spec that cannot say how its bytes become raw rows is no Source
        name: str = "x"

    assert not isinstance(NoStream(), Source)
    spec = get_source("slack_dev_chats")
    files = slice_files(spec.file_paths, 1)
    pieces = list(spec.pieces(mirror_root / spec.mirror_subdir, files, Sampling()))
    assert len(pieces) == 1 and pieces[0].units_read == pieces[0].units_kept == len(files)
    assert pieces[0].table.schema.equals(RAW_SCHEMA) and pieces[0].table.num_rows > 0
    with pytest.raises(ValueError, match="file source.*no sampling"):
        list(spec.pieces(mirror_root / spec.mirror_subdir, files, Sampling(unit_fraction=0.5)))
