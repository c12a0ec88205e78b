"""Cluster configuration files (YAML) -> validated :class:`ClusterConfig`.

Users describe where the Dask workers run in a YAML file and never edit
code.  Two kinds are supported:

``type: local``
    A :class:`distributed.LocalCluster` of worker processes on this machine.
``type: slurm``
    A :class:`dask_jobqueue.SLURMCluster`: every SLURM job runs
    ``job.processes`` worker processes.  ``lifetime`` retires workers before
    the job walltime kills them; the cluster is then kept at its size by
    adaptive scaling, which submits replacement jobs (walltime rotation).

The documented templates ``local.yaml`` and ``slurm.yaml`` ship inside the
package (``sedscale/data/cluster/``; ``cluster_configs/`` in a source
checkout points there); :func:`load_cluster_config` accepts a path or a
name, looked up in ``$SEDSCALE_CLUSTER_CONFIG_DIR`` first, so a site can keep
its own ``slurm.yaml`` without editing the installed package.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

#: Environment variable naming a folder of named cluster configs.
CONFIG_DIR_ENV = "SEDSCALE_CLUSTER_CONFIG_DIR"
#: The shipped templates (package data).
PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "data" / "cluster"

_COMMON_KEYS = {"type", "dashboard_address", "interface"}
_LOCAL_KEYS = _COMMON_KEYS | {"threads_per_worker", "n_workers", "memory_limit", "local_directory"}
#: Seconds a SLURM run waits for its first worker (``worker_timeout``) unless configured.
DEFAULT_WORKER_TIMEOUT = 600.0
_SLURM_KEYS = _COMMON_KEYS | {"job", "jobs", "adaptive", "lifetime", "lifetime_stagger", "worker_timeout"}
#: Keys of the ``job:`` mapping, passed to ``dask_jobqueue.SLURMCluster``.
SLURM_JOB_KEYS = {
    "queue",
    "account",
    "cores",
    "processes",
    "memory",
    "walltime",
    "job_extra_directives",
    "job_script_prologue",
    "job_directives_skip",
    "worker_extra_args",
    "local_directory",
    "log_directory",
    "python",
    "job_name",
    "death_timeout",
}
_ADAPTIVE_KEYS = {"minimum_jobs", "maximum_jobs"}


@dataclass(frozen=True)
class ClusterConfig:
    """A validated cluster description.

    Attributes
    ----------
    kind : {"local", "slurm"}
    threads_per_worker : int
        Threads per worker process; also the OMP/MKL/OpenBLAS/torch thread
        count set in every worker.  SLURM: ``job.cores // job.processes``.
    dashboard_address : str or None
        Where the scheduler serves the Dask dashboard (``":8787"``, ``":0"``
        for a free port, None for none).
    interface : str or None
        Network interface of scheduler and workers (e.g. ``"ib0"``).
    n_workers : int
        Local: number of worker processes.
    memory_limit : str
        Local: memory per worker ("auto", "4GiB", ...).
    local_directory : str or None
        Local: scratch/spill directory of the workers.
    job : dict
        SLURM: keyword arguments of ``SLURMCluster`` (queue, account, cores,
        processes, memory, walltime, job_extra_directives, ...).
    jobs : int
        SLURM: number of jobs to keep running (fixed size).
    adaptive : dict or None
        SLURM: ``{"minimum_jobs": a, "maximum_jobs": b}`` for adaptive scaling.
    lifetime, lifetime_stagger : str or None
        SLURM: worker ``--lifetime`` / ``--lifetime-stagger`` (e.g. "110m").
    worker_timeout : float
        SLURM: seconds to wait for the first worker before giving up with
        the jobs' SLURM states and reasons (the jobs are then cancelled).
    source : str
        Where the configuration came from (for error messages).
    """

    kind: str
    threads_per_worker: int = 1
    dashboard_address: str | None = ":8787"
    interface: str | None = None
    n_workers: int = 2
    memory_limit: str = "auto"
    local_directory: str | None = None
    job: dict = field(default_factory=dict)
    jobs: int = 1
    adaptive: dict | None = None
    lifetime: str | None = None
    lifetime_stagger: str | None = None
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT
    source: str = "<dict>"

    def with_workers(self, n_workers: int | None = None, jobs: int | None = None,
                     worker_timeout: float | None = None) -> ClusterConfig:
        """Copy with the worker count (local), job count or worker timeout (SLURM) overridden.

        A job count given here fixes the cluster size: it replaces ``adaptive``.
        """
        changes: dict[str, Any] = {}
        if worker_timeout is not None:
            changes["worker_timeout"] = _positive_seconds(worker_timeout, "worker_timeout", self.source)
        if n_workers is not None:
            changes["n_workers"] = _local_workers(n_workers, self.source)
        if jobs is not None:
            changes["jobs"] = _positive_int(jobs, "jobs", self.source)
            changes["adaptive"] = None
        return replace(self, **changes)

    @property
    def workers_per_job(self) -> int:
        """Dask worker processes per SLURM job."""
        return int(self.job.get("processes", 1))

    def describe(self) -> str:
        """One line saying what cluster this builds (for logs)."""
        if self.kind == "local":
            return f"LocalCluster: {self.n_workers} workers x {self.threads_per_worker} threads"
        size = (
            f"adaptive {self.adaptive['minimum_jobs']}-{self.adaptive['maximum_jobs']} jobs"
            if self.adaptive
            else f"{self.jobs} jobs"
        )
        return f"SLURMCluster: {size} x {self.workers_per_job} workers x {self.threads_per_worker} threads"


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """Find a cluster config: an existing file, or a name such as ``"local"``.

    Names are looked up as ``<name>.yaml`` in ``$SEDSCALE_CLUSTER_CONFIG_DIR``
    and then among the templates shipped with the package.

    Raises
    ------
    ConfigError
        If nothing matches.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path)
    dirs = [Path(os.environ[CONFIG_DIR_ENV])] if os.environ.get(CONFIG_DIR_ENV) else []
    dirs.append(PACKAGE_CONFIG_DIR)
    if os.sep not in name and not name.endswith((".yaml", ".yml")):
        for d in dirs:
            candidate = d / f"{name}.yaml"
            if candidate.is_file():
                return candidate
    raise ConfigError(
        f"cluster config {name!r} not found: give a YAML file path or one of the names "
        f"{_available_names(dirs)} (searched {', '.join(str(d) for d in dirs)})"
    )


