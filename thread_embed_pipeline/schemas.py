"""Column contracts shared by every stage, and the one message-window formatter.

Each stage is a pure function over pandas DataFrames; these constants are the
contract between them (and what the asset checks verify).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# raw/<source>: one row per input line (IRC, .annot) or XML <message> element.
RAW_COLUMNS: tuple[str, ...] = (
    "source",  # registry name, e.g. "irc_disentangle"
    "file",  # path relative to the source's mirror root, e.g. "data/test/2005-07-06_14.ascii.txt"
    "line",  # 1-based line number in `file` (XML: line of the <message> start tag)
    "split_hint",  # upstream split ("train"/"dev"/"test") where upstream defines one, else None
    "channel",  # channel or file-level grouping, e.g. "ubuntu", "racket/general"
    "message_id",  # id unique within `file` (IRC: 0-based line index; XML/annot: running index)
    "timestamp",  # pandas Timestamp (naive UTC) or NaT
    "author",  # nick / anonymised user, None for system lines
    "text",  # message text, None for system lines
    "conversation_key",  # upstream conversation id within file (XML/.annot), None for IRC
    "parent_ids",  # list[int] of message_ids this message replies to (IRC gold links), else []
    "record_type",  # "message" | "system" | "context" | "malformed" | "invalid_encoding"
)

# corpus/<source>: one row per kept message.
CORPUS_COLUMNS: tuple[str, ...] = (
    "conversation_id",  # globally unique: "<source>/<file stem>/<thread key>"
    "source",
    "platform",  # "irc" | "slack" | "discord"
    "channel",
    "message_idx",  # 0-based position of the message inside its conversation (chronological)
    "timestamp",  # nullable
    "author",
    "text",
    "reply_to",  # nullable int: message_idx (same conversation) of the gold parent, if any
    "split",  # "train" | "dev" | "test"
)

# pairs/<source> and training_pairs.
PAIR_COLUMNS: tuple[str, ...] = (
    "anchor",
    "positive",
    "strategy",  # "thread" | "query_response" | "adjacency"
    "source",
    "conversation_id",
    "split",
)

# eval_sets: a normalised table of queries and documents (maps 1:1 onto BEIR corpus/queries/qrels).
EVAL_SET_COLUMNS: tuple[str, ...] = (
    "eval_set",  # "threadembed" for the project's own sets, else the registered name of an external set
    "source",
    "task",  # "thread" | "response"
    "record_type",  # "query" | "document"
    "record_id",  # unique within (eval_set, source, task)
    "conversation_id",
    "text",
    "positive_id",  # query rows: record_id of the relevant document; document rows: None
    "candidate_ids",  # query rows: list of document record_ids (positive first, then distractors); else []
    "relevant_ids",  # query rows: every relevant document record_id (own sets: [positive_id]; BEIR qrels may list several); else []
)

OWN_EVAL_SET = "threadembed"

SPLITS: tuple[str, ...] = ("train", "dev", "test")
PAIR_STRATEGIES: tuple[str, ...] = ("thread", "query_response", "adjacency")
# thread / response: the reference protocol (1 positive + up to 99 random distractors);
# concurrent_thread: candidates are the threads active in the same channel at the query's time;
# thread_full_corpus: thread retrieval ranked against every test thread of the source.
EVAL_TASKS: tuple[str, ...] = ("thread", "response", "concurrent_thread", "thread_full_corpus")
DEFAULT_EVAL_TASKS: tuple[str, ...] = ("thread", "response", "concurrent_thread")


def format_message(author: str | None, text: str) -> str:
    """One chat message as the model sees it: ``author: text``."""
    return f"{author}: {text}" if author else text


def format_window(authors: Sequence[str | None], texts: Sequence[str]) -> str:
    """A window of consecutive messages, one ``author: text`` line each.

    The single formatter used by pair building *and* evaluation, so the model is
    trained on exactly the text shape it is evaluated on.
    """
    if len(authors) != len(texts):
        raise ValueError(f"authors ({len(authors)}) and texts ({len(texts)}) differ in length")
    return "\n".join(format_message(a, t) for a, t in zip(authors, texts))


def missing_columns(columns: Iterable[str], expected: Sequence[str]) -> list[str]:
    have = set(columns)
    return [c for c in expected if c not in have]
