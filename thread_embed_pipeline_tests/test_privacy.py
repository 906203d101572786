"""Privacy by default: nothing the model trains on and nothing the pipeline publishes carries an
original speaker name, an e-mail address or a secret.

The graph from the corpus stage on is run on fixture conversations of every source with known
names (authors, mentioned in texts in the IRC, ``@`` and bare forms), e-mail addresses, a fake API
key, a password inside a URL and a bot. Then every trained-on or published file — the text and
pairs assets, the training pairs, the exports, the checkpoint folder (model card and widget
examples included) and the report files — is scanned for them. Parquet files are read back and
every string cell is scanned (their bytes are compressed); other files are scanned as text.
"""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.orchestration.keys import corpus_key, raw_key, text_key
from thread_embed_pipeline.orchestration.training_assets import OPTIONAL_INPUT_LOADER
from thread_embed_pipeline.definitions import OPT_IN, build_definitions
from thread_embed_pipeline.orchestration.io import ParquetIOManager
from thread_embed_pipeline.orchestration.release_assets import HubResource
from thread_embed_pipeline.orchestration.resources import ChatSourcesResource, EmbeddingApisResource, TrainerResource
from thread_embed_pipeline.schemas import CORPUS_COLUMNS
from thread_embed_pipeline.sources.registry import SOURCES
from thread_embed_pipeline.text.audit import original_handles

NAMES = ("alice_wonder", "Bob_Builder", "carol.danvers", "dave42x")
# people who are mentioned and never speak: a handle, a dotted handle, a Slack id with its name, a Discord id
NON_PARTICIPANTS = ("walkda_q", "mr.hemlockz", "U0OUTSIDER", "Zed Outsider", "90210777")
BOT = "deploy-bot"
EMAIL = "alice.wonder@example.com"
FAKE_KEY = "sk-test-PRIVACY-0123456789abcdefXYZ"
URL_PASSWORD = "hunter2secret"
FORBIDDEN = (*NAMES, *NON_PARTICIPANTS, BOT, EMAIL, FAKE_KEY, URL_PASSWORD)


def _conversation_texts(i: int) -> list[tuple[str, str]]:
    """Ten (author, text) messages about topic i, leaking names, an e-mail, a key and a URL password."""
    a, b, c, d = NAMES
    return [
        (a, f"my build {i} fails with linker error {i} on the widget module"),
        (b, f"{a}: which compiler version do you use for widget {i}?"),
        (a, f"gcc {i}, and I mailed the log to {EMAIL}"),
        (c, f"@{b} I saw linker error {i} too, try the flag -lwidget{i}"),
        (BOT, f"[bot] build {i} failed"),
        (d, f"the token was {FAKE_KEY}, rotate it for project {i}"),
        (a, f"thanks {c}, the flag fixed widget {i}"),
        (b, f"mirror at https://{d}:{URL_PASSWORD}@example.org/widget{i}"),
        (c, f"also see https://example.org/docs/widget{i} for {d}"),
        (d, f"great, closing issue {i} about widget {i}"),
        (a, f"one more question on widget {i} caching"),
        (b, f"@walkda_q and @Mr.HemlockZ fixed widget {i} last year, ask <@U0OUTSIDER|Zed Outsider> or <@!90210777>"),
        (c, f"walkda_q also wrote the widget {i} docs, cc @here"),
    ]


def _fixture_corpus(source: str, platform: str) -> pd.DataFrame:
    rows = []
    start = np.datetime64("2020-01-01T10:00")
    for i in range(30):
        split = ("train", "train", "train", "dev", "test")[i % 5]
        conversation_id = f"{source}/channel{i % 2}/{i}"
        for idx, (author, text) in enumerate(_conversation_texts(i)):
            rows.append(
                {
                    "conversation_id": conversation_id,
                    "source": source,
                    "platform": platform,
                    "channel": f"channel{i % 2}",
                    "message_idx": idx,
                    "timestamp": start + np.timedelta64(20 * i + idx, "m"),
                    "author": author,
                    "text": text,
                    "reply_to": idx - 1 if idx else None,
                    "split": split,
                }
            )
    frame = pd.DataFrame(rows)[list(CORPUS_COLUMNS)]
    frame["reply_to"] = frame["reply_to"].astype("Int64")
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns]")
    return frame.astype({c: object for c in ("conversation_id", "source", "platform", "channel", "author", "text", "split")})


