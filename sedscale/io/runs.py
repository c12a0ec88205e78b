"""Resumable partitioned runs: one directory, one ``_manifest.json``, atomic partition files.

Simulations (:mod:`sedscale.simulate.run`), catalog runs
(:mod:`sedscale.infer.catalog_workdir`) and spectral catalogs
(:mod:`sedscale.infer.spectra`) share this engine with
:func:`sedscale.io.atomic.write_table` (partition files) and
:func:`sedscale.cluster.execute.run_tasks` (tasks on a client, cancelled on
error)::

    directory/
      _manifest.json          # kind, run identity (hash), finished partitions with sha256
      part-000000.parquet     # one file per partition, written atomically
      ...

Only the driver writes the manifest, after each partition lands; workers
write partition files.  Every write goes to a uniquely named temporary file
in the same directory and is renamed into place, so a reader never sees a
half-written file and a crash leaves at most ``.*.tmp`` debris, removed by
the next run.  A partition counts as finished only when the manifest lists
it and its file's sha256 matches; a directory holding another run (another
identity hash) is never written to.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .atomic import atomic_write_bytes

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "ManifestWriter",
    "describe_differences",
    "file_sha256",
    "new_manifest",
    "open_run_dir",
    "partition_filename",
    "read_manifest",
    "remove_temporary_files",
    "verified_entries",
    "verify_run_dir",
    "write_manifest",
]

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1


def partition_filename(index: int) -> str:
    """File name of partition ``index``."""
    return f"part-{index:06d}.parquet"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_manifest(kind: str, config_hash: str, identity: dict, n_partitions: int, **extra: Any) -> dict[str, Any]:
    """An empty manifest of a run of ``kind`` (e.g. ``"sedscale.simulation"``); ``extra`` entries are stored too."""
    return {"format": kind, "version": MANIFEST_VERSION, "config_hash": config_hash, "identity": identity, **extra,
            "n_partitions": n_partitions, "partitions": {}}


def read_manifest(directory: str | os.PathLike, kind: str) -> dict[str, Any] | None:
    """The manifest of ``directory``, or None if there is none.

    Raises
    ------
    ConfigError
        The manifest is corrupt, of another kind of run, or of another version.
    """
    path = Path(directory) / MANIFEST_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: corrupt manifest ({exc}); move the directory aside") from None
    if not isinstance(manifest, dict) or manifest.get("format") != kind:
        raise ConfigError(f"{path}: not a {kind} manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ConfigError(f"{path}: manifest version {manifest.get('version')!r}, this sedscale reads {MANIFEST_VERSION}")
    return manifest


def write_manifest(directory: str | os.PathLike, manifest: dict) -> None:
    """Write the manifest atomically (partitions sorted by index)."""
    manifest = dict(manifest)
    manifest["partitions"] = {k: manifest["partitions"][k] for k in sorted(manifest["partitions"], key=int)}
    atomic_write_bytes(Path(directory) / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())


class ManifestWriter:
    """Rewrites a run's manifest as partitions are recorded, spending at most ~5% of the driver's time on it.

    A survey-scale run lists 10^5 partitions (a manifest of ~20 MB): rewritten
    after every partition, the driver would write O(n^2) bytes.  A write is
    skipped when the last one ended less than 20 of its own durations ago
    (at most ``max_interval`` seconds); :meth:`flush` writes unconditionally
    (at the end, and on an interrupt).  A partition recorded but not yet
    written when the driver is killed outright is recomputed on resume,
    identically.

    Parameters
    ----------
    directory : path
    manifest : dict
        The manifest, updated in place by the caller.
    max_interval : float
        Seconds between writes at most.
    """

    def __init__(self, directory: str | os.PathLike, manifest: dict, max_interval: float = 5.0):
        self.directory, self.manifest, self.max_interval = Path(directory), manifest, max_interval
        self._last_end = -float("inf")
        self._last_cost = 0.0
        self.writes = 0

    def __call__(self) -> None:
        """Write the manifest if it is due."""
        if time.perf_counter() - self._last_end >= min(self.max_interval, 20 * self._last_cost):
            self.flush()

    def flush(self) -> None:
        """Write the manifest now."""
        start = time.perf_counter()
        write_manifest(self.directory, self.manifest)
        self._last_end = time.perf_counter()
        self._last_cost = self._last_end - start
        self.writes += 1


def verified_entries(directory: str | os.PathLike, entries: dict[str, dict], checksums: bool = True) -> dict[str, dict]:
    """The manifest entries (``file``, ``sha256``, ...) whose file in ``directory`` exists with the recorded sha256.

    ``checksums=False`` checks that the file exists with the recorded size only (no read).
    """
    directory = Path(directory)
    good = {}
    for key, entry in entries.items():
        path = directory / entry["file"]
        if not path.is_file():
            continue
        if file_sha256(path) == entry["sha256"] if checksums else path.stat().st_size == entry.get("bytes", -1):
            good[key] = entry
    return good


def remove_temporary_files(directory: str | os.PathLike) -> list[Path]:
    """Delete ``.*.tmp`` debris of interrupted writes; return what was removed."""
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def describe_differences(old: dict, new: dict) -> str:
    """Human-readable list of the identity entries that differ, down to the nested key (``options.n_samples``)."""
    return "; ".join(_differences(old, new, "")) or "(no visible difference)"


def _differences(old, new, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys if old.get(k) != new.get(k) for d in _differences(old.get(k), new.get(k), f"{path}{k}.")]
    return [f"{path.rstrip('.')}: {_short(old)} -> {_short(new)}"]


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verify_run_dir(
    directory: str | os.PathLike,
    kind: str,
    config_hash: str,
    identity: dict,
    n_partitions: int,
    resume: bool,
    *,
    what: str = "output directory",
    elsewhere: str = "choose another --out",
    resume_flag: str = "--resume",
    own_file: Callable[[str], bool] = lambda name: False,
    checksums: bool = True,
) -> tuple[dict | None, dict]:
    """Check, read-only, that the run ``config_hash`` may use ``directory``.

    Parameters
    ----------
    directory : path
    kind : str
        Manifest format of the run's kind.
    config_hash, identity : str, dict
        The run's identity hash, and the identity itself (to say what differs
        from a run already there).
    n_partitions : int
    resume : bool
        Whether an unfinished run of the same identity may be continued.
    what, elsewhere, resume_flag : str
        Words of the error messages (``"work directory"``, ``"choose another --out or --work-dir"``).
    own_file : callable
        Names (besides ``.*.tmp`` debris) a new run accepts in a directory without manifest.
    checksums : bool
        Verify the finished partitions' sha256 (False: their sizes only; a quick
        check before a run, which verifies them when it opens the directory).

    Returns
    -------
    manifest : dict or None
        The existing manifest of this run (None for a new run).
    verified : dict
        Its partition entries whose files exist with the recorded sha256.

    Raises
    ------
    ConfigError
        The directory is a file, holds another run or foreign files, or an
        unfinished run of this identity and ``resume`` is False.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{what} {directory} exists and is not a directory")
    manifest = read_manifest(directory, kind) if directory.is_dir() else None
    if manifest is None:
        foreign = [p for p in directory.iterdir() if not p.name.endswith(".tmp") and not own_file(p.name)] \
            if directory.is_dir() else []
        if foreign:
            raise ConfigError(f"{what} {directory} is not empty and holds no {MANIFEST_NAME}; {elsewhere}")
        return None, {}
    if manifest["config_hash"] != config_hash:
        raise ConfigError(
            f"{what} {directory} holds a different run (config hash {manifest['config_hash'][:12]} != "
            f"{config_hash[:12]}: {describe_differences(manifest.get('identity', {}), identity)}); "
            f"nothing was overwritten: {elsewhere} or rerun with the original options"
        )
    good = verified_entries(directory, manifest["partitions"], checksums)
    if len(good) < n_partitions and not resume:
        raise ConfigError(
            f"{what} {directory} holds an unfinished run of this configuration "
            f"({len(good)}/{n_partitions} partitions); pass {resume_flag} to continue it"
        )
    return manifest, good


def open_run_dir(directory: str | os.PathLike, kind: str, config_hash: str, identity: dict, n_partitions: int,
                 resume: bool, extra: dict | None = None, **words: Any) -> dict:
    """Create or reopen a run's directory: its manifest, holding only verified partitions.

    ``extra`` entries go into a new manifest; ``words`` are those of
    :func:`verify_run_dir`, which raises as there.
    """
    directory = Path(directory)
    manifest, good = verify_run_dir(directory, kind, config_hash, identity, n_partitions, resume, **words)
    if manifest is None:
        directory.mkdir(parents=True, exist_ok=True)
        manifest = new_manifest(kind, config_hash, identity, n_partitions, **(extra or {}))
        write_manifest(directory, manifest)
    elif len(good) != len(manifest["partitions"]):
        manifest["partitions"] = good
        write_manifest(directory, manifest)
    # A finished run reopened is left byte for byte as it was.
    remove_temporary_files(directory)
    return manifest
