"""Atomic file writes: a reader never sees a half-written file.

Every output of sedscale (Parquet partitions, manifests, checkpoints, noise
models, catalogs, plots) is written to a temporary file in the destination
folder and renamed over the target, so a killed worker or job leaves either
the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file to ``path``.

    The file is fsynced before the rename and made world-readable (mkstemp
    creates 0600).  On error the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