def _leaks(text: str) -> list[str]:
    low = text.lower()
    return [f for f in FORBIDDEN if f.lower() in low]


def _scan(path) -> list[str]:
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        found = []
        for column in frame.columns:
            values = frame[column].dropna()
            if values.dtype == object or pd.api.types.is_string_dtype(values):
                found += _leaks("\n".join(map(str, values)))
            found += _leaks(str(column))
        return found
    return _leaks(path.read_bytes().decode("utf-8", errors="ignore"))


@pytest.fixture(scope="module")
def privacy_run(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("privacy")
    data = base / "data"
    (data / "corpus").mkdir(parents=True)
    for name, spec in SOURCES.items():
        _fixture_corpus(name, spec.platform).to_parquet(data / "corpus" / f"{name}.parquet", index=False)
    defs = build_definitions(external_eval_sets=[])
    resources = {
        "io_manager": ParquetIOManager(),
        OPTIONAL_INPUT_LOADER: ParquetIOManager(optional_paths=True),
        "chat_sources": ChatSourcesResource(mirror_dir=str(base / "no-mirror")),
        "trainer": TrainerResource(models_dir=str(base / "models"), device="cpu"),
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "embedding_apis": EmbeddingApisResource(),
        "hub": HubResource(),  # no token: the release folder is written, nothing is pushed
    }
    # everything downstream of the three corpora, minus the streamed sources' chains
    # disentanglement is opt-in (its own job) and writes line numbers only: not run here
    selection = dg.AssetSelection.assets(*[corpus_key(n) for n in SOURCES]).downstream() - dg.AssetSelection.assets(*[corpus_key(n) for n in SOURCES]) - OPT_IN
    run_config = {
        "ops": {
            "training_pairs": {"config": {"budget": 64}},
            "model": {"config": {"base_model": str(tiny_model_dir), "matryoshka_dims": [32, 16], "batch_size": 16, "max_seq_length": 64, "bf16": False, "time_budget_s": None}},
            "eval_sets": {"config": {"max_queries_per_set": 10, "pool_size": 10, "protocols": ["pseudonymised", "names_visible"]}},
            "dev_eval_sets": {"config": {"max_queries_per_set": 10, "pool_size": 10, "protocols": ["pseudonymised", "names_visible"]}},
            "eval_report": {"config": {"bootstrap_resamples": 50}},
        }
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THREAD_EMBED_DATA_DIR", str(data))
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks], selection=selection, instance=dg.DagsterInstance.ephemeral(), resources=resources, run_config=run_config
        )
    return base, result


def test_nothing_trained_on_or_published_carries_a_name_email_or_secret(privacy_run):
    base, result = privacy_run
    assert result.success
    data, models = base / "data", base / "models"
    published = [
        *sorted((data / "text").glob("*.parquet")),
        *sorted((data / "pairs").glob("*.parquet")),
        data / "training_pairs.parquet",
        *sorted(p for p in (data / "exports").rglob("*") if p.is_file()),
        *sorted(p for p in (data / "reports").rglob("*") if p.is_file()),
        *sorted(p for p in models.rglob("*") if p.is_file()),
        *sorted(p for p in (data / "release").rglob("*") if p.is_file()),  # what would be pushed to the Hub
    ]
    assert any(p.name == "model_card.md" for p in published)  # the model card is among them
    assert any(p.name == "README.md" and "release" in p.parts for p in published)  # and the release with its card
    assert any("exports" in p.parts for p in published)
    leaks = {str(p.relative_to(base)): found for p in published if (found := _scan(p))}
    assert not leaks, leaks
    # the audit the asset checks run: no @handle that is not a pseudonym, in the text stage or the exports
    texts = [t for p in sorted((data / "text").glob("*.parquet")) for t in pd.read_parquet(p)["text"]]
    exported = [line for p in published if "exports" in p.parts for line in p.read_text().splitlines()]
    assert original_handles(texts) == {} and original_handles(exported) == {}
    assert "@here" in " ".join(texts)  # a generic mention stays
    corpus_texts = pd.read_parquet(data / "corpus" / "irc_disentangle.parquet")["text"]
    assert {"walkda_q", "mr.hemlockz", "u0outsider", "90210777"} <= set(original_handles(corpus_texts))  # the audit can fail
    # the scan can fail: the names-visible eval sets (internal, like the corpus) do carry them
    assert set(_scan(data / "eval_sets.parquet")) >= set(NAMES)
    assert _scan(data / "corpus" / "irc_disentangle.parquet")


