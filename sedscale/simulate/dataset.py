"""Reading a finished simulation output (for training and diagnostics)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, MissingDataError
from ..io.runs import MANIFEST_NAME
from .manifest import read_manifest
from .run import META_PREFIX

#: The entries of a simulation manifest's partitions that readers rely on, and their types.
PARTITION_ENTRY_FIELDS = {"file": str, "rows": int, "bytes": int, "sha256": str}


def finished_manifest(out: str | os.PathLike, require_complete: bool = True) -> dict:
    """The manifest of the simulation in ``out``, checked for what readers rely on.

    Raises
    ------
    MissingDataError
        No such directory, no manifest, or (``require_complete``) an unfinished run.
    ConfigError
        A manifest that is not JSON, not a simulation's, or without a config
        hash, a partition count or well-formed partition entries
        (:data:`PARTITION_ENTRY_FIELDS`).
    """
    out = Path(out)
    if not out.is_dir():
        raise MissingDataError(f"{out}: no such directory; pass the --out directory of bin/run_simulate")
    manifest = read_manifest(out)
    if manifest is None:
        raise MissingDataError(f"{out} holds no simulation (no {MANIFEST_NAME}); pass the --out directory of "
                               "bin/run_simulate")
    if not _well_formed(manifest):
        raise ConfigError(
            f"{out / MANIFEST_NAME}: malformed manifest (it needs config_hash, n_partitions and partition entries "
            f"with {', '.join(PARTITION_ENTRY_FIELDS)}); rerun bin/run_simulate with the options that made it into "
            "a new --out"
        )
    parts, n_partitions = manifest["partitions"], manifest["n_partitions"]
    if require_complete and len(parts) < n_partitions:
        raise MissingDataError(
            f"{out}: unfinished simulation ({len(parts)}/{n_partitions} partitions); finish it with "
            f"bin/run_simulate --out {out} --resume and the options that made it"
        )
    return manifest


def _well_formed(manifest: dict) -> bool:
    """Whether a manifest has a config hash, a partition count and well-formed partition entries."""
    parts = manifest.get("partitions")
    return (
        isinstance(manifest.get("config_hash"), str)
        and isinstance(manifest.get("n_partitions"), int)
        and isinstance(parts, dict)
        and all(
            key.isdigit() and isinstance(entry, dict)
            and all(isinstance(entry.get(name), kind) for name, kind in PARTITION_ENTRY_FIELDS.items())
            for key, entry in parts.items()
        )
    )


def simulation_files(out: str | os.PathLike, require_complete: bool = True) -> list[Path]:
    """Partition files listed in the manifest of ``out``, in partition order (see :func:`finished_manifest`)."""
    parts = finished_manifest(out, require_complete)["partitions"]
    return [Path(out) / parts[k]["file"] for k in sorted(parts, key=int)]


def read_simulation(out: str | os.PathLike, columns=None, require_complete: bool = True) -> pa.Table:
    """All partitions of ``out`` as one Arrow table (``.to_pandas()`` for a DataFrame)."""
    files = simulation_files(out, require_complete)
    if not files:
        raise MissingDataError(f"{out}: no finished partition")
    return pa.concat_tables(pq.read_table(f, columns=columns) for f in files)


def read_simulation_metadata(out_or_file: str | os.PathLike) -> dict:
    """Decoded sedscale key-value metadata of a simulation (or one of its files).

    JSON values (prior, noise model, parameter names, ...) are decoded;
    plain strings (model, cosmology, version, config hash) are returned as is.
    """
    path = Path(out_or_file)
    if path.is_dir():
        path = simulation_files(path, require_complete=False)[0]
    raw = pq.read_schema(path).metadata or {}
    meta = {}
    for key, value in raw.items():
        key = key.decode()
        if not key.startswith(META_PREFIX):
            continue
        text = value.decode()
        try:
            meta[key[len(META_PREFIX):]] = json.loads(text)
        except json.JSONDecodeError:
            meta[key[len(META_PREFIX):]] = text
    return meta
