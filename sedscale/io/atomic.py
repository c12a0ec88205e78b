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
from collections.abc import Callable
from pathlib import Path


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


def write_table(path: str | os.PathLike, table) -> dict:
    """Write a pyarrow table as a Parquet file (zstd) atomically; its manifest record.

    The bytes are made in memory, so the recorded sha256 is that of the file
    written (equal tables give equal files: partitions recomputed after a
    killed worker are identical).

    Returns
    -------
    dict
        ``file`` (the name), ``rows``, ``sha256`` and ``bytes``.
    """
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    atomic_write_bytes(path, data)
    return {"file": Path(path).name, "rows": table.num_rows, "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data)}


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now, not after the work, if ``path`` cannot be written (its folder is created on write).

    The nearest existing folder at or above ``path`` must be writable; an
    output file must not be an existing directory, and a work directory
    (``what="work directory"``) not an existing file.

    Raises
    ------
    ConfigError
        Naming the path and the folder that cannot be written.
    """
    from ..errors import ConfigError

    path = Path(path).absolute()
    is_dir = what == "work directory"
    if path.exists() and path.is_dir() != is_dir:
        kind = "a directory" if path.is_dir() else "a file"
        raise ConfigError(f"cannot write the {what} {path}: it is {kind}")
    folder = path if (is_dir and path.is_dir()) else path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the {what} {path}: {folder} is not a writable folder")
    return path