def test_text_stage_counts_its_drops_and_redactions_in_the_metadata(privacy_run):
    _, result = privacy_run
    meta = result.asset_materializations_for_node("irc_disentangle__text")[0].metadata
    assert meta["read"].value == meta["kept"].value + meta["dropped_total"].value
    assert meta["dropped/bot"].value == 30  # one [bot] message per conversation
    assert meta["redacted/email"].value == 30 and meta["redacted/api_key"].value == 30
    assert meta["redacted/password_in_url"].value == 30 and meta["redacted/url"].value == 30
    assert meta["mentions_rewritten"].value >= 3 * 30
    assert meta["speakers"].value == "per_timeline"


def test_pseudonyms_keep_who_is_who_within_a_channel_log(privacy_run):
    base, _ = privacy_run
    text = pd.read_parquet(base / "data" / "text" / "irc_disentangle.parquet")
    first = text[text["message_idx"] == 0].groupby(text["conversation_id"].str.rsplit("/", n=1).str[0])["author"].agg(set)
    # alice opens every conversation: one pseudonym per channel log, the same across its conversations
    assert all(len(authors) == 1 for authors in first)
    assert all(a.startswith("speaker_") for a in text["author"].dropna())
    exported = [json.loads(line) for line in (base / "data" / "exports" / "pools" / "threadembed.jsonl").read_text().splitlines()]
    assert exported and all("speaker_" in row["query"] for row in exported if ":" in row["query"])


def test_the_privacy_checks_ran_and_passed(privacy_run):
    _, result = privacy_run
    evaluations = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_original_handles"]
    assert {e.asset_key.to_user_string() for e in evaluations} == {*(f"{n}/text" for n in SOURCES), "eval_exports"}
    assert all(e.passed and e.metadata["original_handles"].value == 0 for e in evaluations)


def test_real_mirror_text_stage_and_exports_hold_no_handle_that_is_not_a_pseudonym(mirror_root, tmp_path):
    """The audit on the real data: every @handle in the mirrored corpora (Discord's DISCO texts mention
    thousands of people who never speak there) is a pseudonym after the text stage and in the exports."""
    defs = build_definitions(external_eval_sets=[])
    selection = dg.AssetSelection.assets(*[k for n in SOURCES for k in (raw_key(n), corpus_key(n), text_key(n))], "eval_sets", "eval_exports")
    resources = {**defs.resources, "io_manager": ParquetIOManager(), "chat_sources": ChatSourcesResource(mirror_dir=str(mirror_root))}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
        result = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection, instance=dg.DagsterInstance.ephemeral(), resources=resources)
    assert result.success
    data = tmp_path / "data"
    before = {n: sum(original_handles(pd.read_parquet(data / "corpus" / f"{n}.parquet")["text"]).values()) for n in SOURCES}
    after = {n: sum(original_handles(pd.read_parquet(data / "text" / f"{n}.parquet")["text"]).values()) for n in SOURCES}
    exports = [p for p in (data / "exports").rglob("*") if p.is_file()]
    exported = sum(original_handles(line for p in exports for line in p.read_text().splitlines()).values())
    assert before["discord_disco"] > 4000  # the corpus keeps upstream text: the audit has something to find
    assert after == {n: 0 for n in SOURCES} and exported == 0 and len(exports) > 1
