"""Prefetcher: results in step order, jumps, errors, worker processes."""

import functools

import pytest

from chimerax.modelangelo.training.prefetch import Prefetcher


def _square(step: int, offset: int = 0) -> int:
    if step == 13:
        raise ValueError("bad step 13")
    return step * step + offset


def test_in_process_calls_make():
    with Prefetcher(functools.partial(_square, offset=1)) as p:
        assert [p.get(s) for s in (0, 1, 5, 2)] == [1, 2, 26, 5]


def test_workers_give_the_same_results_in_order_and_after_a_jump():
    with Prefetcher(functools.partial(_square, offset=1), workers=2, ahead=3) as p:
        assert [p.get(s) for s in range(6)] == [s * s + 1 for s in range(6)]
        assert p.get(40) == 1601  # a jump (e.g. resuming elsewhere) starts over there
        assert p.get(41) == 1682
        with pytest.raises(ValueError, match="bad step 13"):
            p.get(13)


def test_negative_workers_rejected():
    with pytest.raises(ValueError):
        Prefetcher(_square, workers=-1)
