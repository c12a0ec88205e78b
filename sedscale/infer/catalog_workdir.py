"""The work directory of a catalog run: its manifest, verified partitions, resume and overwrite.

The manifest ``_manifest.json`` records the run identity (its hash) and every
finished partition with its sha256, written atomically as each lands; a run
may only continue (``resume``) a run of the same identity, and a finished run
is never recomputed.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import ConfigError
from ..io.atomic import atomic_write_bytes
from ..simulate.manifest import describe_differences, remove_temporary_files, verified_entries
from .catalog_plan import CatalogPlan

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = "sedscale.catalog_run"
MANIFEST_VERSION = 1


def read_run_manifest(work_dir: str | os.PathLike) -> dict | None:
    """The manifest of a catalog run's work directory, or None."""
    path = Path(work_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: corrupt manifest ({exc}); move the directory aside") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{path}: not a sedscale catalog-run manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ConfigError(f"{path}: manifest version {manifest.get('version')!r}, this sedscale reads {MANIFEST_VERSION}")
    return manifest


def write_run_manifest(work_dir: str | os.PathLike, manifest: dict) -> None:
    """Write the manifest atomically (partitions sorted by index)."""
    manifest = dict(manifest)
    manifest["partitions"] = {k: manifest["partitions"][k] for k in sorted(manifest["partitions"], key=int)}
    atomic_write_bytes(Path(work_dir) / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())


def check_work_dir(plan: CatalogPlan, resume: bool) -> tuple[dict | None, dict]:
    """Check that ``plan`` may use its work directory (read-only); see :func:`verify_work_dir`."""
    return verify_work_dir(plan.work_dir, plan.config_hash, plan.identity, plan.n_partitions, resume)


def verify_work_dir(work: Path, config_hash: str, identity: dict, n_partitions: int,
                    resume: bool) -> tuple[dict | None, dict]:
    """Check that a run (``config_hash``) may use the work directory ``work`` (read-only).

    Returns
    -------
    manifest : dict or None
        The existing manifest of this run (None for a new run).
    verified : dict
        Its partition entries whose files exist with the recorded sha256.

    Raises
    ------
    ConfigError
        The directory holds another run or foreign files, or an unfinished
        run of this configuration and ``resume`` is False.
    """
    if work.exists() and not work.is_dir():
        raise ConfigError(f"work directory {work} exists and is not a directory")
    manifest = read_run_manifest(work) if work.is_dir() else None
    if manifest is None:
        foreign = [p for p in work.iterdir() if not p.name.endswith(".tmp") and p.name != "x_support.npz"] \
            if work.is_dir() else []
        if foreign:
            raise ConfigError(f"work directory {work} is not empty and holds no {MANIFEST_NAME}; "
                              "choose another --out or --work-dir")
        return None, {}
    if manifest["config_hash"] != config_hash:
        raise ConfigError(
            f"work directory {work} holds a different run (config {manifest['config_hash'][:12]} != "
            f"{config_hash[:12]}: {describe_differences(manifest.get('identity', {}), identity)}); "
            "nothing was overwritten: choose another --out / --work-dir or rerun with the original options"
        )
    good = verified_entries(work, manifest["partitions"])
    if len(good) < n_partitions and not resume:
        raise ConfigError(
            f"work directory {work} holds an unfinished run of this configuration "
            f"({len(good)}/{n_partitions} partitions); pass --resume to continue it"
        )
    return manifest, good


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
    manifest, good = verify_work_dir(work, config_hash, identity, n_partitions, resume)
    if manifest is None:
        work.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "config_hash": config_hash,
            "identity": identity,
            "n_partitions": n_partitions,
            "partitions": {},
        }
    manifest["partitions"] = good
    write_run_manifest(work, manifest)
    remove_temporary_files(work)
    return manifest
