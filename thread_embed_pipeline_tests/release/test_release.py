"""The release folder and its publication, against a fake Hub on 127.0.0.1."""

from __future__ import annotations

import pytest

from thread_embed_pipeline.release.hub import PublishError, PublishSettings, assemble_release, make_release, publish_release
from thread_embed_pipeline_tests.fake_hub import FakeHub

@pytest.fixture(autouse=True)
def online(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1; these tests talk to the fake Hub on 127.0.0.1 only."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


CARD = "---\nlibrary_name: sentence-transformers\n---\n\n# A card\n"


@pytest.fixture
def release_dir(tmp_path, tiny_model_dir):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "hybrid_retriever.json").write_text('{"weight": 0.5}')
    manifest = assemble_release(tiny_model_dir, tmp_path / "release" / "model", card=CARD, extras=reports)
    return tmp_path / "release" / "model", manifest


def test_release_folder_loads_as_a_sentence_transformer_and_holds_card_and_hybrid_weight(release_dir, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    folder, manifest = release_dir
    paths = {f["path"] for f in manifest["files"]}
    assert {"README.md", "hybrid_retriever.json", "modules.json"} <= paths
    assert (folder / "README.md").read_text() == CARD
    model = SentenceTransformer(str(folder), device="cpu")
    reference = SentenceTransformer(str(tiny_model_dir), device="cpu")
    assert (model.encode(["hello there"]) == reference.encode(["hello there"])).all()
    assert not any(p.name.startswith(".") for p in folder.parent.iterdir())  # no staging folder left behind


def test_assembling_again_replaces_the_folder_whole(release_dir, tmp_path, tiny_model_dir):
    folder, _ = release_dir
    (folder / "stale.txt").write_text("from an older release")
    assemble_release(tiny_model_dir, folder, card=CARD)
    assert not (folder / "stale.txt").exists() and not (folder / "hybrid_retriever.json").exists()
    with pytest.raises(FileNotFoundError, match="not a Sentence Transformers checkpoint"):
        assemble_release(tmp_path / "reports", folder, card=CARD)
    with pytest.raises(FileNotFoundError, match="materialise `eval_report` first"):
        make_release({"checkpoint_dir": str(tiny_model_dir)}, tmp_path / "no-reports", folder, publish=None, token=None, log=lambda m: None)


def test_publish_commits_every_file_and_returns_the_revision(release_dir):
    folder, manifest = release_dir
    with FakeHub() as hub:
        settings = PublishSettings(repo_id="someone/threadembed-test", private=True, endpoint=hub.endpoint)
        got = publish_release(folder, settings, token=hub.token, log=lambda m: None)
        repo = hub.repos["someone/threadembed-test"]
        assert repo["private"] is True
        assert sorted(repo["files"]) == sorted(f["path"] for f in manifest["files"])
        assert repo["files"]["README.md"].decode() == CARD
        assert got["revision"] == repo["commits"][-1]["sha"] and got["commit_url"].endswith(got["revision"]) and got["pr_url"] is None
        # again, as a pull request, into the existing repo (create_repo answers 409: exist_ok)
        again = publish_release(folder, PublishSettings(repo_id="someone/threadembed-test", create_pr=True, endpoint=hub.endpoint), token=hub.token, log=lambda m: None)
        assert again["pr_url"] and "/discussions/" in again["pr_url"] and repo["commits"][-1]["pr"] is True
        assert len(repo["commits"]) == 2


def test_a_refused_token_fails_at_once_with_what_to_fix_and_never_shows_the_token(release_dir):
    folder, _ = release_dir
    with FakeHub() as hub:
        settings = PublishSettings(repo_id="someone/threadembed-test", endpoint=hub.endpoint)
        with pytest.raises(PublishError, match=r"refused the token.*HTTP 401.*HF_TOKEN") as err:
            publish_release(folder, settings, token="hf_wrong_secret_value", log=lambda m: None, sleep=lambda s: None)
        assert "hf_wrong_secret_value" not in str(err.value) and err.value.__cause__ is None
        assert len([r for r in hub.requests if r[1] == "/api/repos/create"]) == 1  # not retried
        assert not hub.repos
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish_release(folder, settings, token="", log=lambda m: None)


def test_a_server_error_is_retried_and_the_commit_lands(release_dir):
    folder, _ = release_dir
    messages: list[str] = []
    with FakeHub() as hub:
        hub.fail_next(2, 503)
        settings = PublishSettings(repo_id="someone/threadembed-test", endpoint=hub.endpoint)
        got = publish_release(folder, settings, token=hub.token, log=messages.append, sleep=lambda s: None)
        assert hub.repos["someone/threadembed-test"]["commits"][-1]["sha"] == got["revision"]
        assert len(messages) == 2 and "attempt 2/4" in messages[0]
        hub.fail_next(10, 502)
        with pytest.raises(PublishError, match="failed after 4 attempts.*HTTP 502"):
            publish_release(folder, settings, token=hub.token, log=lambda m: None, sleep=lambda s: None)


def test_offline_mode_fails_at_once_saying_which_variable(release_dir, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    folder, _ = release_dir
    with FakeHub() as hub:
        with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set"):
            publish_release(folder, PublishSettings(repo_id="someone/x", endpoint=hub.endpoint), token=hub.token, log=lambda m: None, sleep=lambda s: None)
        assert hub.requests == []


def test_release_card_is_sentence_transformers_card_with_model_index_and_the_project_sections(tmp_path, tiny_model_dir):
    import pandas as pd
    from huggingface_hub import ModelCard

    from thread_embed_pipeline.release.hub import release_card

    project = tmp_path / "model_card.md"
    project.write_text("---\nlibrary_name: sentence-transformers\n---\n\n# Chat-native model\n\n## Eval protocols\n\npseudonymised and names_visible\n")
    rows = [
        {"eval_set": es, "model": m, "source": "irc_disentangle", "task": "thread", "dim": d, "metric": "mrr@10", "value": v, "n": 141}
        for es in ("threadembed", "threadembed-names_visible") for m, v in (("fine_tuned", 0.61), ("bm25", 0.5)) for d in (16, 32)
    ]
    card_text = release_card(tiny_model_dir, project, pd.DataFrame(rows), {"base_model": "sentence-transformers/all-MiniLM-L6-v2"})
    card = ModelCard(card_text)
    assert card.data.library_name == "sentence-transformers" and card.data.language == "en" and "matryoshka" in card.data.tags
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    results = card.data.eval_results
    assert len(results) == 2 and {r.metric_value for r in results} == {0.61}  # the fine-tuned model at its largest dim, both protocols
    assert all("32 dims" in r.metric_name and r.dataset_split == "test" for r in results)
    assert "model-index" in card_text and "## Eval protocols" in card_text and "pseudonymised and names_visible" in card_text
    assert "## Model Details" in card_text  # sentence-transformers' own sections
