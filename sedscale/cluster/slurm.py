"""What the SLURM cluster can give and is doing: checks before submitting, job states while waiting.

A job request the partition cannot satisfy (more CPUs or memory than a
node has, a walltime above the partition's limit) stays queued forever with
reason ``PartitionConfig`` or ``ReqNodeNotAvail``; :func:`check_job_request`
refuses it before anything is submitted, naming the mismatch.  While the run
waits for its first workers, :func:`wait_for_workers` reports the jobs'
states and SLURM's reasons (``squeue``) and gives up after the configured
``worker_timeout`` with that reason; the jobs are then cancelled with the
cluster.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["PartitionLimits", "check_job_request", "job_states", "partition_limits", "wait_for_workers"]

#: Seconds between two squeue polls while waiting for workers.
POLL_S = 5.0


@dataclass(frozen=True)
class PartitionLimits:
    """What one node of a SLURM partition offers.

    Attributes
    ----------
    name : str
    cpus : int
        CPUs per node (the largest node of the partition).
    memory_mb : int
        Memory per node, MiB.
    time_limit_s : float
        The partition's time limit (inf: none).
    available : bool
        Partition state ``up``.
    """

    name: str
    cpus: int
    memory_mb: int
    time_limit_s: float
    available: bool


def _run(cmd: Sequence[str]) -> str:
    if shutil.which(cmd[0]) is None:
        raise ConfigError(f"{cmd[0]} not found: is this a SLURM submit host? (use --cluster local otherwise)")
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{' '.join(cmd)} did not answer within 30 s: is slurmctld running?") from None
    if proc.returncode:
        raise ConfigError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip().splitlines()[:1]}")
    return proc.stdout


def slurm_seconds(text: str | None) -> float:
    """Seconds of a SLURM time ("infinite", "UNLIMITED", "MM", "MM:SS", "HH:MM:SS", "D-HH[:MM[:SS]]")."""
    if text is None:
        return float("inf")
    text = str(text).strip()
    if text.lower() in ("infinite", "unlimited", ""):
        return float("inf")
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    if days:
        h, m, s = (parts + [0, 0, 0])[:3]
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[:3]
    return (float(days or 0) * 24 + h) * 3600 + m * 60 + s


def memory_mb(text: str) -> float:
    """MiB of a dask-jobqueue memory string ("60GB", "3 GiB", "500MB")."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([kKmMgGtT]?)i?[bB]?\s*", str(text))
    if not m:
        raise ConfigError(f"cannot read the memory request {text!r} (e.g. '60GB')")
    scale = {"": 1 / 2**20, "k": 1 / 2**10, "m": 1, "g": 2**10, "t": 2**20}[m.group(2).lower()]
    return float(m.group(1)) * scale


def partition_limits(queue: str | None = None) -> PartitionLimits:
    """Limits of partition ``queue`` (None: the default partition), from ``sinfo``.

    Raises
    ------
    ConfigError
        No SLURM here, or no such partition.
    """
    rows = [line.split("|") for line in _run(["sinfo", "-h", "-o", "%P|%c|%m|%l|%a"]).splitlines() if line.strip()]
    by_name: dict[str, list] = {}
    default: str | None = None
    for name, cpus, mem, limit, avail in rows:
        if name.endswith("*"):
            name = name[:-1]
            default = name
        by_name.setdefault(name, []).append((cpus, mem, limit, avail))
    chosen = queue or default
    if chosen is None or chosen not in by_name:
        raise ConfigError(f"SLURM partition {chosen!r} does not exist here; partitions: {', '.join(sorted(by_name))}")
    nodes = by_name[chosen]
    return PartitionLimits(
        name=chosen,
        cpus=max(int(re.sub(r"\D", "", c) or 0) for c, _, _, _ in nodes),
        memory_mb=max(int(re.sub(r"\D", "", m) or 0) for _, m, _, _ in nodes),
        time_limit_s=max(slurm_seconds(t) for _, _, t, _ in nodes),
        available=any(a == "up" for _, _, _, a in nodes),
    )


def check_job_request(job: dict, limits: PartitionLimits | None = None) -> PartitionLimits:
    """Refuse a job request the partition cannot run (it would pend forever).

    Parameters
    ----------
    job : dict
        The cluster configuration's ``job`` mapping (queue, cores, memory, walltime).
    limits : PartitionLimits, optional
        Default: read with :func:`partition_limits`.

    Raises
    ------
    ConfigError
        One line naming each mismatch (CPUs, memory, walltime, partition down).
    """
    limits = limits or partition_limits(job.get("queue"))
    problems = []
    if not limits.available:
        problems.append(f"partition {limits.name} is not up")
    if int(job.get("cores", 1)) > limits.cpus:
        problems.append(f"job.cores {job['cores']} > {limits.cpus} CPUs per node")
    if memory_mb(job.get("memory", "0MB")) > limits.memory_mb:
        problems.append(f"job.memory {job['memory']} > {limits.memory_mb} MiB per node")
    if slurm_seconds(job.get("walltime")) > limits.time_limit_s:
        problems.append(f"job.walltime {job['walltime']} > the partition's time limit")
    if problems:
        raise ConfigError(f"SLURM partition {limits.name} cannot run the job request: {'; '.join(problems)} "
                          "(the jobs would stay queued); edit the cluster YAML")
    return limits


def job_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``squeue`` state and reason of each job id (jobs that left the queue are absent)."""
    ids = [str(j) for j in job_ids if j]
    if not ids:
        return {}
    out = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r"])
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def describe_states(states: dict[str, tuple[str, str]]) -> str:
    """'2 PENDING (Resources), 1 RUNNING' from :func:`job_states`."""
    counts: dict[str, int] = {}
    for state, reason in states.values():
        key = f"{state} ({reason})" if state == "PENDING" and reason not in ("None", "") else state
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no job in the queue"


def wait_for_workers(client, job_ids: Callable[[], Sequence[str]], timeout: float,
                     report: Callable[[str], None]) -> None:
    """Block until the first worker connects, reporting the SLURM jobs' states.

    Parameters
    ----------
    client : distributed.Client
    job_ids : callable
        Returns the ids of the jobs submitted so far (they appear asynchronously).
    timeout : float
        Seconds to wait.
    report : callable
        Gets one line per change of the jobs' states.

    Raises
    ------
    ConfigError
        No worker after ``timeout`` seconds, naming the jobs' states and reasons.
    """
    start = time.monotonic()
    last = None
    while True:
        if client.scheduler_info().get("workers"):
            return
        states = job_states(job_ids())
        line = describe_states(states)
        if line != last:
            report(f"waiting for SLURM workers ({time.monotonic() - start:.0f} s): {line}")
            last = line
        if time.monotonic() - start > timeout:
            raise ConfigError(f"no Dask worker after {timeout:g} s: SLURM jobs {line}; the jobs are cancelled "
                              "(raise worker_timeout / --worker-timeout, or fix the request)")
        time.sleep(POLL_S)
