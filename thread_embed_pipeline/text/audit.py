"""The privacy audit of what leaves the text stage: ``@handles`` that are not pseudonyms.

Deliberately simpler than the rewriting it audits (``speakers``): any ``@`` that follows no word
character, ``.`` or ``@``, then a word character, is a handle (``@alice``, ``<@U123>``, ``<@!42>``,
``@Mr.``, ``<@!42>``) with a letter or digit in it, unless it is a pseudonym (``@speaker_3``, ``<@speaker_3>``) or a generic mention
(``@here``, ``@everyone``, ...). After the text stage, with any speaker scheme but ``original``, none
may remain: the ``<source>/text`` asset check and the exports' check count them, and the test suite
runs the count on the real mirror data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from thread_embed_pipeline.text.speakers import GENERIC_MENTIONS

_HANDLE = re.compile(r"(?:<@[!@]?|(?<![\w.@])@)(\w[\w.\-]*)")  # "<@!": a Discord <@!id>; "<@@": a Matrix id in a mention
_PSEUDONYM = re.compile(r"speaker_\d+")
_ALNUM = re.compile(r"[^\W_]")  # "@_@" is a face, not a handle


def original_handles(texts: Iterable[object]) -> Counter:
    """How often each non-pseudonymous ``@handle`` occurs in ``texts`` (lowercased, trailing ``.``/``-`` cut)."""
    found: Counter = Counter()
    for text in texts:
        if not isinstance(text, str) or "@" not in text:
            continue
        for m in _HANDLE.finditer(text):
            handle = m.group(1).rstrip(".-").lower()
            if _ALNUM.search(handle) and handle not in GENERIC_MENTIONS and not _PSEUDONYM.fullmatch(handle):
                found[handle] += 1
    return found
