"""Redaction: replace secrets, URLs and e-mail addresses in message text by placeholders.

Chat logs are people's words, and people paste things they should not: keys, tokens,
passwords, private URLs, their e-mail address. None of it helps an embedding model learn
who is answering whom, and all of it would be memorised and leaked by a model trained on it.
The reference project already writes every URL as ``[URL]``; we do the same and extend it.

Rules, applied in this order (each replaced span is counted once, under the first rule that
replaces it; later rules never match a placeholder an earlier rule wrote):

``private_key``
    ``-----BEGIN ... PRIVATE KEY-----`` up to the matching ``-----END ... PRIVATE KEY-----``
    (or to the end of the text when the paste was cut off) -> ``[SECRET]``.
``bearer_token``
    ``Bearer <token>`` -> ``Bearer [SECRET]``. After ``Authorization:`` any token counts; on its
    own the token must be at least 12 characters, so "the bearer of bad news" stays.
``api_key``
    well-known key shapes: OpenAI ``sk-...`` / ``sk-proj-...``, AWS ``AKIA...``, GitHub
    ``ghp_...`` / ``github_pat_...``, Slack ``xox?-...``, Hugging Face ``hf_...``, Google
    ``AIza...`` -> ``[SECRET]``.
``password_in_url``
    ``scheme://user:pass@host...`` -> ``[URL]`` (counted here, not under ``url``).
``url``
    any other ``scheme://...`` or ``www....`` -> ``[URL]`` (trailing punctuation stays outside).
``credential_assignment``
    ``password=...``, ``passwd: ...``, ``api_key = ...``, ``token=...``, ``secret: ...``
    (case-insensitive, also ``DB_PASSWORD=``, ``client_secret:``): the name and separator stay,
    the value becomes ``[SECRET]``. Runs after the URL rules, so a ``?token=`` inside a URL is
    part of one ``[URL]``.
``email``
    ``local@domain.tld`` -> ``[EMAIL]``.

``redact_secrets`` switches the first four secret rules (private_key, bearer_token, api_key,
credential_assignment) and ``password_in_url``; ``redact_urls`` switches ``url``; ``redact_emails``
switches ``email``. A URL with a password is a secret, so it is redacted whenever either
``redact_secrets`` or ``redact_urls`` is on.

Every pattern is compiled once at import; each rule is one ``subn`` per text, guarded by a cheap
substring test, so a 75k-message corpus is redacted in well under a second.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from thread_embed_pipeline.text.settings import TextSettings

REDACTION_REASONS: tuple[str, ...] = (
    "url",
    "email",
    "private_key",
    "bearer_token",
    "api_key",
    "password_in_url",
    "credential_assignment",
)
URL_PLACEHOLDER = "[URL]"
EMAIL_PLACEHOLDER = "[EMAIL]"
SECRET_PLACEHOLDER = "[SECRET]"
PLACEHOLDERS: tuple[str, ...] = (URL_PLACEHOLDER, EMAIL_PLACEHOLDER, SECRET_PLACEHOLDER)

_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|\Z)",
    re.DOTALL,
)
# group 1: an "Authorization:" prefix (kept); group 2: the word "bearer" as written (kept).
# Without the prefix the token must be >= 12 characters (the conditional group).
_TOKEN_CHARS = r"[A-Za-z0-9\-._~+/]"
_BEARER = re.compile(
    rf"(?i)\b(authorization\s*:\s*)?(bearer)\s+(?(1){_TOKEN_CHARS}+|{_TOKEN_CHARS}{{12,}})=*",
)
_API_KEY = re.compile(
    r"(?<![A-Za-z0-9_\-])"
    r"(?:sk-[A-Za-z0-9_\-]{20,}"  # OpenAI, incl. sk-proj-... / sk-ant-...
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{20,}"  # GitHub fine-grained PAT
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|AIza[0-9A-Za-z_\-]{35})"  # Google API key
    r"(?![A-Za-z0-9_\-])"
)
# a URL ends on a character that is not sentence punctuation ("see http://x.org." keeps the ".")
_URL_BODY = r"(?:[^\s<>\"'\[\]]*[^\s<>\"'\[\].,;:!?()])?"
_PASSWORD_URL = re.compile(
    r"(?i)(?<![\w.+\-])[a-z][a-z0-9+.\-]*://[^\s/?#@:<>\"'\[\]]+:[^\s/?#@<>\"']+@" + _URL_BODY,
)
_URL = re.compile(
    r"(?i)(?<![\w.+\-])(?:[a-z][a-z0-9+.\-]{1,15}://|www\.)[^\s<>\"'\[\]]*[^\s<>\"'\[\].,;:!?()]",
)
_CREDENTIAL = re.compile(
    r"(?i)(?<![A-Za-z0-9])"
    r"((?:[a-z0-9]+[_\-])*(?:password|passwd|api[_\-]?key|apikey|token|secret)(?:[_\-]?key)?)"
    r"(\s*[:=](?!=)\s*)"  # "==" is a comparison, not an assignment
    r"(?!\[(?:SECRET|URL|EMAIL)\])"
    r"(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s,;'\"]+)"
)
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,}(?![A-Za-z0-9\-])"
)
_CREDENTIAL_WORDS = ("pass", "token", "secret", "key")
_API_KEY_PREFIXES = ("sk-", "akia", "gh", "xox", "hf_", "aiza")


def _rules(settings: TextSettings) -> list[tuple[str, re.Pattern, str, object]]:
    """(reason, pattern, replacement, guard) in application order; guard(text, lower) -> bool."""
    rules: list[tuple[str, re.Pattern, str, object]] = []
    secrets = settings.redact_secrets
    if secrets:
        rules.append(("private_key", _PRIVATE_KEY, SECRET_PLACEHOLDER, lambda t, lo: "PRIVATE KEY" in t))
        rules.append(("bearer_token", _BEARER, r"\1\2 " + SECRET_PLACEHOLDER, lambda t, lo: "bearer" in lo))
        rules.append(("api_key", _API_KEY, SECRET_PLACEHOLDER, lambda t, lo: any(p in lo for p in _API_KEY_PREFIXES)))
    if secrets or settings.redact_urls:
        rules.append(("password_in_url", _PASSWORD_URL, URL_PLACEHOLDER, lambda t, lo: "://" in t and "@" in t))
    if settings.redact_urls:
        rules.append(("url", _URL, URL_PLACEHOLDER, lambda t, lo: "://" in t or "www." in lo))
    if secrets:
        rules.append(
            ("credential_assignment", _CREDENTIAL, r"\1\2" + SECRET_PLACEHOLDER,
             lambda t, lo: any(w in lo for w in _CREDENTIAL_WORDS))
        )  # fmt: skip
    if settings.redact_emails:
        rules.append(("email", _EMAIL, EMAIL_PLACEHOLDER, lambda t, lo: "@" in t))
    return rules


def _redact_one(text: str, rules: list, counts: dict[str, int]) -> str:
    lower = text.lower()
    for reason, pattern, repl, guard in rules:
        if guard(text, lower):
            text, n = pattern.subn(repl, text)
            if n:
                counts[reason] += n
                lower = text.lower()
    return text


def redact_text(text: str, settings: TextSettings = TextSettings()) -> tuple[str, Counter]:
    """One text with the redaction rules of ``settings`` applied, and the count of replaced spans per reason."""
    counts: Counter = Counter()
    return _redact_one(text, _rules(settings), counts), counts


def redact_texts(texts: Iterable[str | None], settings: TextSettings = TextSettings()) -> tuple[list[str | None], dict[str, int]]:
    """``redact_text`` over many texts: the new texts (non-strings pass through) and summed counts,
    every reason of ``REDACTION_REASONS`` present."""
    counts = dict.fromkeys(REDACTION_REASONS, 0)
    rules = _rules(settings)
    if not rules:
        return list(texts), counts
    out = [_redact_one(t, rules, counts) if isinstance(t, str) else t for t in texts]
    return out, counts
