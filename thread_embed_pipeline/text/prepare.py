"""corpus -> the text the model sees: bots out, secrets redacted, speakers pseudonymised.

``prepare_text(corpus, settings)`` takes a corpus table (``schemas.CORPUS_COLUMNS``) and returns a
table with the same columns and dtypes, sorted by (conversation_id, message_idx), plus an
accounting dict (every key always present, zeros included, so run metadata is stable)::

    {"read": n_in, "kept": n_out,
     "dropped": {"bot": .., "short_conversation": ..},       # read == kept + sum(dropped)
     "redacted": {reason: replaced spans, for each of redact.REDACTION_REASONS},
     "mentions_rewritten": .., "speakers_pseudonymised": .., "scheme": settings.speakers}

Steps, in this order:

1. **Bots** (``drop_bots``, drop reason ``bot``): the author contains "bot" (case-insensitive; the
   reference project's heuristic: ``ubotu``, ``GitHub-Bot``) or the text starts with ``[bot]``
   after stripping. Bot output is canned text, not conversation. (The heuristic also catches a
   human "Abbott"; that costs a few messages, never a leak.)
2. **Short conversations** (drop reason ``short_conversation``, counted per message): conversations
   with fewer than ``min_conversation_messages`` messages left after step 1 carry no thread structure.
3. **Redaction** of the kept texts (``redact``): secrets, URLs, e-mail addresses -> placeholders.
4. **Speakers** (``speakers``): authors -> ``speaker_<k>`` by the chosen scheme, and every mention of
   anyone -- an author of the timeline or not (``@handle``, ``<@ID|Name>``) -- rewritten to a pseudonym
   (after redaction, so placeholders survive). The names matched bare are those of *all* input authors
   of the timeline, bots and dropped conversations included, so no name survives because its owner's
   messages were dropped, plus everyone the timeline's texts mention.
   ``speakers_pseudonymised`` counts distinct original names replaced (as author or mention).
5. **Renumbering**: ``message_idx`` becomes 0..n-1 per conversation (order kept) and ``reply_to``
   points at the parent's new index; a parent that was dropped -> ``<NA>``.

Deterministic: the input is first sorted by (conversation_id, message_idx), every later order is
derived from it, so the same input and settings give the same bytes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import CORPUS_COLUMNS, missing_columns
from thread_embed_pipeline.text.redact import REDACTION_REASONS, redact_texts
from thread_embed_pipeline.text.settings import TextSettings
from thread_embed_pipeline.text.speakers import MentionMatcher, common_words, mentioned_names, pseudonymise, timelines

DROP_REASONS: tuple[str, ...] = ("bot", "short_conversation")


def bot_mask(corpus: pd.DataFrame) -> np.ndarray:
    """True where a row is bot output: author contains "bot" (any case), or text starts with "[bot]"."""
    by_author = corpus["author"].astype(object).str.contains("bot", case=False, regex=False)
    by_text = corpus["text"].astype(object).str.strip().str[:5].str.lower().eq("[bot]")
    return by_author.fillna(False).to_numpy(dtype=bool) | by_text.fillna(False).to_numpy(dtype=bool)


def _check_input(corpus: pd.DataFrame) -> None:
    missing = missing_columns(corpus.columns, CORPUS_COLUMNS)
    extra = [c for c in corpus.columns if c not in CORPUS_COLUMNS]
    if missing or extra:
        raise ValueError(f"prepare_text expects exactly CORPUS_COLUMNS {list(CORPUS_COLUMNS)}; missing {missing}, unexpected {extra}")
    dup = corpus.duplicated(["conversation_id", "message_idx"])
    if dup.any():
        first = corpus.loc[dup, ["conversation_id", "message_idx"]].iloc[0].tolist()
        raise ValueError(f"prepare_text expects (conversation_id, message_idx) unique; {int(dup.sum())} duplicates, e.g. {first}")


def _renumber(frame: pd.DataFrame) -> tuple[np.ndarray, pd.Series]:
    """New message_idx (0..n-1 per conversation) and reply_to remapped; ``frame`` sorted by (conversation_id, message_idx)."""
    n = len(frame)
    conv = pd.factorize(frame["conversation_id"], sort=False)[0].astype(np.int64)
    new_idx = frame.groupby(conv, sort=False).cumcount().to_numpy(dtype=np.int64)
    reply = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    if n == 0:
        return new_idx, reply
    old_idx = frame["message_idx"].to_numpy(dtype=np.int64)
    span = int(old_idx.max()) + 1
    keys = conv * span + old_idx  # strictly increasing: sorted by conversation then message_idx
    rt = frame["reply_to"].astype("Int64")
    has = rt.notna().to_numpy()
    parent = rt.to_numpy(dtype=np.int64, na_value=-1)
    ok = has & (parent >= 0) & (parent < span)
    want = conv[ok] * span + parent[ok]
    pos = np.searchsorted(keys, want)
    pos_c = np.minimum(pos, n - 1)
    found = keys[pos_c] == want
    vals = np.full(int(ok.sum()), -1, dtype=np.int64)
    vals[found] = new_idx[pos_c[found]]
    out = np.full(n, -1, dtype=np.int64)
    out[ok] = vals
    reply = pd.Series(pd.arrays.IntegerArray(np.maximum(out, 0), out < 0), index=frame.index)
    return new_idx, reply


def prepare_text(corpus: pd.DataFrame, settings: TextSettings = TextSettings()) -> tuple[pd.DataFrame, dict]:
    """The corpus as the model should see it, and the accounting dict (see the module docstring)."""
    _check_input(corpus)
    dtypes = corpus.dtypes.to_dict()
    n_in = len(corpus)
    frame = corpus.sort_values(["conversation_id", "message_idx"], kind="stable").reset_index(drop=True)
    frame = frame.astype({"author": object, "text": object})
    timeline_all = timelines(frame["conversation_id"])
    dropped = dict.fromkeys(DROP_REASONS, 0)

    keep = np.ones(n_in, dtype=bool)
    if settings.drop_bots and n_in:
        bots = bot_mask(frame)
        dropped["bot"] = int(bots.sum())
        keep &= ~bots
    if n_in:
        sizes = frame.loc[keep].groupby("conversation_id", sort=False).size()
        per_row = frame["conversation_id"].map(sizes).fillna(0).to_numpy()
        short = keep & (per_row < settings.min_conversation_messages)
        dropped["short_conversation"] = int(short.sum())
        keep &= ~short

    kept = frame.loc[keep].reset_index(drop=True)
    timeline = timeline_all[keep]

    texts, redacted = redact_texts(kept["text"].tolist(), settings)
    kept["text"] = pd.Series(texts, dtype=object)

    mentions = pseudonymised = 0
    if settings.speakers != "original":
        matchers = None
        if settings.rewrite_mentions:
            # names of every input author of the timeline (bots and dropped conversations included)
            authors_by_tl = pd.DataFrame({"tl": timeline_all, "author": frame["author"]}).dropna().drop_duplicates()
            authors = {tl: group["author"].tolist() for tl, group in authors_by_tl.groupby("tl", sort=True)}
            # everyone the timeline's kept texts mention, participant or not
            mentioned = {tl: mentioned_names(texts) for tl, texts in pd.Series(kept["text"].to_numpy(), index=timeline).groupby(level=0, sort=True)}
            common = common_words(kept["text"], authors_by_tl["author"].unique())
            # a name only ever mentioned is a word when the texts use it bare at all often ("@Deleted User" vs "I deleted it")
            only_mentioned = {n for names in mentioned.values() for n in names} - set(authors_by_tl["author"])
            mentioned_words = common_words(kept["text"], sorted(only_mentioned), max_addressing_share=float("inf"))
            matchers = {tl: MentionMatcher.build(authors.get(tl, []), common, mentioned.get(tl, ()), mentioned_words) for tl in sorted(set(timeline))}
        authors, new_texts, mentions, pseudonymised = pseudonymise(kept, timeline, settings.speakers, matchers)
        kept["author"] = pd.Series(authors, dtype=object)
        kept["text"] = pd.Series(new_texts, dtype=object)

    new_idx, reply = _renumber(kept)
    kept["message_idx"] = new_idx
    kept["reply_to"] = reply
    out = kept[list(CORPUS_COLUMNS)].astype(dtypes)
    accounting = {
        "read": n_in,
        "kept": len(out),
        "dropped": dropped,
        "redacted": redacted,
        "mentions_rewritten": int(mentions),
        "speakers_pseudonymised": int(pseudonymised),
        "scheme": settings.speakers,
    }
    assert accounting["read"] == accounting["kept"] + sum(dropped.values())
    assert set(redacted) == set(REDACTION_REASONS)
    return out, accounting
