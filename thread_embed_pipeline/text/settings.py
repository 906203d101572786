"""``TextSettings``: which text rules ``prepare_text`` applies (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

# original: authors and mentions untouched.
# per_conversation: the reference project's scheme, speaker_<k> numbered afresh in each conversation.
# per_timeline: speaker_<k> numbered once per channel log / file, so one person keeps one name
#   across every conversation of that log (what concurrent-thread retrieval needs).
SPEAKER_SCHEMES: tuple[str, ...] = ("original", "per_conversation", "per_timeline")


@dataclass(frozen=True)
class TextSettings:
    speakers: str = "per_timeline"  # default: privacy-safe and consistent within a channel log
    rewrite_mentions: bool = True
    redact_urls: bool = True
    redact_emails: bool = True
    redact_secrets: bool = True
    drop_bots: bool = True
    min_conversation_messages: int = 2  # conversations with fewer kept messages are dropped

    def __post_init__(self) -> None:
        if self.speakers not in SPEAKER_SCHEMES:
            raise ValueError(f"unknown speakers scheme {self.speakers!r}: expected one of {', '.join(SPEAKER_SCHEMES)}")
        for name in ("rewrite_mentions", "redact_urls", "redact_emails", "redact_secrets", "drop_bots"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        m = self.min_conversation_messages
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"min_conversation_messages must be an int >= 1, got {m!r}")
