import pickle

import numpy as np
import pytest

from thread_embed_pipeline.training.batching import ConversationDisjointBatchSampler, ConversationDisjointSamplerFactory


def _random_groups(rng: np.random.Generator, n: int) -> list:
    sizes = rng.integers(1, 6, size=n)
    groups = np.repeat(np.arange(len(sizes)), sizes)[:n]
    ids = [f"conv{g}" for g in rng.permutation(groups)]
    for i in rng.choice(n, size=n // 20, replace=False):  # a few rows without a conversation
        ids[i] = None
    return ids


def _check(batches: list[list[int]], groups: list, n: int, batch_size: int) -> None:
    assert sorted(i for batch in batches for i in batch) == list(range(n))  # every index exactly once
    for batch in batches:
        assert 0 < len(batch) <= batch_size
        named = [groups[i] for i in batch if groups[i] is not None]
        assert len(named) == len(set(named)), f"two rows of one conversation in {batch}"


@pytest.mark.parametrize("trial", range(25))
def test_random_groups_never_share_a_batch_and_every_index_is_used_once(trial):
    rng = np.random.default_rng(trial)
    n, batch_size = int(rng.integers(1, 400)), int(rng.integers(2, 40))
    groups = _random_groups(rng, n)
    sampler = ConversationDisjointBatchSampler(groups, batch_size=batch_size, seed=trial)
    batches = list(sampler)
    _check(batches, groups, n, batch_size)
    assert len(sampler) == len(batches)
    # groups much smaller than the number of batches: only the remainder batch is short
    if max(sizes := np.unique([g for g in groups if g is not None], return_counts=True)[1], default=0) < len(batches) - 1:
        assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
        assert len(batches) == -(-n // batch_size), sizes


def test_same_seed_and_epoch_give_the_same_batches_and_epochs_differ():
    groups = _random_groups(np.random.default_rng(0), 300)
    a = ConversationDisjointBatchSampler(groups, batch_size=16, seed=7)
    b = ConversationDisjointBatchSampler(groups, batch_size=16, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert second != first
    _check(second, groups, 300, 16)
    assert list(ConversationDisjointBatchSampler(groups, batch_size=16, seed=8)) != first
    a.set_epoch(0)
    assert list(a) == first  # an epoch replays exactly (what resuming mid-epoch relies on)


def test_repeated_texts_are_kept_apart_like_no_duplicates():
    n = 40
    groups = [f"c{i}" for i in range(n)]  # no conversation constraint at all
    anchors = [f"q{i}" for i in range(n)]
    positives = ["thanks" if i % 10 == 0 else f"p{i}" for i in range(n)]  # 4 rows share one text
    negatives = [f"p{(i + 1) % n}" if i % 10 != 9 else None for i in range(n)]  # texts shared across columns
    sampler = ConversationDisjointBatchSampler(groups, batch_size=8, seed=1, texts=[anchors, positives, negatives])
    batches = list(sampler)
    _check(batches, groups, n, 8)
    for batch in batches:
        texts = [t for i in batch for t in (anchors[i], positives[i], negatives[i]) if t is not None]
        assert len(texts) == len(set(texts)), batch


def test_a_conversation_bigger_than_the_batch_count_spills_into_smaller_trailing_batches():
    groups = ["big"] * 10 + [f"c{i}" for i in range(14)]  # 24 rows, batch 8: 3 batches, "big" needs 10
    sampler = ConversationDisjointBatchSampler(groups, batch_size=8, seed=3)
    batches = list(sampler)
    _check(batches, groups, 24, 8)
    assert len(batches) == len(sampler) >= 10
    sizes = [len(b) for b in batches]
    assert sizes == sorted(sizes, reverse=True)  # full batches first, leftovers last
    dropped = ConversationDisjointBatchSampler(groups, batch_size=8, seed=3, drop_last=True)
    assert all(len(b) == 8 for b in dropped) and len(list(dropped)) == len(dropped)


def test_factory_reads_text_columns_from_the_dataset_and_pickles():
    from datasets import Dataset

    dataset = Dataset.from_dict({"anchor": [f"a{i}" for i in range(12)], "positive": ["same"] * 2 + [f"p{i}" for i in range(10)]})
    factory = ConversationDisjointSamplerFactory([i // 2 for i in range(12)])
    factory = pickle.loads(pickle.dumps(factory))  # the Trainer pickles its args into checkpoints
    sampler = factory(dataset, batch_size=4, drop_last=False, valid_label_columns=["label"], generator=None, seed=0)
    batches = list(sampler)
    _check(batches, factory.group_ids, 12, 4)
    assert not any({0, 1} <= set(b) for b in batches)
    with pytest.raises(ValueError, match="group ids"):
        ConversationDisjointSamplerFactory([1, 2])(dataset, batch_size=4, drop_last=False)


def test_length_grouped_batches_cover_every_row_once_without_repeated_text_and_cut_padding():
    from thread_embed_pipeline.training.batching import LengthGroupedBatchSampler

    rng = np.random.default_rng(3)
    n, batch_size = 1000, 16
    lengths = rng.integers(5, 400, size=n)
    anchors = [f"a{i % 700}" for i in range(n)]  # 300 anchors repeat once
    positives = [f"p{i}" for i in range(n)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=batch_size, seed=1, texts=[anchors, positives], chunk_batches=8)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(n))
    for batch in batches:
        texts = [anchors[i] for i in batch] + [positives[i] for i in batch]
        assert len(texts) == len(set(texts)), "a text twice in one batch"
    # padding: the longest row of each batch, summed, is far below random batching's
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_order = rng.permutation(n)
    random_padded = sum(len(random_order[i : i + batch_size]) * lengths[random_order[i : i + batch_size]].max() for i in range(0, n, batch_size))
    assert padded < 0.8 * random_padded
    # deterministic per (seed, epoch), different across epochs
    again = LengthGroupedBatchSampler(lengths, batch_size=batch_size, seed=1, texts=[anchors, positives])
    assert list(again) == batches
    again.set_epoch(1)
    assert list(again) != batches


def test_length_grouped_factory_reads_the_dataset_columns():
    from datasets import Dataset

    from thread_embed_pipeline.training.batching import LengthGroupedSamplerFactory

    data = Dataset.from_dict({"anchor": [f"q{i}" * (i + 1) for i in range(40)], "positive": [f"d{i}" for i in range(40)]})
    sampler = LengthGroupedSamplerFactory(chunk_batches=2)(data, batch_size=8, drop_last=True, seed=0)
    batches = list(sampler)
    assert all(len(b) == 8 for b in batches) and len(batches) == 5
    assert pickle.loads(pickle.dumps(LengthGroupedSamplerFactory())).chunk_batches == 8  # the Trainer pickles its arguments
