"""The output directory of a simulation: a resumable run of :mod:`sedscale.io.runs`.

Layout::

    out/
      _manifest.json          # run identity + finished partitions
      part-000000.parquet     # one file per partition
      part-000001.parquet
      ...
"""
from __future__ import annotations

import os
from typing import Any

from ..io.runs import MANIFEST_NAME, partition_filename
from ..io.runs import read_manifest as _read_manifest

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "partition_filename", "read_manifest"]

MANIFEST_FORMAT = "sedscale.simulation"


def read_manifest(out: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of the simulation output ``out``, or None if there is none (ConfigError if foreign)."""
    return _read_manifest(out, MANIFEST_FORMAT)
