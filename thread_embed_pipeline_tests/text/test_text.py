"""text stage: redaction, bots, speaker pseudonyms, mentions, short conversations, accounting."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from thread_embed_pipeline.schemas import CORPUS_COLUMNS
from thread_embed_pipeline.text import (
    REDACTION_REASONS,
    SPEAKER_SCHEMES,
    TextSettings,
    prepare_text,
    pseudonym,
    redact_text,
    timeline_of,
)

T0 = pd.Timestamp("2021-03-04 10:00:00")


def corpus(messages: list[tuple]) -> pd.DataFrame:
    """Rows (conversation_id, author, text[, reply_to[, minute]]) -> a corpus frame with corpus dtypes.

    message_idx counts up per conversation in the order given; timestamps are T0 + minute
    (default: the row's position, so appearance order is the order written).
    """
    rows, seen = [], {}
    for pos, m in enumerate(messages):
        cid, author, text = m[:3]
        reply_to = m[3] if len(m) > 3 else None
        minute = m[4] if len(m) > 4 else pos
        idx = seen.get(cid, 0)
        seen[cid] = idx + 1
        ts = pd.NaT if minute is None else T0 + pd.Timedelta(minutes=minute)
        rows.append((cid, "src", "irc", "#chan", idx, ts, author, text, reply_to, "train"))
    # object columns built as object Series, so None stays None (pandas 3 would infer "str" and NaN)
    frame = pd.DataFrame({c: pd.Series([r[i] for r in rows], dtype=object) for i, c in enumerate(CORPUS_COLUMNS)})
    return frame.astype(
        {
            "conversation_id": object, "source": object, "platform": object, "channel": object,
            "message_idx": "int64", "timestamp": "datetime64[ns]", "author": object, "text": object,
            "reply_to": "Int64", "split": object,
        }
    )  # fmt: skip


def by_conv(out: pd.DataFrame, cid: str) -> pd.DataFrame:
    return out[out["conversation_id"] == cid].reset_index(drop=True)


def check_accounting(inp: pd.DataFrame, out: pd.DataFrame, acc: dict) -> None:
    assert acc["read"] == len(inp)
    assert acc["kept"] == len(out)
    assert acc["read"] == acc["kept"] + sum(acc["dropped"].values())
    assert set(acc["dropped"]) == {"bot", "short_conversation"}
    assert set(acc["redacted"]) == set(REDACTION_REASONS)
    assert {"mentions_rewritten", "speakers_pseudonymised", "scheme"} <= set(acc)
    assert tuple(out.columns) == CORPUS_COLUMNS
    assert out.dtypes.to_dict() == inp.dtypes.to_dict()
    ordered = out.sort_values(["conversation_id", "message_idx"], kind="stable")
    assert ordered.index.tolist() == out.index.tolist()


# --- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "n", "expected"),
    [
        ("see https://example.org/a?b=1. ok", "url", 1, "see [URL]. ok"),
        ("www.example.com and ftp://files.example.net/x", "url", 2, "[URL] and [URL]"),
        ("write to alice@example.com!", "email", 1, "write to [EMAIL]!"),
        (
            "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nthanks",
            "private_key", 1, "key:\n[SECRET]\nthanks",
        ),
        ("oops -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk", "private_key", 1, "oops [SECRET]"),
        ("Authorization: Bearer x", "bearer_token", 1, "Authorization: Bearer [SECRET]"),
        ("curl -H 'Bearer eyJhbGciOiJIUzI1NiJ9.abc'", "bearer_token", 1, "curl -H 'Bearer [SECRET]'"),
        ("my key is sk-test1234567890abcdefghijKLMN ok", "api_key", 1, "my key is [SECRET] ok"),
        ("AKIAABCDEFGHIJKLMNOP and ghp_abcdefghijklmnopqrstuvwxyz0123456789", "api_key", 2, "[SECRET] and [SECRET]"),
        ("hf_abcdefghijklmnopqrstuvwxyz01234567 xoxb-1234567890-abcdef", "api_key", 2, "[SECRET] [SECRET]"),
        ("db at postgres://bob:hunter2@db.internal:5432/app now", "password_in_url", 1, "db at [URL] now"),
        ("password=hunter2 and passwd: letmein", "credential_assignment", 2, "password=[SECRET] and passwd: [SECRET]"),
        ("export API_KEY = 'abc def' token=xyz", "credential_assignment", 2, "export API_KEY = [SECRET] token=[SECRET]"),
    ],
)
def test_redaction_reasons(text: str, reason: str, n: int, expected: str) -> None:
    out, counts = redact_text(text)
    assert out == expected
    assert dict(counts) == {reason: n}


def test_redaction_leaves_ordinary_chat_alone() -> None:
    for text in ("the bearer of bad news", "if password == x then", "I used 5 tokens: fine", "risk-assessment-for-the-whole-team-here"):
        out, counts = redact_text(text)
        assert (out, dict(counts)) == (text, {})


def test_password_url_not_also_counted_as_url_and_secrets_gone() -> None:
    out, counts = redact_text("clone https://alice:s3cr3t@git.example.com/r.git or mail alice@example.com")
    assert out == "clone [URL] or mail [EMAIL]"
    assert dict(counts) == {"password_in_url": 1, "email": 1}
    assert "alice" not in out and "example" not in out and "s3cr3t" not in out


def test_redaction_settings_off_skip_rules() -> None:
    text = "see http://x.org mail a.b@example.com key sk-test1234567890abcdefghijKLMN"
    out, counts = redact_text(text, TextSettings(redact_urls=False, redact_emails=False, redact_secrets=False))
    assert (out, dict(counts)) == (text, {})
    out, counts = redact_text(text, TextSettings(redact_urls=False))
    assert out == "see http://x.org mail [EMAIL] key [SECRET]"


def test_prepare_text_counts_redactions() -> None:
    inp = corpus(
        [
            ("s/f/1", "alice", "my key sk-test1234567890abcdefghijKLMN please revoke"),
            ("s/f/1", "bob", "mail me at bob@example.com or see https://example.com"),
        ]
    )
    out, acc = prepare_text(inp)
    check_accounting(inp, out, acc)
    assert acc["redacted"] == {**dict.fromkeys(REDACTION_REASONS, 0), "api_key": 1, "email": 1, "url": 1}
    joined = " ".join(out["text"])
    assert "sk-test" not in joined and "bob@example.com" not in joined and "example" not in joined


# --- bots and short conversations -------------------------------------------------------------


def test_bots_dropped_and_counted() -> None:
    inp = corpus(
        [
            ("s/f/1", "alice", "how do I mount a disk?"),
            ("s/f/1", "ubotu", "mount is documented at the wiki"),
            ("s/f/1", "GitHub-Bot", "PR #3 merged"),
            ("s/f/1", "carol", "  [BOT] automatic reply"),
            ("s/f/1", "bob", "use sudo mount"),
        ]
    )
    out, acc = prepare_text(inp, TextSettings(speakers="original"))
    check_accounting(inp, out, acc)
    assert acc["dropped"] == {"bot": 3, "short_conversation": 0}
    assert out["author"].tolist() == ["alice", "bob"]
    out, acc = prepare_text(inp, TextSettings(speakers="original", drop_bots=False))
    assert acc["dropped"]["bot"] == 0 and len(out) == 5


def test_short_conversations_dropped_and_reply_to_remapped() -> None:
    inp = corpus(
        [
            ("s/f/1", "alice", "question", None),
            ("s/f/1", "ubotu", "factoid", 0),
            ("s/f/1", "bob", "answer to the bot", 1),  # parent dropped -> NA
            ("s/f/1", "alice", "thanks bob", 2),  # parent kept, renumbered 2 -> 1
            ("s/f/2", "carol", "anyone?", None),  # alone after nothing: short
            ("s/f/3", "dave", "hello", None),
            ("s/f/3", "ubotu", "hi", 0),  # bot -> conversation 3 becomes short
        ]
    )
    out, acc = prepare_text(inp, TextSettings(speakers="original"))
    check_accounting(inp, out, acc)
    assert acc["dropped"] == {"bot": 2, "short_conversation": 2}
    assert out["conversation_id"].tolist() == ["s/f/1"] * 3
    assert out["message_idx"].tolist() == [0, 1, 2]
    assert out["reply_to"].tolist() == [pd.NA, pd.NA, 1]
    out, acc = prepare_text(inp, TextSettings(speakers="original", min_conversation_messages=1))
    assert acc["dropped"]["short_conversation"] == 0
    assert set(out["conversation_id"]) == {"s/f/1", "s/f/2", "s/f/3"}


# --- speakers ---------------------------------------------------------------------------------


def test_per_timeline_pseudonyms_shared_across_conversations_and_restart_per_timeline() -> None:
    inp = corpus(
        [
            ("s/log1/a", "alice", "hi", None, 0),
            ("s/log1/a", "bob", "hello", None, 2),
            ("s/log1/b", "carol", "other thread", None, 1),
            ("s/log1/b", "bob", "me again", None, 3),
            ("s/log2/a", "bob", "new log", None, 0),
            ("s/log2/a", "alice", "yes", None, 1),
        ]
    )
    out, acc = prepare_text(inp)
    check_accounting(inp, out, acc)
    assert acc["scheme"] == "per_timeline"
    # log1 appearance order by time: alice (0), carol (1), bob (2)
    assert by_conv(out, "s/log1/a")["author"].tolist() == ["speaker_1", "speaker_3"]
    assert by_conv(out, "s/log1/b")["author"].tolist() == ["speaker_2", "speaker_3"]
    assert by_conv(out, "s/log2/a")["author"].tolist() == ["speaker_1", "speaker_2"]
    assert acc["speakers_pseudonymised"] == 3


def test_per_timeline_nat_timestamps_come_last() -> None:
    inp = corpus([("s/log/a", "zed", "late", None, None), ("s/log/a", "amy", "early", None, 5)])
    out, _ = prepare_text(inp)
    assert out["author"].tolist() == ["speaker_2", "speaker_1"]


def test_per_conversation_restarts_and_mentioned_non_participant_gets_fresh_number() -> None:
    inp = corpus(
        [
            ("s/log/a", "alice", "hi"),
            ("s/log/a", "bob", "hello"),
            ("s/log/b", "bob", "ask carol, she knows"),
            ("s/log/b", "dave", "ok"),
            ("s/log/c", "carol", "I am here"),
            ("s/log/c", "erin", "hi carol"),
        ]
    )
    out, acc = prepare_text(inp, TextSettings(speakers="per_conversation"))
    check_accounting(inp, out, acc)
    assert by_conv(out, "s/log/a")["author"].tolist() == ["speaker_1", "speaker_2"]
    b = by_conv(out, "s/log/b")
    assert b["author"].tolist() == ["speaker_1", "speaker_2"]
    assert b["text"].tolist() == ["ask speaker_3, she knows", "ok"]
    c = by_conv(out, "s/log/c")
    assert c["author"].tolist() == ["speaker_1", "speaker_2"]
    assert c["text"].tolist() == ["I am here", "hi speaker_1"]
    assert acc["mentions_rewritten"] == 2


def test_mentions_rewritten_in_every_form() -> None:
    inp = corpus(
        [
            ("s/log/a", "alice", "hi all"),
            ("s/log/a", "U1", "hello"),
            ("s/log/a", "bob", "alice: try sudo, @alice see <@U1> and <@U999>"),
            ("s/log/a", "carol", "thanks Alice! ALICE, too"),
            ("s/log/a", "dave", "alice_ and malice and alice-x stay"),
        ]
    )
    out, acc = prepare_text(inp)
    check_accounting(inp, out, acc)
    texts = out["text"].tolist()
    assert out["author"].tolist() == [pseudonym(k) for k in range(1, 6)]
    # <@U999> never speaks in the log: a stable pseudonym of its own (the next free one), not its id
    assert texts[2] == "speaker_1: try sudo, @speaker_1 see <@speaker_2> and <@speaker_6>"
    assert texts[3] == "thanks speaker_1! speaker_1, too"
    assert texts[4] == "alice_ and malice and alice-x stay"
    assert acc["mentions_rewritten"] == 6


def test_names_with_spaces_and_dots_longest_first() -> None:
    inp = corpus(
        [
            ("s/log/a", "Jane Roe", "hi"),
            ("s/log/a", "Jane Roe Jr", "hello"),
            ("s/log/a", "john.doe", "jane roe jr: and Jane Roe, ping @john.doe; john.doex stays"),
        ]
    )
    out, acc = prepare_text(inp)
    assert out["text"].tolist()[2] == "speaker_2: and speaker_1, ping @speaker_3; john.doex stays"
    assert acc["mentions_rewritten"] == 3


def test_placeholders_survive_a_nick_named_url() -> None:
    inp = corpus(
        [
            ("s/log/a", "url", "see https://example.org"),
            ("s/log/a", "secret", "url: thanks, mail a@example.com"),
            ("s/log/a", "[URL]", "token=abc"),
        ]
    )
    out, _ = prepare_text(inp)
    assert out["text"].tolist() == ["see [URL]", "speaker_1: thanks, mail [EMAIL]", "token=[SECRET]"]


def test_no_original_name_survives_default_scheme() -> None:
    names = ["alice", "Bob", "carol_", "dave[m]", "erin", "frank", "GuyBot"]
    inp = corpus(
        [
            ("s/log/a", "alice", "Bob: did carol_ answer?"),
            ("s/log/a", "Bob", "no, ask dave[m] or @erin"),
            ("s/log/a", "GuyBot", "frank: ping"),
            ("s/log/b", "carol_", "alice said erin knows frank"),
            ("s/log/b", "erin", "I do"),
            ("s/log/b", "dave[m]", "<@alice> <@frank> thanks GuyBot"),
            ("s/log/c", "frank", "only one message from frank"),  # short, dropped, name still known
        ]
    )
    out, acc = prepare_text(inp)
    check_accounting(inp, out, acc)
    cells = " ".join(out["text"].tolist() + [a for a in out["author"] if a is not None]).lower()
    for name in names:
        assert name.lower() not in cells, name


def test_author_none_stays_none() -> None:
    inp = corpus([("s/log/a", None, "* netsplit"), ("s/log/a", "alice", "hi")])
    out, _ = prepare_text(inp)
    assert out["author"].tolist() == [None, "speaker_1"]


def test_original_scheme_leaves_authors_and_mentions_untouched() -> None:
    inp = corpus([("s/log/a", "alice", "bob: hi"), ("s/log/a", "bob", "@alice hello")])
    out, acc = prepare_text(inp, TextSettings(speakers="original"))
    check_accounting(inp, out, acc)
    assert out["author"].tolist() == ["alice", "bob"]
    assert out["text"].tolist() == ["bob: hi", "@alice hello"]
    assert acc["mentions_rewritten"] == 0 and acc["speakers_pseudonymised"] == 0


def test_rewrite_mentions_off_keeps_texts() -> None:
    inp = corpus([("s/log/a", "alice", "bob: hi"), ("s/log/a", "bob", "@alice hello")])
    out, acc = prepare_text(inp, TextSettings(rewrite_mentions=False))
    assert out["author"].tolist() == ["speaker_1", "speaker_2"]
    assert out["text"].tolist() == ["bob: hi", "@alice hello"]
    assert acc["mentions_rewritten"] == 0


# --- contract ---------------------------------------------------------------------------------


def test_deterministic_and_input_order_independent() -> None:
    inp = corpus(
        [
            ("s/log/a", "alice", "bob: see http://x.org", None, None),
            ("s/log/a", "bob", "thanks alice", 0, 3),
            ("s/log/b", "carol", "hi bob", None, 1),
            ("s/log/b", "bob", "hi carol", 0, 2),
        ]
    )

    def parquet(frame: pd.DataFrame) -> bytes:
        buf = io.BytesIO()
        frame.to_parquet(buf)
        return buf.getvalue()

    out1, acc1 = prepare_text(inp)
    out2, acc2 = prepare_text(inp.iloc[::-1].reset_index(drop=True))
    assert parquet(out1) == parquet(out2)
    assert acc1 == acc2


def test_empty_corpus() -> None:
    inp = corpus([])
    out, acc = prepare_text(inp)
    check_accounting(inp, out, acc)
    assert acc["kept"] == 0


def test_settings_validation() -> None:
    assert SPEAKER_SCHEMES == ("original", "per_conversation", "per_timeline")
    with pytest.raises(ValueError, match="per_timeline"):
        TextSettings(speakers="anonymous")
    with pytest.raises(ValueError, match="min_conversation_messages"):
        TextSettings(min_conversation_messages=0)


def test_bad_columns_rejected() -> None:
    with pytest.raises(ValueError, match="CORPUS_COLUMNS"):
        prepare_text(corpus([("s/f/1", "a", "b")]).drop(columns=["split"]))


def test_timeline_of() -> None:
    assert timeline_of("irc_disentangle/test/2005-07-06_14/1234") == "irc_disentangle/test/2005-07-06_14"
    assert timeline_of("nokey") == "nokey"


def test_the_text_assets_config_declares_exactly_the_text_settings():
    import dataclasses

    from thread_embed_pipeline.orchestration.source_chain import TextConfig

    fields = {f.name: f.default for f in dataclasses.fields(TextSettings)}
    assert {name: f.default for name, f in TextConfig.model_fields.items()} == fields
    assert TextConfig(speakers="per_conversation").settings() == TextSettings(speakers="per_conversation")


def test_a_nick_that_the_log_uses_as_a_word_is_rewritten_only_where_it_addresses_someone():
    from thread_embed_pipeline.text.speakers import common_words

    texts = ["edgy: try the live cd"] + [f"the edgy release {i} is out" for i in range(29)] + ["ikonia: thanks", "ikonia, ok", "ask ikonia"]
    words = common_words(texts, ["edgy", "ikonia", "ActionParsnip", "the"])
    assert "edgy" in words and "the" in words  # used as a word (1 address, 29 bare), a stop word
    assert "ikonia" not in words  # addressed, so a person: rewritten everywhere
    rows = [(f"irc/log/{i}", 0, "edgy" if i == 0 else "ikonia", t) for i, t in enumerate(texts)]
    rows += [(f"irc/log/{i}", 1, "bob", "ok") for i in range(len(texts))]
    corpus = pd.DataFrame(
        {
            "conversation_id": [r[0] for r in rows], "source": "irc", "platform": "irc", "channel": "ubuntu",
            "message_idx": [r[1] for r in rows], "timestamp": pd.NaT, "author": [r[2] for r in rows], "text": [r[3] for r in rows],
            "reply_to": pd.array([None] * len(rows), dtype="Int64"), "split": "train",
        }
    )[list(CORPUS_COLUMNS)].astype({"timestamp": "datetime64[ns]"})
    out, _ = prepare_text(corpus)
    by_conv = out[out["message_idx"] == 0].set_index("conversation_id")["text"]
    assert by_conv["irc/log/0"].startswith("speaker_") and "edgy" not in by_conv["irc/log/0"]  # addressing: rewritten
    assert by_conv["irc/log/1"] == "the edgy release 0 is out"  # the word stays
    assert by_conv["irc/log/32"].startswith("ask speaker_")  # a person's bare mention is rewritten
