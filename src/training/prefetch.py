"""Training examples made ahead of time by worker processes.

A training step spends part of its time making its example (simulating a map, and for
CNN-node examples running the CNN): on 2 CPU cores about a fifth of a GNN step, on a GPU
most of it. :class:`Prefetcher` hands that work to ``workers`` processes that make the
examples of the next steps while the current one trains.

Each example is a pure function of its step number (``make(step)``: the trainers seed
an example's random generator with ``(seed, step)``), so where it is made does not
change it: a run gives the same examples with 0, 1 or 8 workers (up to float rounding
where a network makes part of the example with another thread count: CNN-node positions
differ by ~4e-6 A), and a resumed run needs no generator state to continue the stream.

Measured on 2 CPU cores (GNN, 80 steps from the same checkpoint): 161 s in-process, 191 s
with 1 worker (2 torch threads) and 205 s with 1 worker and 1 torch thread: the worker
competes with the training threads for the same cores. Workers pay off only where cores
are spare, such as beside a GPU.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable
from typing import Any


class Prefetcher:
    """``get(step)`` returns ``make(step)``; with ``workers > 0`` the next ``ahead`` steps
    are made in ``workers`` spawned processes meanwhile.

    ``make`` must be picklable (a module-level function or a ``functools.partial`` of
    one); ``initializer(*initargs)`` runs once in each worker (e.g. to load a network).
    With ``workers == 0`` everything runs in the calling process (``initializer`` is
    then the caller's business). An error while making an example is raised by ``get``.
    """

    def __init__(self, make: Callable[[int], Any], workers: int = 0, *, ahead: int | None = None,
                 initializer: Callable | None = None, initargs: tuple = ()):
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.make = make
        self.ahead = ahead if ahead is not None else 2 * workers
        self._pool: cf.ProcessPoolExecutor | None = None
        self._pending: dict[int, cf.Future] = {}
        if workers > 0:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=initializer, initargs=initargs)

    def get(self, step: int) -> Any:
        if self._pool is None:
            return self.make(step)
        if step not in self._pending:  # first call, or a jump: start over from ``step``
            self._cancel()
        for s in range(step, step + max(self.ahead, 1) + 1):
            if s not in self._pending:
                self._pending[s] = self._pool.submit(self.make, s)
        return self._pending.pop(step).result()

    def _cancel(self) -> None:
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()

    def close(self) -> None:
        """Stop the workers (examples made ahead are dropped)."""
        self._cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
