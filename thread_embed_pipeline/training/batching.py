"""Batch samplers for in-batch-negative losses (MultipleNegativesRankingLoss and its cached variant).

With in-batch negatives every other positive in a batch is treated as a wrong answer for an anchor.
Two pairs cut from the same conversation usually share topic, people and often text, so putting them
in one batch creates *false* negatives. ``ConversationDisjointBatchSampler`` builds batches in which
no two rows share a group id (the conversation) and no text value occurs twice (the same guarantee as
sentence-transformers' ``NoDuplicatesBatchSampler``).

How an epoch is built (deterministic for ``(seed, epoch)``):

1. Groups are put in a random order, rows are shuffled inside each group, and the rows are laid out
   group after group.
2. That sequence is dealt column by column over ``ceil(n / batch_size)`` batch slots ("striping"),
   the last batch holding only the remainder. Consecutive rows go to different batches, so a group
   with at most ``n_batches - 1`` rows never lands twice in one batch: for realistic data (many
   conversations, each much smaller than the number of batches) this already gives conflict-free
   full batches.
3. A greedy pass over the striped order then fills each batch with the next row that has no
   conflict (same group or a text already in the batch), deferring conflicting rows to later batches.

Leftovers: rows that cannot be placed in a full batch without a conflict (a conversation with more
rows than there are batches, or a text repeated more often than that) are not dropped and not
repeated: they go into trailing batches, each still conflict-free, that are smaller than
``batch_size``. Every index therefore appears exactly once per epoch. All smaller batches (the
remainder and these leftovers) come last; with ``drop_last=True`` they are all dropped. Full batches
are yielded in a shuffled order. ``len()`` is exact for the current epoch (the plan is computed and
cached); it equals ``ceil(n / batch_size)`` unless leftovers occur, and then may differ slightly
from epoch to epoch.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import pandas as pd
from torch.utils.data import BatchSampler

logger = logging.getLogger(__name__)


def _codes(values: Sequence[Hashable], *, nulls_are_unique: bool) -> np.ndarray:
    """Dense int codes for ``values``; nulls get a fresh code each (no constraint) or -1."""
    codes, uniques = pd.factorize(pd.Series(list(values), dtype=object), use_na_sentinel=True)
    codes = codes.astype(np.int64)
    missing = codes < 0
    if nulls_are_unique and missing.any():
        codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    return codes


class ConversationDisjointBatchSampler(BatchSampler):
    """Batches with no two rows of one group and no repeated text; see the module docstring.

    Args:
        group_ids: one group id per dataset row (a conversation id); ``None``/NaN means "no group".
        batch_size: rows per full batch.
        drop_last: drop every batch smaller than ``batch_size``.
        seed: base seed; epoch ``e`` uses ``(seed, e)``, set through ``set_epoch`` by the Trainer.
        texts: optional text columns (each a sequence aligned with the rows); a text value may occur
            at most once per batch across all columns. Nulls are ignored.
    """

    def __init__(
        self,
        group_ids: Sequence[Hashable],
        batch_size: int,
        drop_last: bool = False,
        seed: int = 0,
        texts: Sequence[Sequence[str | None]] | None = None,
    ) -> None:
        n = len(group_ids)
        super().__init__(range(n), batch_size=batch_size, drop_last=drop_last)
        self.num_rows = n
        self.seed = int(seed)
        self.epoch = 0
        self.groups = _codes(group_ids, nulls_are_unique=True)
        # conflict keys per row: the group code, then text codes shifted past the group codes
        key_columns = [self.groups]
        offset = int(self.groups.max()) + 1 if n else 0
        if texts:
            for column in texts:
                if len(column) != n:
                    raise ValueError(f"a text column has {len(column)} values for {n} group ids")
            # one shared code space so equal texts in different columns also conflict
            flat = [value for column in texts for value in column]
            text_codes = _codes(flat, nulls_are_unique=False).reshape(len(texts), n)
            for column_codes in text_codes:
                key_columns.append(np.where(column_codes < 0, -1, column_codes + offset))
        self._keys = [tuple(int(k) for k in row if k >= 0) for row in zip(*key_columns)] if n else []
        self._plan_epoch: int | None = None
        self._plan: list[list[int]] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # -- planning -------------------------------------------------------------------------------
    def _striped_order(self, rng: np.random.Generator) -> np.ndarray:
        n, b = self.num_rows, self.batch_size
        # random group order, random order within groups, groups contiguous
        group_rank = rng.permutation(int(self.groups.max()) + 1)[self.groups]
        within = rng.random(n)
        laid_out = np.lexsort((within, group_rank))
        # deal the layout column-major over n_batches slots; the last batch holds the remainder
        n_batches = -(-n // b)
        last_size = n - (n_batches - 1) * b
        slot_batch = np.tile(np.arange(n_batches), b).reshape(b, n_batches)
        valid = np.ones_like(slot_batch, dtype=bool)
        valid[last_size:, n_batches - 1] = False
        slot_batch = slot_batch[valid]  # row-major over (column, batch) = dealing order
        return laid_out[np.argsort(slot_batch, kind="stable")]

    def _build_plan(self) -> list[list[int]]:
        if self.num_rows == 0:
            return []
        rng = np.random.default_rng([self.seed, self.epoch])
        order = self._striped_order(rng).tolist()
        keys = self._keys
        full: list[list[int]] = []
        small: list[list[int]] = []
        groups = self.groups
        # deferred rows, per group in order of first deferral; only a group's head row is tried
        # (one batch takes at most one row of a group), so a big group costs O(1) per batch
        pending: dict[int, deque[int]] = {}
        cursor = 0
        # greedy fill; every batch places at least one row, so this terminates
        while pending or cursor < len(order):
            batch: list[int] = []
            used: set[int] = set()
            for group in list(pending):
                if len(batch) == self.batch_size:
                    break
                queue = pending[group]
                row_keys = keys[queue[0]]
                if not any(k in used for k in row_keys):
                    batch.append(queue.popleft())
                    used.update(row_keys)
                    if not queue:
                        del pending[group]
            while len(batch) < self.batch_size and cursor < len(order):
                index = order[cursor]
                cursor += 1
                group = int(groups[index])
                row_keys = keys[index]
                if group in pending or any(k in used for k in row_keys):
                    pending.setdefault(group, deque()).append(index)
                    continue
                batch.append(index)
                used.update(row_keys)
            (full if len(batch) == self.batch_size else small).append(batch)
        # full batches in random order, then the smaller ones, largest first
        full = [full[i] for i in rng.permutation(len(full))]
        expected_small = 0 if self.num_rows % self.batch_size == 0 else 1
        if len(small) > expected_small:
            logger.warning(
                "conversation-disjoint batching (epoch %d): %d rows could not fill full batches without a shared "
                "conversation or text; they form %d batches smaller than %d",
                self.epoch, sum(len(b) for b in small), len(small), self.batch_size,
            )
        if self.drop_last:
            return full
        return full + sorted(small, key=len, reverse=True)

    def plan(self) -> list[list[int]]:
        """The batches of the current epoch (cached until ``set_epoch`` changes it)."""
        if self._plan_epoch != self.epoch:
            self._plan = self._build_plan()
            self._plan_epoch = self.epoch
        return self._plan

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.plan():
            yield list(batch)

    def __len__(self) -> int:
        return len(self.plan())


class ConversationDisjointSamplerFactory:
    """The ``batch_sampler`` callable for ``SentenceTransformerTrainingArguments``.

    sentence-transformers calls it as ``factory(dataset, batch_size=..., drop_last=...,
    valid_label_columns=..., generator=..., seed=...)``. The group ids travel inside the factory (a
    picklable closure: the Trainer pickles its arguments into every checkpoint), so they never become
    a dataset column that the loss would read as an extra text input. Text columns for the duplicate
    check are read from the dataset (label columns excluded).
    """

    def __init__(self, group_ids: Sequence[Hashable]) -> None:
        self.group_ids = list(group_ids)

    def __call__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None, seed: int = 0):
        if len(dataset) != len(self.group_ids):
            raise ValueError(f"the dataset has {len(dataset)} rows but {len(self.group_ids)} group ids were given")
        columns = [c for c in dataset.column_names if c not in set(valid_label_columns or []) and c != "dataset_name"]
        texts = [dataset[c] for c in columns]
        return ConversationDisjointBatchSampler(self.group_ids, batch_size=batch_size, drop_last=drop_last, seed=seed, texts=texts)


class LengthGroupedBatchSampler(BatchSampler):
    """Batches of rows of similar length, with no text repeated inside a batch.

    A batch is padded to its longest anchor and its longest positive, so random batches of chat
    pairs (most short, a few long) spend much of their compute on padding; on the CPU default's
    training pairs, grouping cuts the padded tokens per epoch by about 30% (measured with the
    model's tokenizer at ``max_seq_length`` 128). Negatives stay random across the data: only rows
    of one chunk share batches.

    An epoch (deterministic for ``(seed, epoch)``): rows are shuffled, cut into chunks of
    ``batch_size * chunk_batches`` rows, each chunk is sorted by ``lengths`` (longest first) and
    cut into batches in that order; a row whose text is already in the batch being filled waits
    for the next batch (carried into the next chunk if need be). Batches are then shuffled; a
    final smaller batch (the remainder) comes last, or is dropped with ``drop_last``. Every row
    appears exactly once per epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        drop_last: bool = False,
        seed: int = 0,
        texts: Sequence[Sequence[str | None]] | None = None,
        chunk_batches: int = 8,
    ) -> None:
        n = len(lengths)
        super().__init__(range(n), batch_size=batch_size, drop_last=drop_last)
        if chunk_batches < 1:
            raise ValueError(f"chunk_batches must be >= 1, got {chunk_batches}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.seed = int(seed)
        self.epoch = 0
        self.chunk_batches = int(chunk_batches)
        columns = []
        for column in texts or []:
            if len(column) != n:
                raise ValueError(f"a text column has {len(column)} values for {n} rows")
            columns.append(column)
        flat = [value for column in columns for value in column]
        codes = _codes(flat, nulls_are_unique=False).reshape(len(columns), n) if columns else np.zeros((0, n), dtype=np.int64)
        self._keys = [tuple(int(k) for k in row if k >= 0) for row in codes.T] if n else []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        chunk = self.batch_size * self.chunk_batches
        batches: list[list[int]] = []
        waiting: list[int] = []
        for start in range(0, len(order), chunk):
            rows = np.concatenate([np.asarray(waiting, dtype=np.int64), order[start : start + chunk]])
            rows = rows[np.argsort(-self.lengths[rows], kind="stable")].tolist()
            waiting = []
            batch: list[int] = []
            used: set[int] = set()
            for row in rows:
                if any(k in used for k in self._keys[row]):
                    waiting.append(row)
                    continue
                batch.append(row)
                used.update(self._keys[row])
                if len(batch) == self.batch_size:
                    batches.append(batch)
                    batch, used = [], set()
            waiting = batch + waiting  # an unfinished batch of this chunk joins the next one
        # the rest: conflict-free smaller batches, filled greedily
        tail: list[list[int]] = []
        while waiting:
            batch, used, later = [], set(), []
            for row in waiting:
                if len(batch) < self.batch_size and not any(k in used for k in self._keys[row]):
                    batch.append(row)
                    used.update(self._keys[row])
                else:
                    later.append(row)
            tail.append(batch)
            waiting = later
        batches = [batches[i] for i in rng.permutation(len(batches))]
        full_tail = [b for b in tail if len(b) == self.batch_size]
        small = [b for b in tail if len(b) < self.batch_size]
        if self.drop_last:
            return batches + full_tail
        return batches + full_tail + small

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(b) for b in self.plan())

    def __len__(self) -> int:
        return len(self.plan())


