"""The "text the model sees" stage: pure functions over corpus tables (no dagster).

Chat logs are people's words. Before any of it becomes training pairs or evaluation text,
``prepare_text`` drops bot output, redacts secrets, URLs and e-mail addresses (``redact``) and
replaces every author and every mention of an author by a ``speaker_<k>`` pseudonym (``speakers``).
The reference project preprocesses every source the same way in spirit (per-conversation
``speaker_N`` pseudonyms, URLs as ``[URL]``, bots dropped); our default scheme, ``per_timeline``,
numbers speakers once per channel log instead, so concurrent-thread retrieval still sees that the
same person is speaking in two threads. See ``prepare`` for the order of the steps and the accounting.

Enters: corpus tables. Leaves: the same rows as the model sees them. May import: the shared modules.
"""

from thread_embed_pipeline.text.prepare import DROP_REASONS, bot_mask, prepare_text
from thread_embed_pipeline.text.redact import PLACEHOLDERS, REDACTION_REASONS, redact_text, redact_texts
from thread_embed_pipeline.text.settings import SPEAKER_SCHEMES, TextSettings
from thread_embed_pipeline.text.speakers import pseudonym, timeline_of

__all__ = [
    "DROP_REASONS",
    "PLACEHOLDERS",
    "REDACTION_REASONS",
    "SPEAKER_SCHEMES",
    "TextSettings",
    "bot_mask",
    "prepare_text",
    "pseudonym",
    "redact_text",
    "redact_texts",
    "timeline_of",
]
