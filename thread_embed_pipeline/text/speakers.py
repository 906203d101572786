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

Mentions: with any scheme but ``original`` (and ``rewrite_mentions``), a mention of *anyone* becomes a
pseudonym, participant or not:

* ``@handle`` (any handle: ``@alice``, ``@john.doe``, ``@Bob_42``; a known name with a space, ``@Jane Roe``,
  whole) -> ``@speaker_<k>``. Generic mentions (:data:`GENERIC_MENTIONS`: ``@here``, ``@everyone``,
  ``@channel``, ...) and pseudonyms already written stay. An ``@`` after a word character
  (``root@host``) is not a mention.
* ``<@ID>``, ``<@!ID>`` (Discord) and ``<@ID|Name>`` (Slack, and how every user-export reader writes a
  structured mention: a Telegram ``mention_name``, a Matrix pill) -> ``<@speaker_<k>>``; role mentions
  ``<@&ID>`` stay.
* the name of an author of the *same timeline*, or of anyone mentioned in it, wherever it appears
  (``alice: ...``, ``alice, ...``, a bare "thanks alice").

The same person keeps one pseudonym within the scope (per_conversation: the conversation; per_timeline:
the channel log): an author's mentions take the author's pseudonym, case-insensitively, and the parts of
``<@U123|Jane Roe>`` (the id and the name) all name one person, so ``<@U123>`` and ``@Jane Roe`` elsewhere
take the same pseudonym. A mentioned person who has not spoken in the scope gets the next free
``speaker_<k>``, in order of first mention, so the original name never survives.

