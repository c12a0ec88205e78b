"""One run at a time per output directory: a lock file beside it.

Two runs writing the same partitioned output would both compute everything
(each sees the other's partitions as unfinished) and race on the manifest.
:func:`exclusive_run` creates ``<dir>.lock`` atomically (``O_EXCL``) with the
holder's pid, host and start time, and removes it when the run ends.  A lock
left by a process that no longer exists on this host is taken over; one held
by a live process, or by another host (which cannot be checked), is refused
with a one-line error saying who holds it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError

__all__ = ["exclusive_run", "lock_path"]


def lock_path(directory: str | os.PathLike) -> Path:
    """The lock file of ``directory``: ``<directory>.lock`` beside it (not inside: it is not output)."""
    directory = Path(directory)
    return directory.with_name(directory.name + ".lock")


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _holder(lock: Path) -> dict:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def exclusive_run(directory: str | os.PathLike, what: str = "output directory") -> Iterator[Path]:
    """Hold ``<directory>.lock`` for the duration of a run.

    Nested holds by one process are allowed; the outermost releases the lock.

    Raises
    ------
    ConfigError
        Another live run (or one on another host) holds the lock.
    """
    lock = lock_path(directory)
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                # Held by this process already (the CLI locks before starting a cluster, then runs):
                # the outer hold releases it.
                yield lock
                return
            if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
                # Left by a run that was killed (SIGKILL): nothing holds it any more.
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            raise ConfigError(
                f"{what} {directory} is in use by another run (pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} since {holder.get('since', '?')}); wait for it to finish, or delete "
                f"{lock} if that run no longer exists"
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise ConfigError(f"could not take the lock {lock} of {what} {directory}")
    try:
        yield lock
    finally:
        if _holder(lock).get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
