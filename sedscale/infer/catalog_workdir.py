"""The work directory of a catalog run: its manifest, verified partitions, resume and overwrite.

A resumable run of :mod:`sedscale.io.runs`: the manifest ``_manifest.json``
records the run identity (its hash) and every finished partition with its
sha256, written atomically as each lands; a run may only continue
(``resume``) a run of the same identity, and a finished run is never
recomputed.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io.runs import MANIFEST_NAME, open_run_dir, read_manifest, verify_run_dir, write_manifest
from .catalog_plan import CatalogPlan

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "check_work_dir", "clear_work_dir", "open_work_dir",
           "read_run_manifest", "verify_work_dir", "write_run_manifest"]

MANIFEST_FORMAT = "sedscale.catalog_run"
#: How the shared run engine words its errors for a catalog's work directory.
_WORDS: dict[str, Any] = {"what": "work directory", "elsewhere": "choose another --out / --work-dir",
          "own_file": lambda name: name == "x_support.npz"}


def read_run_manifest(work_dir: str | os.PathLike) -> dict | None:
    """The manifest of a catalog run's work directory, or None."""
    return read_manifest(work_dir, MANIFEST_FORMAT)


def write_run_manifest(work_dir: str | os.PathLike, manifest: dict) -> None:
    """Write the manifest atomically (partitions sorted by index)."""
    write_manifest(work_dir, manifest)


def check_work_dir(plan: CatalogPlan, resume: bool) -> None:
    """Check, read-only and without reading partitions, that ``plan`` may use its work directory.

    Called before a cluster starts, so that another run's directory or an
    unfinished run without ``resume`` is refused first; the run itself
    verifies the partitions' sha256 (:func:`open_work_dir`).

    Raises
    ------
    ConfigError
        As :func:`verify_work_dir`.
    """
    verify_run_dir(plan.work_dir, MANIFEST_FORMAT, plan.config_hash, plan.identity, plan.n_partitions, resume,
                   checksums=False, **_WORDS)


def verify_work_dir(work: Path, config_hash: str, identity: dict, n_partitions: int,
                    resume: bool) -> tuple[dict | None, dict]:
    """Check that a run (``config_hash``) may use the work directory ``work`` (read-only).

    See :func:`sedscale.io.runs.verify_run_dir`; a cached ``x_support.npz`` is
    allowed in a new run's directory.
    """
    return verify_run_dir(work, MANIFEST_FORMAT, config_hash, identity, n_partitions, resume, **_WORDS)


def clear_work_dir(work: str | os.PathLike) -> int:
    """Delete a catalog run's manifest and partitions (``--overwrite``); returns the files removed.

    Only a directory holding a catalog-run manifest, partition files,
    temporary files and a cached x-support is touched; the x-support (which
    a plan may already point to) is kept, and the directory is removed when
    nothing else is left.

    Raises
    ------
    ConfigError
        ``work`` holds anything else (nothing is deleted then).
    """
    work = Path(work)
    if not work.exists():
        return 0
    if not work.is_dir():
        raise ConfigError(f"work directory {work} exists and is not a directory; not removed")
    read_run_manifest(work)  # refuses a foreign manifest
    ours = re.compile(r"^(_manifest\.json|_metadata|part-\d{6}\.parquet|mcmc-(subset|fallback)-\d{9}\.parquet|"
                      r"x_support\.npz|\..*\.tmp)$")
    files = list(work.iterdir())
    foreign = [p.name for p in files if not (p.is_file() and ours.match(p.name))]
    if foreign:
        raise ConfigError(f"work directory {work} holds files that are not a catalog run's ({', '.join(foreign[:5])}); "
                          "not removed")
    removed = [p for p in files if p.name != "x_support.npz"]
    for path in removed:
        path.unlink()
    if len(removed) == len(files):
        work.rmdir()
    return len(removed)


def open_work_dir(work: Path, config_hash: str, identity: dict, n_partitions: int, resume: bool) -> dict:
    """Create or reopen a run's work directory; the manifest, holding only verified partitions.

    Raises
    ------
    ConfigError
        As :func:`verify_work_dir`.
    """
    return open_run_dir(work, MANIFEST_FORMAT, config_hash, identity, n_partitions, resume, **_WORDS)
