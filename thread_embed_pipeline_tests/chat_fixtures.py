"""Tiny hand-written corpora in the corpus schema, shared by the stage tests."""

from __future__ import annotations

import pandas as pd

from thread_embed_pipeline.schemas import CORPUS_COLUMNS

# the spans of a hand-written pair whose sides are the first and second message of its conversation
ONE_MESSAGE_EACH = {"anchor_start": 0, "anchor_end": 1, "positive_start": 1, "positive_end": 2}


def make_corpus(conversations: dict[str, list[tuple[str, str, int | None]]], *, source: str = "toy", split_of=None) -> pd.DataFrame:
    """``{conversation_id: [(author, text, reply_to), ...]}`` → corpus rows (split "train" unless ``split_of`` says)."""
    rows = []
    for conversation_id, messages in conversations.items():
        split = split_of(conversation_id) if split_of else "train"
        for idx, (author, text, reply_to) in enumerate(messages):
            rows.append(
                {
                    "conversation_id": conversation_id,
                    "source": source,
                    "platform": "irc",
                    "channel": "toy",
                    "message_idx": idx,
                    "timestamp": pd.Timestamp("2020-01-01") + pd.Timedelta(minutes=idx),
                    "author": author,
                    "text": text,
                    "reply_to": reply_to,
                    "split": split,
                }
            )
    frame = pd.DataFrame(rows, columns=list(CORPUS_COLUMNS))
    frame["reply_to"] = frame["reply_to"].astype("Int64")
    return frame


def numbered_conversation(conversation_id: str, n: int, authors=("ann", "bob", "cyd")) -> list[tuple[str, str, int | None]]:
    """n messages whose texts name their conversation and position, so windows can be traced back."""
    return [(authors[i % len(authors)], f"{conversation_id} message {i} about topic {conversation_id}?", None) for i in range(n)]
