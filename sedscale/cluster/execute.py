"""Running a run's tasks: in this process in order, or on a Dask cluster as they finish.

Every resumable run of sedscale (simulation partitions, catalog partitions,
spectral chunks, MCMC galaxies) records each finished task in its manifest
as soon as the result reaches the driver.  When an error or an interrupt
stops the run, the tasks still queued on the cluster are cancelled; what
finished is in the manifest, and ``--resume`` computes the rest.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["run_tasks"]


def run_tasks(tasks: Iterable[Any], client, record: Callable[[int, Any], None], window: int | None = None) -> None:
    """Compute Dask delayed ``tasks``; ``record(i, result)`` in the driver as each finishes.

    Parameters
    ----------
    tasks : iterable of dask.delayed.Delayed
        May be a generator: with ``window``, tasks are made and submitted only
        as earlier ones finish.
    client : distributed.Client or None
        None computes the tasks one after another here (synchronous
        scheduler), recording them in order.
    record : callable
        Called with the task's position in ``tasks`` and its result.
    window : int, optional
        At most this many tasks on the cluster at a time, or ``window`` per
        worker thread when the cluster has more threads.  The driver, where
        the scheduler of a local cluster also lives, then holds the state of
        a few tasks, not of every partition of a survey (10^5 for 10^9 rows).
        None submits everything at once.
    """
    if client is None:
        for i, task in enumerate(tasks):
            record(i, task.compute(scheduler="synchronous"))
        return
    from distributed import as_completed

    pending = iter(enumerate(tasks))
    position: dict = {}
    queue = as_completed()
    try:
        _submit(client, pending, position, queue, None if window is None else _window(client, window))
        for future in queue:
            i = position.pop(future.key)
            result = future.result()
            future.release()
            record(i, result)
            if window is not None:
                _submit(client, pending, position, queue, _window(client, window) - len(position))
    finally:
        # On error or interrupt, stop what is queued; finished tasks are recorded.
        client.cancel([f for f in queue.futures])


def _window(client, per_thread: int) -> int:
    """Tasks in flight for ``per_thread`` per worker thread (at least ``per_thread``; workers may join later)."""
    return per_thread * max(1, sum(client.nthreads().values()))


def _submit(client, pending: Iterator, position: dict, queue, n: int | None) -> None:
    """Submit the next ``n`` (None: all) tasks of ``pending`` and add their futures to ``queue``."""
    for i, task in itertools.islice(pending, n if n is None else max(0, n)):
        future = client.compute(task)
        position[future.key] = i
        queue.add(future)