Bare (no ``@``) occurrences: matching is case-insensitive, whole-word, where IRC nick characters
``[A-Za-z0-9_-[]\\^{}|`]`` (and any other Unicode word character) count as word characters, so ``alice_``
and ``malice`` are not ``alice``. Only names of at least two characters containing a letter are matched
(a nick ``42`` would otherwise rewrite every number). A name that is also a plain word is rewritten only
where it addresses someone (``name:`` or ``name,`` opening a message, ``@name``): for authors, an English
stop word or a word-shaped nick that the log uses as a word (:func:`common_words`: ``the``, ``my``,
``ubuntu`` in #ubuntu); for people who are only mentioned, a name spelled like a plain word that the texts also use bare
(:func:`common_words` with no addressing share), or a stop word, is a mention only as ``@name``
(``@Deleted User``, ``@Python``, ``@no`` must not turn "I deleted it", "python" or "no, ..." into a
pseudonym), while other names (``walkda``, ``R4BB1T``, ``john.doe``) are rewritten everywhere. A handle
with no letter or digit (``@_@``) is not a mention. Placeholders written by redaction
(``[URL]``, ``[EMAIL]``, ``[SECRET]``) are never rewritten, even when someone's nick is ``url``.

Matching is one compiled regex per timeline: placeholders, ``<@id>``, ``@handle`` (known names with a
non-word character first, as a trie, then any handle), the names that contain a non-word character
(``john.doe``, ``Jane Roe``) as a trie-shaped regex (longest name first), and otherwise a maximal run of
word characters looked up in a dict of lowercased names (a run *is* a whole-word match, so a dict lookup
replaces a several-thousand-way alternation for large Slack workspaces).
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
# @mentions that address a room, not a person (Slack, Discord, Matrix, Zulip, Mattermost): left as written
GENERIC_MENTIONS: frozenset[str] = frozenset({"here", "everyone", "channel", "room", "all", "stream", "topic", "group"})
# what follows "@" in a handle: word characters, then also . - (and a legacy Discord #1234); trailing . - are punctuation
_HANDLE = r"\w[\w.\-]*(?:#\d{4})?"
_AT = r"(?<![\w.@])@"  # "root@host", "a@@b" and e-mail-like words are not mentions
_MENTION_SCAN = re.compile(rf"{_AT}(?P<handle>{_HANDLE})|<@(?P<sid>[^<>&\n][^<>\n]{{0,199}})>")
_PSEUDONYM = re.compile(r"speaker_\d+")
_ALNUM = re.compile(r"[^\W_]")


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


def handle_key(handle: str) -> str:
    """The lowercased key of an ``@handle`` as written (trailing ``.`` / ``-`` are punctuation: ``@Mr.`` -> ``mr``)."""
    return handle.rstrip(".-").lower()


def _id_keys(part: str) -> list[str]:
    """The keys one part of ``<@...>`` may be known under: as written, and without Discord's ``!`` / a leading ``@``."""
    key = part.strip().lower()
    bare = key.lstrip("!@")
    return [key] if bare == key or not bare else [key, bare]


def mentioned_names(texts) -> list[str]:
    """Every person a text mentions, as written: ``@handle`` handles and each part of ``<@ID|Name>``
    (generic mentions and pseudonyms left out), in order of first mention."""
    seen: dict[str, str] = {}
    for text in texts:
        if not isinstance(text, str) or "@" not in text:
            continue
        for m in _MENTION_SCAN.finditer(text):
            if m.group("handle") is not None:
                parts = [m.group("handle").rstrip(".-")]
            else:
                parts = [p.strip() for p in m.group("sid").split("|")]
            for part in parts:
                key = part.lower().lstrip("!@")
                if part and _ALNUM.search(key) and key not in GENERIC_MENTIONS and not _PSEUDONYM.fullmatch(key):
                    seen.setdefault(part.lower(), part)
    return list(seen.values())


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
    ``addressing_only``: keys rewritten only in addressing forms (common words, and plain-word names of
    people who are only mentioned)."""

    pattern: re.Pattern
    names: dict[str, str]
    addressing_only: frozenset[str] = frozenset()
    at_only: frozenset[str] = frozenset()  # people only mentioned whose name is also a word: only "@name" is a mention

    @classmethod
    def build(cls, authors, common: frozenset[str] = frozenset(), mentioned=(), mentioned_words: frozenset[str] = frozenset()) -> MentionMatcher:
        """``authors``: the timeline's authors; ``mentioned``: the names its texts mention (:func:`mentioned_names`);
        ``common`` / ``mentioned_words``: the lowercased names used as plain words (:func:`common_words`), of
        authors and of the people only mentioned."""
        names: dict[str, str] = {}
        for a in authors:
            if isinstance(a, str):
                key = mention_key(a)
                if key is not None:
                    names.setdefault(key, a.strip())
        only_mentioned = set()
        for m in mentioned:
            key = mention_key(m) if isinstance(m, str) else None
            if key is not None and key not in names:
                names[key] = m.strip()
                only_mentioned.add(key)
        special = sorted(k for k in names if not _WORD_RUN.fullmatch(k))
        at_known = rf"(?P<atsp>{trie_regex(special)})(?![{_WORD}])|" if special else "(?P<atsp>(?!))|"  # (?!): never matches
        parts = [
            "(?P<ph>" + "|".join(re.escape(p) for p in PLACEHOLDERS) + ")",
            r"<@(?P<sid>[^<>&\n][^<>\n]{0,199})>",
            rf"{_AT}(?:{at_known}(?P<at>{_HANDLE}))",
        ]
        if special:
            parts.append(rf"(?<![{_WORD}])(?P<sp>{trie_regex(special)})(?![{_WORD}])")
        parts.append(rf"(?P<run>[{_WORD}]+)")
        words = frozenset(k for k in only_mentioned if k in mentioned_words or k in common)
        return cls(re.compile("|".join(parts), re.IGNORECASE), names, frozenset(k for k in names if k in common), words)


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

    def _known(self, key: str) -> bool:
        return key in self.by_key or (self.matcher is not None and key in self.matcher.names)

    def _person(self, keys: list[str]) -> str:
        """The pseudonym of the person named by any of ``keys`` (all of them name that person from now
        on); a person known by none of them gets the scope's next free pseudonym."""
        p = next((self._lookup(k) for k in keys if self._known(k)), None)
        if p is None:
            p = pseudonym(self.next_k)
            self.next_k += 1
            self.mentioned.add(keys[0])
        for k in keys:
            self.by_key.setdefault(k, p)
        return p

    def _replace(self, m: re.Match) -> str:
        if m.group("ph") is not None:
            return m.group(0)
        sid = m.group("sid")
        if sid is not None:  # <@U123>, <@!123>, <@U123|Jane Roe>: every part names the same person
            keys = [k for part in sid.split("|") for k in _id_keys(part) if k]
            if any(_PSEUDONYM.fullmatch(k) for k in keys):
                return m.group(0)
            self.rewritten += 1
            return f"<@{self._person(keys)}>"
        if m.group("atsp") is not None or m.group("at") is not None:
            handle = m.group("atsp") if m.group("atsp") is not None else m.group("at").rstrip(".-")
            key = handle.lower()
            if key in GENERIC_MENTIONS or _PSEUDONYM.fullmatch(key) or not _ALNUM.search(key):  # "@_@" is a face
                return m.group(0)
            self.rewritten += 1
            return "@" + self._person([key]) + m.group(0)[1 + len(handle):]
        text = m.group(0)
        key = text.lower()
        if mention_key(key) is None or not self._known(key):  # an id like "123" is known as <@123> only
            return text
        if self.matcher is not None and key in self.matcher.at_only:
            return text  # "no, ..." is not a mention of someone once called "@no"
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
