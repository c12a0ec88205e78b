"""Build Dask clusters and clients from a :class:`ClusterConfig`."""
from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator

from ..errors import ConfigError
from .config import ClusterConfig
from .plugins import WorkerTuning, thread_environment
from .slurm import check_job_request, wait_for_workers


def local_cluster_kwargs(config: ClusterConfig) -> dict:
    """Keyword arguments of :class:`distributed.LocalCluster` for ``config``."""
    kwargs = dict(
        n_workers=config.n_workers,
        threads_per_worker=config.threads_per_worker,
        processes=True,
        dashboard_address=config.dashboard_address,
        memory_limit=config.memory_limit,
        silence_logs=logging.ERROR,
        # Nanny environment: thread pools are sized before numpy/torch load.
        env=thread_environment(config.threads_per_worker),
    )
    if config.interface:
        kwargs["interface"] = config.interface
    if config.local_directory:
        kwargs["local_directory"] = config.local_directory
    return kwargs


def slurm_cluster_kwargs(config: ClusterConfig) -> dict:
    """Keyword arguments of :class:`dask_jobqueue.SLURMCluster` for ``config``.

    Adds to the user's ``job`` options: thread-limit exports;
    ``--lifetime``/``--lifetime-stagger`` worker arguments; the dashboard
    address and network interface.  Workers run this interpreter
    (``job.python``, default ``sys.executable``), in which sedscale is installed.
    """
    job = dict(config.job)
    prologue = [f"export {k}={v}" for k, v in thread_environment(config.threads_per_worker).items()]
    job["job_script_prologue"] = prologue + list(job.get("job_script_prologue", []))
    extra_args = list(job.get("worker_extra_args", []))
    if config.lifetime:
        extra_args += ["--lifetime", config.lifetime]
        if config.lifetime_stagger:
            extra_args += ["--lifetime-stagger", config.lifetime_stagger]
    job["worker_extra_args"] = extra_args
    job.setdefault("python", sys.executable)
    job["scheduler_options"] = {"dashboard_address": config.dashboard_address}
    if config.interface:
        job["interface"] = config.interface
    return job


def build_cluster(config: ClusterConfig):
    """Start the cluster described by ``config`` (not yet scaled, see :func:`scale_cluster`).

    Raises
    ------
    ConfigError
        When dask-jobqueue rejects an option of the configuration.
    """
    if config.kind == "local":
        from distributed import LocalCluster

        return LocalCluster(**local_cluster_kwargs(config))
    from dask_jobqueue import SLURMCluster

    try:
        return SLURMCluster(**slurm_cluster_kwargs(config))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config.source}: invalid SLURM cluster option: {exc}") from exc


def scale_cluster(cluster, config: ClusterConfig) -> None:
    """Request the configured number of SLURM jobs (LocalCluster: no-op).

    Workers that reach ``lifetime`` exit and their job ends; adaptive
    scaling submits replacement jobs, so a fixed size with a lifetime is
    expressed as ``adapt(minimum_jobs=jobs, maximum_jobs=jobs)``.
    """
    if config.kind == "local":
        return
    if config.adaptive:
        cluster.adapt(**config.adaptive)
    elif config.lifetime:
        cluster.adapt(minimum_jobs=config.jobs, maximum_jobs=config.jobs)
    else:
        cluster.scale(jobs=config.jobs)


@contextlib.contextmanager
def open_client(config: ClusterConfig, report: Callable[[str], None] | None = None) -> Iterator:
    """Cluster + connected :class:`distributed.Client`, closed on exit.

    Every worker (also those started later) limits its native thread pools
    to ``config.threads_per_worker`` and tunes malloc through :class:`WorkerTuning`.
    SLURM: the job request is checked against the partition before anything
    is submitted, and the client is yielded once the first worker is up
    (``report`` gets the jobs' states meanwhile); closing the cluster
    cancels the jobs it submitted, also on errors and interrupts.

    Raises
    ------
    ConfigError
        SLURM: a request the partition cannot run, or no worker within
        ``config.worker_timeout``.

    Yields
    ------
    distributed.Client
    """
    from distributed import Client

    if config.kind == "slurm":
        check_job_request(config.job)
    with warnings.catch_warnings():
        # A busy dashboard port moves to a free one; the CLI prints the URL actually used.
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = build_cluster(config)
    try:
        scale_cluster(cluster, config)
        client = Client(cluster)
        try:
            client.register_plugin(WorkerTuning(config.threads_per_worker))
            if config.kind == "slurm":
                wait_for_workers(client, lambda: [str(j.job_id) for j in list(cluster.workers.values())
                                                  if getattr(j, "job_id", None)],
                                 config.worker_timeout, report or (lambda line: None))
            yield client
        finally:
            with quiet_shutdown():
                client.close()
    finally:
        with quiet_shutdown():
            cluster.close()


@contextlib.contextmanager
def quiet_shutdown() -> Iterator[None]:
    """Silence logs up to ERROR while a client or cluster closes (Dask's loggers have levels of their own).

    Closing after an error or a Ctrl-C, or on a loaded machine, makes Dask
    log closed connections and cancelled tasks (``CommClosedError``,
    ``CancelledError`` tracebacks) that bury the run's own one-line message;
    nothing in them is actionable once the run is over.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)
