"""Reading a finished simulation output (for training and diagnostics)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import MissingDataError
from .manifest import read_manifest
from .run import META_PREFIX


def simulation_files(out: str | os.PathLike, require_complete: bool = True) -> list[Path]:
    """Partition files listed in the manifest of ``out``, in partition order.

    Parameters
    ----------
    out : str or PathLike
    require_complete : bool
        Raise if the run is unfinished.

    Raises
    ------
    MissingDataError
        No manifest, or an unfinished run when ``require_complete``.
    """
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is None:
        raise MissingDataError(f"{out} holds no simulation (no _manifest.json)")
    parts = manifest["partitions"]
    if require_complete and len(parts) < manifest["n_partitions"]:
        raise MissingDataError(
            f"{out}: unfinished simulation ({len(parts)}/{manifest['n_partitions']} partitions); "
            "finish it with bin/run_simulate --resume"
        )
    return [out / parts[k]["file"] for k in sorted(parts, key=int)]


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
