"""The stages' code versions follow their code: a change without a bump fails here."""

import json

import pytest

from thread_embed_pipeline import versioning
from thread_embed_pipeline.versioning import CODE_VERSIONS, STAGE_CODE, record_code_versions, stage_code_hash, stale_code_versions


def test_every_stage_has_code_and_a_version():
    assert set(STAGE_CODE) == set(CODE_VERSIONS)


def test_recorded_hashes_match_the_code_of_each_stage_version():
    problems = stale_code_versions()
    assert not problems, "\n".join(problems)


def test_the_hash_ignores_docs_and_comments_but_not_code(tmp_path, monkeypatch):
    module = tmp_path / "stage.py"
    monkeypatch.setattr(versioning, "__file__", str(tmp_path / "versioning.py"))
    monkeypatch.setitem(STAGE_CODE, "raw", ("stage.py",))
    module.write_text('"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1  # note\n')
    before = stage_code_hash("raw")
    module.write_text('"""Other doc."""\n\ndef f(x):\n    # a comment\n    return x + 1\n')
    assert stage_code_hash("raw") == before
    module.write_text('"""Doc."""\n\ndef f(x):\n    return x + 2\n')
    assert stage_code_hash("raw") != before


def test_a_code_change_without_a_bump_is_caught_and_cannot_be_recorded(tmp_path):
    record = tmp_path / "code_versions.json"
    recorded = record_code_versions(record)
    assert stale_code_versions(recorded) == []
    changed = {**recorded, "corpus": {"version": CODE_VERSIONS["corpus"], "sha256": "0" * 64}}  # as if corpus.py had changed
    record.write_text(json.dumps(changed))
    problems = stale_code_versions(changed)
    assert len(problems) == 1 and problems[0].startswith("corpus: its code changed") and "bump" in problems[0]
    with pytest.raises(SystemExit, match="corpus"):
        record_code_versions(record)
    # after a bump the new hash is recorded
    bumped = {**changed, "corpus": {"version": "0", "sha256": "0" * 64}}
    record.write_text(json.dumps(bumped))
    assert "corpus" in stale_code_versions(bumped)[0] and "not recorded yet" in stale_code_versions(bumped)[0]
    assert record_code_versions(record)["corpus"]["sha256"] == stage_code_hash("corpus")


def test_the_raw_stage_code_lists_every_export_reader():
    from thread_embed_pipeline.sources.exports import FORMATS
    from thread_embed_pipeline.versioning import EXPORT_MODULES

    assert set(EXPORT_MODULES) == {"tree", "rows", "formats"} | {f.module for f in FORMATS.values()}
