"""The output directory of a simulation: atomic files and ``_manifest.json``.

Layout::

    out/
      _manifest.json          # run identity + finished partitions
      part-000000.parquet     # one file per partition
      part-000001.parquet
      ...

Only the driver (the process calling :func:`sedscale.simulate.run_simulation`)
writes the manifest; workers write partition files.  Every write goes to a
uniquely named temporary file in the same directory and is renamed into
place, so a reader never sees a half-written file and a crash leaves at
most ``.*.tmp`` debris, which the run removes when it finishes (and the
next run, if it did not).  A partition counts as
finished only when the manifest lists it and its file's sha256 matches.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io.atomic import atomic_write_bytes

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = "sedscale.simulation"
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


def new_manifest(config_hash: str, identity: dict, options: dict, n_partitions: int) -> dict[str, Any]:
    """An empty manifest for a run."""
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "config_hash": config_hash,
        "identity": identity,
        "options": options,
        "n_partitions": n_partitions,
        "partitions": {},
    }


def read_manifest(out: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of ``out``, or None if there is none.

    Raises
    ------
    ConfigError
        The manifest exists but is not a sedscale simulation manifest.
    """
    path = Path(out) / MANIFEST_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: corrupt manifest ({exc}); move the directory aside") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{path}: not a sedscale simulation manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ConfigError(
            f"{path}: manifest version {manifest.get('version')!r}, this sedscale reads {MANIFEST_VERSION}"
        )
    return manifest


def write_manifest(out: str | os.PathLike, manifest: dict) -> None:
    """Write the manifest atomically (partitions sorted by index)."""
    manifest = dict(manifest)
    manifest["partitions"] = {k: manifest["partitions"][k] for k in sorted(manifest["partitions"], key=int)}
    text = json.dumps(manifest, indent=1, sort_keys=False) + "\n"
    atomic_write_bytes(Path(out) / MANIFEST_NAME, text.encode())


def verified_entries(directory: str | os.PathLike, entries: dict[str, dict]) -> dict[str, dict]:
    """The manifest entries (``file``, ``sha256``, ...) whose file in ``directory`` exists with the recorded sha256."""
    directory = Path(directory)
    good = {}
    for key, entry in entries.items():
        path = directory / entry["file"]
        if path.is_file() and file_sha256(path) == entry["sha256"]:
            good[key] = entry
    return good


def remove_temporary_files(out: str | os.PathLike) -> list[Path]:
    """Delete ``.*.tmp`` debris of interrupted writes; return what was removed."""
    removed = []
    for path in Path(out).glob(".*.tmp"):
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


def prepare_output(out: str | os.PathLike, config_hash: str, identity: dict) -> dict | None:
    """Check that ``out`` may receive the run ``config_hash``.

    Parameters
    ----------
    out : str or PathLike
    config_hash : str
    identity : dict
        The run's identity (see :func:`sedscale.simulate.config.identity`),
        used to say what differs from a run already there.

    Read-only: nothing is created or written.

    Returns
    -------
    dict or None
        The existing manifest of the same run, or None for a new run.

    Raises
    ------
    ConfigError
        ``out`` is a file, a non-empty directory that is not a simulation
        output, or holds a different run (its config hash differs).
        Nothing is written in these cases.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a directory")
    manifest = read_manifest(out) if out.is_dir() else None
    if manifest is None:
        if out.is_dir() and any(p for p in out.iterdir() if not p.name.endswith(".tmp")):
            raise ConfigError(f"output directory {out} is not empty and holds no {MANIFEST_NAME}; choose another --out")
        return None
    if manifest["config_hash"] != config_hash:
        raise ConfigError(
            f"output directory {out} holds a different run (config hash {manifest['config_hash'][:12]} != "
            f"{config_hash[:12]}: {describe_differences(manifest.get('identity', {}), identity)}); "
            "nothing was overwritten: choose another --out or rerun with the original options"
        )
    return manifest

