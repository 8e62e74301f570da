"""The resumable DDP sampler: exact orders, partition, resume equivalence, bad state."""

from __future__ import annotations

import numpy as np
import pytest

from longrecipe.data import ResumableDistributedSampler, epoch_order


def _sampler(n=10, **kw):
    return ResumableDistributedSampler(range(n), **kw)


def test_epoch_order_seeded():
    a = epoch_order(50, seed=3, epoch=0)
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, epoch_order(50, seed=3, epoch=0))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=0))
    assert epoch_order(4, seed=3, epoch=7, shuffle=False).tolist() == [0, 1, 2, 3]


def test_keys_carry_the_epoch():
    s = _sampler(4, shuffle=False)
    assert list(s) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    s.set_epoch(2)
    assert list(s) == [(2, 0), (2, 1), (2, 2), (2, 3)]


def test_ddp_partition_pad_and_drop_exact():
    pad = [[i for _, i in _sampler(10, shuffle=False, num_replicas=3, rank=r)] for r in range(3)]
    assert pad == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]  # padded to 12 by wrapping around
    drop = [[i for _, i in _sampler(10, shuffle=False, num_replicas=3, rank=r, drop_last=True)] for r in range(3)]
    assert drop == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    shuffled = [[i for _, i in _sampler(10, seed=1, num_replicas=2, rank=r)] for r in range(2)]
    assert sorted(shuffled[0] + shuffled[1]) == list(range(10))
    order = epoch_order(10, seed=1, epoch=0).tolist()
    assert shuffled[0] == order[0::2] and shuffled[1] == order[1::2]
    assert len(_sampler(10, num_replicas=3, rank=0)) == 4


@pytest.mark.parametrize("world", [1, 2])
def test_resume_continues_with_exactly_the_next_samples(world):
    full = [list(_sampler(23, seed=5, num_replicas=world, rank=r)) for r in range(world)]
    k = 3  # batches of 2 per rank already consumed
    resumed = []
    for r in range(world):
        first = _sampler(23, seed=5, num_replicas=world, rank=r)
        it = iter(first)
        _ = [next(it) for _ in range(2 * k + 1)]  # the loader prefetched one sample more than was consumed
        first.mark_consumed(2 * k * world)
        state = first.state_dict()
        assert state == {"epoch": 0, "consumed": 2 * k * world, "seed": 5, "num_samples": 23, "shuffle": True,
                         "num_replicas": world}
        fresh = _sampler(23, seed=5, num_replicas=world, rank=r)
        fresh.load_state_dict(state)
        assert len(fresh) == len(full[r])  # __len__ is the whole epoch (stable for Lightning)
        resumed.append(list(fresh))
        assert len(list(fresh)) == len(full[r])  # the offset applies to one pass only
    assert resumed == [f[2 * k:] for f in full]


def test_resume_in_a_later_epoch_and_with_another_world_size():
    s = _sampler(12, seed=9)
    s.set_epoch(3)
    s.mark_consumed(4)
    state = s.state_dict()
    two = [_sampler(12, seed=9, num_replicas=2, rank=r) for r in range(2)]
    for t in two:
        t.load_state_dict(state)
    order = epoch_order(12, seed=9, epoch=3).tolist()
    keys = [list(t) for t in two]
    assert keys == [[(3, i) for i in order[4::2]], [(3, i) for i in order[5::2]]]
    s.set_epoch(3)  # same epoch: keeps the counter
    assert s.consumed == 4
    s.set_epoch(4)  # a new epoch starts from its beginning
    assert s.consumed == 0 and [i for _, i in s] == epoch_order(12, seed=9, epoch=4).tolist()


def test_bad_state_and_arguments():
    s = _sampler(10, seed=1)
    with pytest.raises(ValueError, match=r"checkpoint has seed=2 but this run has 1; resume with the same data config"):
        s.load_state_dict({"epoch": 0, "consumed": 0, "seed": 2, "num_samples": 10, "shuffle": True})
    with pytest.raises(ValueError, match=r"checkpoint has num_samples=11 but this run has 10"):
        s.load_state_dict({"epoch": 0, "consumed": 0, "seed": 1, "num_samples": 11, "shuffle": True})
    with pytest.raises(ValueError, match=r"rank must be in \[0, num_replicas\)"):
        _sampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=r"2 samples cannot be split over 3 ranks with drop_last=true"):
        _sampler(2, num_replicas=3, rank=0, drop_last=True)
