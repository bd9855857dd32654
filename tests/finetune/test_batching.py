"""Data order: deterministic per (seed, epoch), length-grouped, every sample once, sharded by rank."""
from __future__ import annotations

from ragtune.finetune.llm.batching import epoch_batches, micro_batches


def test_epoch_batches_deterministic_complete_and_grouped():
    lengths = [(i * 37) % 101 + 1 for i in range(1000)]
    a = epoch_batches(lengths, 4, seed=7, epoch=0, group_by_length=True)
    assert a == epoch_batches(lengths, 4, seed=7, epoch=0, group_by_length=True)
    assert a != epoch_batches(lengths, 4, seed=7, epoch=1, group_by_length=True)
    assert sorted(i for b in a for i in b) == list(range(1000))
    assert max(lengths[i] for i in a[0]) == max(lengths)           # longest batch first (OOM shows early)
    def spread(bs):
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in bs) / len(bs)

    plain = epoch_batches(lengths, 4, seed=7, epoch=0, group_by_length=False)
    assert spread(a) < 0.2 * spread(plain)                          # far less padding


def test_the_epochs_longest_sample_is_in_the_first_batch_across_windows():
    # 4 x 50 = 200 samples per length-grouping window; the longest sample sits in a later window
    lengths = [10 + (i * 7) % 50 for i in range(2000)]
    lengths[1733] = 999
    for epoch in range(3):
        batches = epoch_batches(lengths, 4, seed=1, epoch=epoch, group_by_length=True)
        assert 1733 in batches[0]
        assert sorted(i for b in batches for i in b) == list(range(2000))


def test_drop_last_and_sharding():
    batches = epoch_batches(list(range(10)), 4, seed=0, epoch=0, group_by_length=False, drop_last=True)
    assert [len(b) for b in batches] == [4, 4]
    batch = [10, 11, 12, 13, 14, 15, 16, 17]
    # 2 ranks x micro-batch 2 x accumulation 2: each rank gets 2 micro-batches, disjoint, covering all
    r0, r1 = (micro_batches(batch, 2, 2, 2, r) for r in (0, 1))
    assert r0 == [[10, 11], [14, 15]] and r1 == [[12, 13], [16, 17]]
    assert micro_batches(batch, 2, 4, 1, 0) == [[10, 11], [12, 13], [14, 15], [16, 17]]


def test_split_by_attention_area_bounds_rows_times_length_squared():
    from ragtune.finetune.llm.batching import split_by_attention_area

    lengths = {0: 2048, 1: 2000, 2: 1500, 3: 900, 4: 1024, 5: 100}
    area = 4 * 1024 ** 2                       # 4 unpacked rows of cutoff 1024
    chunks = split_by_attention_area([0, 1, 2, 3], lengths, area)
    assert chunks == [[0], [1], [2], [3]]      # 2 x 2048^2 > 4 x 1024^2; 1500 + 900 would be 2 x 1500^2 > area
    assert split_by_attention_area([4, 3, 5, 5], lengths, area) == [[4, 3, 5, 5]]   # unpacked-sized: untouched
    for chunk in split_by_attention_area([2, 3, 5, 5, 4], lengths, area):
        assert len(chunk) == 1 or len(chunk) * max(lengths[i] for i in chunk) ** 2 <= area
    assert [i for c in split_by_attention_area([2, 3, 5, 5, 4], lengths, area) for i in c] == [2, 3, 5, 5, 4]
