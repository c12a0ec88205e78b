"""Command-line front ends (thin wrappers over the Python API).

Every ``main(argv)`` returns an exit status; :func:`run_guarded` turns
sedscale errors into one-line messages instead of tracebacks.
"""
from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Callable, Iterator, Sequence

from ..errors import SedscaleError

#: Exit status for bad input or configuration.
EXIT_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: The names tools run under while ``sedscale <command>`` dispatches them (empty: each its ``bin/`` name).
_DISPATCHED_AS: list[str] = []


def prog_name(default: str) -> str:
    """The program name for usage lines and error messages: ``sedscale <command>`` when dispatched so, else ``default``."""
    return _DISPATCHED_AS[-1] if _DISPATCHED_AS else default


@contextlib.contextmanager
def dispatched_as(name: str) -> Iterator[None]:
    """Within the block, tools name themselves ``name`` (:func:`prog_name`)."""
    _DISPATCHED_AS.append(name)
    try:
        yield
    finally:
        _DISPATCHED_AS.pop()


def run_guarded(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Call ``main(argv)``, reporting sedscale errors, a full disk and Ctrl-C in one line."""
    prog = prog_name(prog)
    try:
        return main(argv)
    except SedscaleError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read our output stopped reading (``| head``): nothing to report.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        # Writes are atomic, so a full disk leaves no truncated file behind: free space and go on.
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"{prog}: error: no space left on the device{where}; free space and rerun "
              "(with --resume where the command has it: finished work is kept)", file=sys.stderr)
        return EXIT_ERROR


def add_cluster_options(parser, in_process: bool = True) -> None:
    """``--cluster``, ``--n-workers``, ``--jobs`` and ``--worker-timeout``, the same for every command that runs on a
    cluster (:func:`cluster_from_args` reads them); ``in_process``: ``--cluster none`` runs in this process."""
    none = "; 'none' runs in this process" if in_process else ""
    parser.add_argument("--cluster", default="local",
                        help=f"cluster config: 'local', 'slurm' (templates shipped in sedscale/data/cluster/) or a YAML "
                             f"path (default: local){none}")
    parser.add_argument("--n-workers", type=int, help="local cluster: worker processes (overrides the YAML)")
    parser.add_argument("--jobs", type=int, help="SLURM cluster: number of jobs (overrides the YAML)")
    parser.add_argument("--worker-timeout", type=float, metavar="S",
                        help="SLURM cluster: seconds to wait for the first worker (default: the YAML's, 600)")


def cluster_from_args(args):
    """The cluster configuration ``--cluster`` names, with ``--n-workers/--jobs/--worker-timeout`` applied."""
    from ..cluster import load_cluster_config

    return load_cluster_config(args.cluster).with_workers(args.n_workers, args.jobs, args.worker_timeout)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_resumable(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """:func:`run_guarded` for resumable runs: SIGTERM (``scancel``, ``kill``) stops them as Ctrl-C does.

    The run then cancels its queued partitions, shuts its cluster down and
    says to rerun with ``--resume`` (its manifest is always consistent).
    """
    import signal

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run_guarded(main, argv, prog)
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_resumable(prog: str) -> int:
    """Report a Ctrl-C / SIGTERM of a resumable run; returns the exit status."""
    print(f"{prog}: interrupted; finished partitions are kept: rerun with --resume", file=sys.stderr)
    return EXIT_INTERRUPTED


@contextlib.contextmanager
def announced_client(cluster_config, prog: str) -> Iterator:
    """Open a Dask client for ``cluster_config``, printing the cluster and its dashboard URL."""
    from ..cluster import open_client

    print(f"{prog}: {cluster_config.describe()} ({cluster_config.source})", flush=True)
    with open_client(cluster_config, report=lambda line: print(f"{prog}: {line}", flush=True)) as client:
        print(f"{prog}: dashboard {client.dashboard_link}", flush=True)
        yield client