class LengthGroupedSamplerFactory:
    """The ``batch_sampler`` callable for length-grouped batches; lengths are the rows' characters
    summed over the text columns (a proxy for tokens that needs no tokenizer)."""

    def __init__(self, chunk_batches: int = 8) -> None:
        self.chunk_batches = chunk_batches

    def __call__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None, seed: int = 0):
        columns = [c for c in dataset.column_names if c not in set(valid_label_columns or []) and c != "dataset_name"]
        texts = [dataset[c] for c in columns]
        lengths = [sum(len(t or "") for t in row) for row in zip(*texts)]
        return LengthGroupedBatchSampler(lengths, batch_size=batch_size, drop_last=drop_last, seed=seed, texts=texts, chunk_batches=self.chunk_batches)


class GlobalBatchShards(BatchSampler):
    """One DDP step's batches, planned together: ``inner`` plans *global* batches of
    ``world_size x batch_size`` rows, each cut into ``world_size`` equal, consecutive sub-batches.

    accelerate's ``BatchSamplerShard`` gives batch ``i`` to rank ``i % world_size``, so rank ``r``
    trains sub-batch ``r`` of every global batch: the ranks' rows of one step are disjoint, and the
    inner sampler's guarantees (no repeated text; with the conversation-disjoint sampler, no two rows
    of one conversation) hold across all of them, which is what a loss that gathers every rank's
    embeddings needs. Every rank builds the same plan (one shared seed). A global batch that does not
    split evenly loses its last ``len % world_size`` rows (every rank must contribute the same number
    of rows to the gather); ``dropped_rows`` counts them and they are logged.
    """

    def __init__(self, inner, world_size: int) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        self.inner = inner
        self.world_size = int(world_size)
        self.drop_last = getattr(inner, "drop_last", False)
        # None: accelerate then hands every sub-batch on, also the shorter ones of a last, small global batch
        self.batch_size = None
        self.dropped_rows = 0

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        n = self.world_size
        dropped = 0
        for batch in self.inner:
            size = len(batch) // n
            dropped += len(batch) - size * n
            if size:
                for r in range(n):
                    yield list(batch[r * size:(r + 1) * size])
        if dropped:
            logger.warning("%d row(s) left out this epoch: a last global batch did not split evenly over %d processes", dropped, n)
        self.dropped_rows = dropped

    def __len__(self) -> int:
        return len(self.inner) * self.world_size


class GlobalBatchSamplerFactory:
    """The Trainer's ``batch_sampler`` under DDP: ``inner`` (a sampler factory or class taking the
    sentence-transformers batch-sampler arguments) plans global batches of ``world_size`` times the
    per-process batch size, and :class:`GlobalBatchShards` deals them out."""

    def __init__(self, inner, world_size: int) -> None:
        if not callable(inner):
            raise TypeError(f"inner must be a batch-sampler class or factory, got {inner!r}")
        self.inner = inner
        self.world_size = int(world_size)
        self.last: GlobalBatchShards | None = None  # the sampler the Trainer built (its dropped_rows)

    def __call__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None, seed: int = 0):
        # sentence-transformers asks for drop_last under DDP, against uneven last batches that would hang
        # the gather; GlobalBatchShards splits every global batch evenly, so the inner sampler keeps its
        # smaller batches and at most world_size - 1 rows per global batch are left out
        sampler = self.inner(dataset, batch_size=batch_size * self.world_size, drop_last=False, valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        self.last = GlobalBatchShards(sampler, self.world_size)
        return self.last
