"""What the trainer is fed: the pairs checked against the settings (:func:`check_training_inputs`), the
columns chosen (anchor, positive, and a hard negative where every row has one), and speaker dropout
(:func:`drop_speakers`: ``speaker_<k>:`` prefixes removed with a probability, seeded).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pandas as pd

from thread_embed_pipeline.schemas import NEGATIVE_COLUMN
from thread_embed_pipeline.training.settings import TrainingSettings, validate_options

_SPEAKER_PREFIX = re.compile(r"^speaker_\d+: ", re.MULTILINE)

def drop_speakers(pairs: pd.DataFrame, probability: float, seed: int, columns: Sequence[str] = ("anchor", "positive")) -> tuple[pd.DataFrame, int]:
    """Speaker dropout: each text of ``columns`` loses the ``speaker_<k>: `` prefix of every line with
    ``probability``, drawn per cell from a generator seeded with ``seed`` (the same pairs and seed give
    the same texts). Returns the pairs and how many cells were changed."""
    if probability <= 0.0 or pairs.empty:
        return pairs, 0
    import numpy as np

    rng = np.random.default_rng([int(seed), 0x5BEA])
    out, changed = pairs.copy(), 0
    for column in columns:
        if column not in out.columns:
            continue
        hit = rng.random(len(out)) < probability
        texts = out[column].to_numpy(dtype=object).copy()
        for i in np.flatnonzero(hit):
            if isinstance(texts[i], str):
                stripped = _SPEAKER_PREFIX.sub("", texts[i])
                changed += stripped != texts[i]
                texts[i] = stripped
        out[column] = texts
    return out, changed

def check_training_inputs(pairs: pd.DataFrame, settings: TrainingSettings, processes: int = 1) -> None:
    """The checks that need neither a model nor a process group (the ``model`` asset runs them before
    it launches the training program): the columns, the options, at least one global batch."""
    for column in ("anchor", "positive"):
        if column not in pairs.columns:
            raise ValueError(f"training pairs lack the column {column!r}")
    validate_options(settings)
    if settings.batch_sampler == "conversation_disjoint" and "conversation_id" not in pairs.columns:
        raise ValueError("batch_sampler='conversation_disjoint' needs a 'conversation_id' column in the training pairs")
    if len(pairs) < settings.batch_size * processes:
        per = f" ({processes} processes x {settings.batch_size})" if processes > 1 else ""
        raise ValueError(f"{len(pairs)} training pairs are fewer than one batch{per} ({settings.batch_size * processes})")

def _has_text(values: pd.Series) -> pd.Series:
    """True where the value is a non-blank string (null, NaN, None and "" count as missing)."""
    return values.map(lambda value: isinstance(value, str) and value.strip() != "").astype(bool)

def _select_columns(pairs: pd.DataFrame, settings: TrainingSettings, log: Callable[[str], None]) -> tuple[pd.DataFrame, list[str], int]:
    """The rows and text columns to train on, and how many rows were dropped for lack of a negative.

    A ``negative`` column (hard negative text; null or blank where there is none) is used as follows:

    * filled for every row: train on (anchor, positive, negative) triplets; MNRL scores the negative
      as one more candidate for its anchor, next to all in-batch positives and negatives;
    * filled for some rows, ``use_negatives=False`` (default): the column is dropped and all rows train
      as pairs (a batch must have one shape, and dropping rows silently would shrink the data);
    * filled for some rows, ``use_negatives=True``: only the rows with a negative are kept (the count
      dropped is logged and reported), trained as triplets;
    * absent or empty: pairs; ``use_negatives=True`` then is an error.
    """
    columns = ["anchor", "positive"]
    dropped = 0
    if NEGATIVE_COLUMN in pairs.columns:
        has_negative = _has_text(pairs[NEGATIVE_COLUMN])
        with_negative = int(has_negative.sum())
        if with_negative == len(pairs) and len(pairs):
            columns.append(NEGATIVE_COLUMN)
            log(f"training on (anchor, positive, negative) triplets: every one of the {len(pairs)} rows has a hard negative")
        elif with_negative and settings.use_negatives:
            dropped = len(pairs) - with_negative
            pairs = pairs[has_negative]
            columns.append(NEGATIVE_COLUMN)
            log(f"use_negatives=True: kept the {with_negative} rows with a hard negative, dropped {dropped} without one")
        elif with_negative:
            log(f"only {with_negative} of {len(pairs)} rows have a hard negative: training on pairs without negatives (set use_negatives=True to train on those {with_negative} triplets only)")
        elif settings.use_negatives:
            raise ValueError("use_negatives=True but no row has a hard negative")
    elif settings.use_negatives:
        raise ValueError(f"use_negatives=True but the training pairs have no {NEGATIVE_COLUMN!r} column")
    return pairs.reset_index(drop=True), columns, dropped