def _available_names(dirs) -> list[str]:
    return sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})


def load_cluster_config(name_or_path: str | os.PathLike) -> ClusterConfig:
    """Read and validate a cluster YAML file (see module docstring).

    Raises
    ------
    ConfigError
        Missing file, YAML syntax error, unknown keys or invalid values.
    """
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return cluster_config_from_dict(data, source=str(path))


def cluster_config_from_dict(data: Any, source: str = "<dict>") -> ClusterConfig:
    """Validate a parsed cluster configuration mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a cluster config must be a YAML mapping, got {type(data).__name__}")
    kind = data.get("type")
    if kind not in ("local", "slurm"):
        raise ConfigError(f"{source}: 'type' must be 'local' or 'slurm', got {kind!r}")
    _check_keys(data, _LOCAL_KEYS if kind == "local" else _SLURM_KEYS, source)
    common = dict(
        kind=kind,
        dashboard_address=_optional_str(data.get("dashboard_address", ":8787"), "dashboard_address", source),
        interface=_optional_str(data.get("interface"), "interface", source),
        source=source,
    )
    if kind == "local":
        return ClusterConfig(
            **common,
            threads_per_worker=_positive_int(data.get("threads_per_worker", 1), "threads_per_worker", source),
            n_workers=_local_workers(data.get("n_workers", 2), source),
            memory_limit=str(data.get("memory_limit", "auto")),
            local_directory=_optional_str(data.get("local_directory"), "local_directory", source),
        )
    job = data.get("job") or {}
    if not isinstance(job, dict):
        raise ConfigError(f"{source}: 'job' must be a mapping of SLURMCluster options")
    job = dict(job)
    _check_keys(job, SLURM_JOB_KEYS, f"{source}: job")
    for key in ("cores", "processes"):
        if key in job:
            job[key] = _positive_int(job[key], f"job.{key}", source)
    for key in ("cores", "memory", "walltime"):
        if job.get(key) in (None, ""):
            raise ConfigError(f"{source}: 'job.{key}' is required for a SLURM cluster")
    processes = job.setdefault("processes", 1)
    if job["cores"] % processes:
        raise ConfigError(
            f"{source}: job.cores ({job['cores']}) must be a multiple of job.processes ({processes}): "
            "each worker process gets cores / processes threads"
        )
    for key in ("job_extra_directives", "job_script_prologue", "job_directives_skip", "worker_extra_args"):
        if key in job and not _is_str_list(job[key]):
            raise ConfigError(f"{source}: 'job.{key}' must be a list of strings")
    adaptive = data.get("adaptive")
    if adaptive is not None:
        if not isinstance(adaptive, dict):
            raise ConfigError(f"{source}: 'adaptive' must be a mapping with minimum_jobs and maximum_jobs")
        _check_keys(adaptive, _ADAPTIVE_KEYS, f"{source}: adaptive")
        lo = _nonnegative_int(adaptive.get("minimum_jobs", 0), "adaptive.minimum_jobs", source)
        hi = _positive_int(adaptive.get("maximum_jobs", 1), "adaptive.maximum_jobs", source)
        if lo > hi:
            raise ConfigError(f"{source}: adaptive.minimum_jobs ({lo}) > adaptive.maximum_jobs ({hi})")
        adaptive = {"minimum_jobs": lo, "maximum_jobs": hi}
    return ClusterConfig(
        **common,
        threads_per_worker=job["cores"] // processes,
        job=job,
        jobs=_positive_int(data.get("jobs", 1), "jobs", source),
        adaptive=adaptive,
        lifetime=_optional_str(data.get("lifetime"), "lifetime", source),
        lifetime_stagger=_optional_str(data.get("lifetime_stagger"), "lifetime_stagger", source),
        worker_timeout=_positive_seconds(data.get("worker_timeout", DEFAULT_WORKER_TIMEOUT), "worker_timeout", source),
    )


def _positive_seconds(value, name: str, source: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0:
        raise ConfigError(f"{source}: '{name}' must be a positive number of seconds, got {value!r}")
    return seconds


def _check_keys(data: dict, allowed: set, source: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _positive_int(value, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{source}: '{name}' must be a positive integer, got {value!r}")
    return value


#: Local worker processes per CPU core beyond which a LocalCluster is refused: each worker holds a
#: process, sockets and a copy of the flow and model, and 10,000 of them ran out of file descriptors.
MAX_LOCAL_WORKERS_PER_CORE = 8


def _local_workers(value, source: str) -> int:
    """A local worker count: a positive integer, at most :data:`MAX_LOCAL_WORKERS_PER_CORE` per core."""
    import os

    n = _positive_int(value, "n_workers", source)
    cores = os.cpu_count() or 1
    if n > MAX_LOCAL_WORKERS_PER_CORE * cores:
        raise ConfigError(f"{source}: {n} local workers on a {cores}-core machine; at most "
                          f"{MAX_LOCAL_WORKERS_PER_CORE * cores} ({MAX_LOCAL_WORKERS_PER_CORE} per core): "
                          "use a SLURM cluster for more")
    return n


def _nonnegative_int(value, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{source}: '{name}' must be a non-negative integer, got {value!r}")
    return value


def _optional_str(value, name: str, source: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigError(f"{source}: '{name}' must be a string, got {value!r}")
    return str(value)


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
