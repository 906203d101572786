"""Metadata helpers: previews that read well, tables with a schema."""

import dagster as dg
import pandas as pd

from thread_embed_pipeline.orchestration.automation import observation_metadata
from thread_embed_pipeline.orchestration.metadata import preview_text, table, table_md


def test_previews_are_one_line_per_record_and_cut_for_every_text_dtype():
    long = "x" * 300
    frame = pd.DataFrame({"anchor": ["speaker_1: hi\nspeaker_2: a | b", long], "n": [1, 2]}).astype({"anchor": "string"})
    md = table_md(frame).value
    lines = md.splitlines()
    assert len(lines) == 4  # header, rule, one line per pair
    assert "speaker_1: hi ⏎ speaker_2: a \\| b" in lines[2]
    assert "x" * 120 + "…" in lines[3] and "x" * 121 not in lines[3]
    assert preview_text(None) is None and preview_text("a\r\nb") == "a ⏎ b"


def test_table_metadata_has_a_schema_and_rounded_floats():
    value = table(pd.DataFrame({"model": ["bm25"], "mrr": [0.123456789], "n": [81], "won": [True]}))
    assert isinstance(value, dg.TableMetadataValue)
    assert [(c.name, c.type) for c in value.schema.columns] == [("model", "string"), ("mrr", "float"), ("n", "int"), ("won", "bool")]
    assert value.records[0].data == {"model": "bm25", "mrr": 0.1235, "n": 81, "won": True}


def test_observations_carry_files_bytes_mtime_and_revision():
    meta = observation_metadata("ab" * 32, {"origin": "mirror", "files": 3, "bytes": 1200, "missing": 0, "newest_mtime": 1.7e9, "revision": "abc123"})
    assert meta["files"] == 3 and meta["bytes"] == 1200 and meta["revision"] == "abc123" and meta["data_version"] == "ab" * 8
    assert isinstance(meta["newest_mtime"], dg.TimestampMetadataValue)
    pinned = observation_metadata("owner/repo@deadbeef", {"origin": "download, pinned commit"})
    assert pinned["revision"] == "deadbeef" and "files" not in pinned


def test_table_cells_are_one_line_but_not_markdown_escaped():
    value = table(pd.DataFrame({"text": ["a | b\nc"]}))
    assert value.records[0].data["text"] == "a | b ⏎ c"
