"""Speaker pseudonyms and mention rewriting: nobody's name reaches the model.

Chat logs are people's words; a nick or a Slack display name is personal data, and a model
trained on it learns (and can leak) who said what. The reference project replaces every author
by ``speaker_<k>``, numbered afresh in each conversation. That hides identities but also hides
*sameness*: in concurrent-thread retrieval the model should still see that the person asking
in one thread is the person answering in another. Hence three schemes (``SPEAKER_SCHEMES``):

``original``
    authors and texts untouched.
``per_conversation``
    the reference scheme: within each conversation, authors get ``speaker_1, speaker_2, ...``
    in ``message_idx`` order.
``per_timeline`` (default)
    within each timeline (``timeline_of(conversation_id)``: the channel log / file the conversation
    came from) every distinct author gets one ``speaker_<k>``, numbered in order of first appearance,
    appearance being the order (timestamp, NaT last; conversation_id; message_idx). One person keeps
    one pseudonym across every conversation of the log; pseudonyms never carry across logs.

Mentions: with any scheme but ``original`` (and ``rewrite_mentions``), every occurrence in a text of
the name of an author of the *same timeline* is rewritten to that person's pseudonym in the current
scope (``alice: ...``, ``alice, ...``, ``@alice``, ``<@alice>``, a bare "thanks alice"). Matching is
case-insensitive, whole-word, where IRC nick characters ``[A-Za-z0-9_-[]\\^{}|`]`` (and any other
Unicode word character) count as word characters, so ``alice_`` and ``malice`` are not ``alice``.
Only names of at least two characters containing a letter are matched (a nick ``42`` would otherwise
rewrite every number). A name that is also a plain word (:func:`common_words`: an English stop word,
or a word-shaped nick that the log uses as a word — ``the``, ``my``, ``ubuntu`` in #ubuntu) is
rewritten only where it addresses someone: ``name:`` or ``name,`` opening a message, ``@name``,
``<@name>``. Slack-style ``<@U123>`` ids are rewritten when the id is an author of the
timeline; any other ``<@...>`` becomes ``<@user>``. A mentioned author of the timeline who has not
spoken in the scope (per_conversation: that conversation; per_timeline: the kept messages of the log)
gets the next free ``speaker_<k>`` of the scope, in order of first mention, so the original name
never survives. Placeholders written by redaction (``[URL]``, ``[EMAIL]``, ``[SECRET]``) are never
rewritten, even when someone's nick is ``url``.

Matching is one compiled regex per timeline: placeholders, ``<@id>``, the names that contain a
non-word character (``john.doe``, ``Jane Roe``) as a trie-shaped regex (longest name first), and otherwise a maximal run of word characters
looked up in a dict of lowercased names (a run *is* a whole-word match, so a dict lookup replaces
a several-thousand-way alternation for large Slack workspaces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import timeline_of
from thread_embed_pipeline.text.redact import PLACEHOLDERS

__all__ = ["timeline_of"]  # re-exported: the text stage's callers group by timeline

_WORD = r"\w\-\[\]\\^{}|`"  # \w covers A-Za-z0-9_ and Unicode letters; plus the other IRC nick characters
_WORD_RUN = re.compile(rf"[{_WORD}]+")
_HAS_LETTER = re.compile(r"[^\W\d_]")
UNKNOWN_MENTION = "<@user>"


def pseudonym(k: int) -> str:
    """The k-th (1-based) pseudonym of a scope: ``speaker_<k>``."""
    return f"speaker_{k}"


def timelines(conversation_ids: pd.Series) -> np.ndarray:
    """``timeline_of`` of every id (computed once per distinct id), as an object array."""
    codes, uniq = pd.factorize(conversation_ids, sort=False)
    return np.asarray([timeline_of(c) for c in uniq], dtype=object)[codes] if len(codes) else np.zeros(0, dtype=object)


def mention_key(name: str) -> str | None:
    """The lowercased name under which mentions of ``name`` are matched, or None when it is not matchable."""
    key = name.strip().lower()
    return key if len(key) >= 2 and _HAS_LETTER.search(key) else None


def trie_regex(keys) -> str:
    """A regex matching exactly the strings ``keys``, shaped as a trie (shared prefixes factored out).

    Python's ``re`` tries the branches of an alternation one by one, so a flat ``a|b|...`` of
    thousands of names costs thousands of attempts at every position; a trie costs about the length
    of one name. Optional tails are greedy, so the longest name wins where names nest.
    """
    root: dict = {}
    for key in keys:
        node = root
        for ch in key:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        children = sorted(ch for ch in node if ch != "")
        if not children:
            return ""
        alts = [re.escape(ch) + emit(node[ch]) for ch in children]
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


def common_words(texts, names=(), *, min_bare: int = 5, max_addressing_share: float = 0.05) -> frozenset[str]:
    """Lowercased words a nick may be spelled like, for which only the addressing forms (``name:`` /
    ``name,`` opening a message, ``@name``, ``<@name>``) are rewritten, not every bare occurrence:

    * English stop words (scikit-learn's list): ``the``, ``my``, ``ever``;
    * ``names`` spelled like plain words (letters only, no inner capital) and used as plain words in
      ``texts``: at least ``min_bare`` bare occurrences and under ``max_addressing_share`` of all
      occurrences addressing someone (``ubuntu``, ``edgy``, ``unity`` in #ubuntu). A person who is
      mentioned is addressed far more often than that, so their name stays rewritten everywhere;
      nick-shaped names (``ActionParsnip``, ``dr_willis``, ``bob2``) are always rewritten.

    Rewriting every bare occurrence of a word-like nick would wreck the text for everyone else.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    wanted = {k for k in (mention_key(n) for n in names if isinstance(n, str) and _PLAIN_WORD.fullmatch(n.strip())) if k is not None}
    bare: dict[str, int] = {}
    addressed: dict[str, int] = {}
    if wanted:
        for text in texts:
            if not isinstance(text, str):
                continue
            for m in _WORD_RUN.finditer(text.lower()):
                word = m.group(0)
                if word in wanted:
                    counter = addressed if _addressing(m) else bare
                    counter[word] = counter.get(word, 0) + 1
    wordlike = {
        w for w, n_bare in bare.items()
        if n_bare >= min_bare and addressed.get(w, 0) < max_addressing_share * (n_bare + addressed.get(w, 0))
    }
    return frozenset(ENGLISH_STOP_WORDS) | frozenset(wordlike)


_PLAIN_WORD = re.compile(r"[A-Za-z][a-z]*")
_ADDRESS_END = re.compile(r"\s*[:,]")


@dataclass
class MentionMatcher:
    """The mention regex of one timeline and its names (lowercased key -> first-seen spelling);
    ``addressing_only``: keys that are common words, rewritten only in addressing forms."""

    pattern: re.Pattern
    names: dict[str, str]
    addressing_only: frozenset[str] = frozenset()

    @classmethod
    def build(cls, authors, common: frozenset[str] = frozenset()) -> MentionMatcher:
        names: dict[str, str] = {}
        for a in authors:
            if isinstance(a, str):
                key = mention_key(a)
                if key is not None:
                    names.setdefault(key, a.strip())
        special = sorted(k for k in names if not _WORD_RUN.fullmatch(k))
        parts = [
            "(?P<ph>" + "|".join(re.escape(p) for p in PLACEHOLDERS) + ")",
            r"<@(?P<sid>[^<>\s]+)>",
        ]
        if special:
            parts.append(rf"(?<![{_WORD}])(?P<sp>{trie_regex(special)})(?![{_WORD}])")
        parts.append(rf"(?P<run>[{_WORD}]+)")
        return cls(re.compile("|".join(parts), re.IGNORECASE), names, frozenset(k for k in names if k in common))


def _addressing(m: re.Match) -> bool:
    """``@name`` anywhere, or ``name:`` / ``name,`` opening the message."""
    start, whole = m.start(), m.string
    if start > 0 and whole[start - 1] == "@":  # @name, <@name>
        return True
    return whole[:start].strip() == "" and _ADDRESS_END.match(whole, m.end()) is not None


@dataclass
class Scope:
    """Pseudonyms of one scope (a conversation or a timeline): lowercased key -> pseudonym."""

    matcher: MentionMatcher | None
    by_key: dict[str, str] = field(default_factory=dict)
    next_k: int = 1
    rewritten: int = 0
    mentioned: set[str] = field(default_factory=set)  # spellings of names pseudonymised via a mention

    def _lookup(self, key: str) -> str | None:
        p = self.by_key.get(key)
        if p is None and self.matcher is not None and key in self.matcher.names:
            p = self.by_key[key] = pseudonym(self.next_k)
            self.next_k += 1
            self.mentioned.add(self.matcher.names[key])
        return p

    def _replace(self, m: re.Match) -> str:
        if m.group("ph") is not None:
            return m.group(0)
        sid = m.group("sid")
        if sid is not None:
            p = None
            for part in sid.split("|"):  # <@U123> or <@U123|alice>
                key = part.strip().lower()
                if key in self.by_key or (self.matcher is not None and key in self.matcher.names):
                    p = self._lookup(key)
                    break
            self.rewritten += 1
            return f"<@{p}>" if p is not None else UNKNOWN_MENTION
        text = m.group(0)
        key = text.lower()
        if key not in self.by_key and (self.matcher is None or key not in self.matcher.names):
            return text
        if self.matcher is not None and key in self.matcher.addressing_only and not _addressing(m):
            return text  # a common word used as a word, not as a mention
        self.rewritten += 1
        return self._lookup(key)

    def rewrite(self, text: str) -> str:
        if self.matcher is None or not isinstance(text, str):
            return text
        return self.matcher.pattern.sub(self._replace, text)


def pseudonymise(
    frame: pd.DataFrame,
    timeline: np.ndarray,
    scheme: str,
    matchers: dict[str, MentionMatcher] | None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """New (author, text) arrays for ``frame`` (positions as in ``frame``), mentions rewritten, names mapped.

    ``timeline`` is ``timelines(frame.conversation_id)``; ``matchers`` maps a timeline to its
    ``MentionMatcher`` (None: do not rewrite mentions). Returns (authors, texts, mentions rewritten,
    distinct original names pseudonymised).
    """
    n = len(frame)
    authors = frame["author"].to_numpy(dtype=object)
    texts = frame["text"].to_numpy(dtype=object)
    if scheme == "per_timeline":
        ts = frame["timestamp"].to_numpy(dtype="datetime64[ns]")
        nat = np.isnat(ts)
        ts_i8 = ts.view("int64")
        conv_codes = pd.factorize(frame["conversation_id"], sort=True)[0]
        tl_codes = pd.factorize(timeline, sort=True)[0]
        # lexsort: last key is primary -> (timeline, NaT last, timestamp, conversation_id, message_idx)
        order = np.lexsort((frame["message_idx"].to_numpy(), conv_codes, ts_i8, nat, tl_codes))
        scope_key = timeline
    elif scheme == "per_conversation":
        order = np.lexsort((frame["message_idx"].to_numpy(), pd.factorize(frame["conversation_id"], sort=True)[0]))
        scope_key = frame["conversation_id"].to_numpy(dtype=object)
    else:
        raise ValueError(f"pseudonymise: scheme must be per_conversation or per_timeline, got {scheme!r}")
    new_authors = authors.copy()
    new_texts = texts.copy()
    if n == 0:
        return new_authors, new_texts, 0, 0
    sk = scope_key[order]
    cut = np.flatnonzero(sk[1:] != sk[:-1]) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [n]))
    mapped: set[str] = set()
    rewritten = 0
    for s, e in zip(starts.tolist(), ends.tolist()):
        rows = order[s:e]
        scope = Scope(matchers.get(timeline[rows[0]]) if matchers is not None else None)
        exact: dict[str, str] = {}
        for i in rows.tolist():
            a = authors[i]
            if not isinstance(a, str) or a == "":
                continue  # None / missing stays as it is
            p = exact.get(a)
            if p is None:
                p = exact[a] = pseudonym(scope.next_k)
                scope.next_k += 1
                key = mention_key(a)
                if key is not None:
                    scope.by_key.setdefault(key, p)
            new_authors[i] = p
        mapped.update(exact)
        if scope.matcher is not None:
            for i in rows.tolist():
                new_texts[i] = scope.rewrite(texts[i])
            rewritten += scope.rewritten
            mapped.update(scope.mentioned)
    return new_authors, new_texts, rewritten, len(mapped)
