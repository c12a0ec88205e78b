"""Running a run's tasks: in this process in order, or on a Dask cluster as they finish.

Every resumable run of sedscale (simulation partitions, catalog partitions,
spectral chunks, MCMC galaxies) records each finished task in its manifest
as soon as the result reaches the driver.  When an error or an interrupt
stops the run, the tasks still queued on the cluster are cancelled; what
finished is in the manifest, and ``--resume`` computes the rest.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_tasks"]


def run_tasks(tasks: Sequence[Any], client, record: Callable[[int, Any], None]) -> None:
    """Compute Dask delayed ``tasks``; ``record(i, result)`` in the driver as each finishes.

    Parameters
    ----------
    tasks : sequence of dask.delayed.Delayed
    client : distributed.Client or None
        None computes the tasks one after another here (synchronous
        scheduler), recording them in order.
    record : callable
        Called with the task's position in ``tasks`` and its result.
    """
    if client is None:
        for i, task in enumerate(tasks):
            record(i, task.compute(scheduler="synchronous"))
        return
    from distributed import as_completed

    futures = client.compute(list(tasks))
    position = {future.key: i for i, future in enumerate(futures)}
    try:
        for future in as_completed(futures):
            record(position[future.key], future.result())
    finally:
        # On error or interrupt, stop what is queued; finished tasks are recorded.
        client.cancel(futures)
