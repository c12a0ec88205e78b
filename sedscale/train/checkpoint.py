"""Checkpoint files: a torch ``state_dict`` plus a JSON metadata sidecar.

A checkpoint ``<dir>/posterior.pt`` has its metadata in
``<dir>/posterior.json``: model name and options, prior, parameter order
and transform, x layout (columns and units), normalisation, flow
hyperparameters, training options and validation history, the training
set's identity (manifest hash), library versions, and the size and sha256
of the weights file.  The weights are written first and the sidecar last,
each atomically, so a sidecar always describes complete weights; reading
checks size and hash before ``torch.load(weights_only=True)``, which turns
a truncated or altered file into a one-line :class:`CheckpointError`.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
from pathlib import Path

import torch

from ..errors import SedscaleError
from ..io.atomic import atomic_write_bytes
from ..shipped import resolve_checkpoint, shipped_names

CHECKPOINT_FORMAT = "sedscale.posterior"
CHECKPOINT_VERSION = 1
#: File name of a checkpoint given by its directory.
DEFAULT_WEIGHTS = "posterior.pt"
REQUIRED_KEYS = (
    "format",
    "format_version",
    "model",
    "prior",
    "param_names",
    "x_columns",
    "x_units",
    "normalization",
    "flow",
    "training",
    "history",
    "training_set",
    "versions",
    "weights",
)


class CheckpointError(SedscaleError, ValueError):
    """A checkpoint is missing, corrupt, or does not fit the data it is used with."""


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def read_json(path: Path) -> dict:
    """Parse a JSON sidecar; CheckpointError if missing or unreadable."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: metadata file not found") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt or truncated metadata ({exc})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: metadata is not a JSON object")
    return obj


def write_weights(path: Path, state: dict) -> dict:
    """Save a (nested) dict of tensors atomically; return its file record."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return {"file": Path(path).name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_weights(path: Path, record: dict) -> dict:
    """Load tensors saved by :func:`write_weights`, checking ``record`` first.

    Raises
    ------
    CheckpointError
        Missing, truncated (size differs), altered (hash differs) or
        unreadable file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: weights file not found") from None
    if len(data) != record.get("bytes"):
        raise CheckpointError(
            f"{path}: truncated or incomplete weights file ({len(data)} bytes, the metadata says "
            f"{record.get('bytes')}); retrain or copy the checkpoint again"
        )
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise CheckpointError(f"{path}: weights file does not match its metadata (sha256 differs); it was altered")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        raise CheckpointError(f"{path}: unreadable weights file ({type(exc).__name__}: {exc})") from None


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, sidecar)`` paths of a checkpoint given as directory, .pt, .json or shipped name."""
    path = resolve_checkpoint(path)
    if path.is_dir():
        path = path / DEFAULT_WEIGHTS
    if path.suffix == ".json":
        return path.with_suffix(".pt"), path
    return path, path.with_suffix(".json")


def checkpoint_observable(path: str | os.PathLike) -> str:
    """What a checkpoint's flow is conditioned on (``photometry`` or ``spectrum``), from its sidecar alone.

    Raises
    ------
    CheckpointError
        No checkpoint at ``path``, or an unreadable sidecar.
    """
    return str(read_json(existing_checkpoint_paths(path)[1]).get("observable", "photometry"))


def existing_checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """:func:`checkpoint_paths` of a checkpoint that is there; CheckpointError (one line) otherwise."""
    weights, sidecar = checkpoint_paths(path)
    if not resolve_checkpoint(path).exists() or not (weights.exists() or sidecar.exists()):
        raise CheckpointError(f"no checkpoint at {path}: give a checkpoint directory (holding {DEFAULT_WEIGHTS} "
                              f"and its .json sidecar), its weights file, or a shipped flow's name "
                              f"({', '.join(shipped_names()) or 'none installed'})")
    return weights, sidecar


def library_versions() -> dict:
    """Versions of the libraries that define a checkpoint's meaning."""
    import numpy
    import sbi

    from .._version import __version__

    versions = {
        "sedscale": __version__,
        "torch": torch.__version__,
        "sbi": sbi.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    with contextlib.suppress(ImportError):
        import zuko

        versions["zuko"] = zuko.__version__
    return versions


def save_checkpoint(path: str | os.PathLike, state_dict: dict, metadata: dict) -> Path:
    """Write weights then sidecar; returns the weights path.

    ``metadata`` gets ``format``, ``format_version`` and ``weights`` added.
    """
    weights, sidecar = checkpoint_paths(path)
    record = write_weights(weights, state_dict)
    meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **metadata, "weights": record}
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata lacks {missing}")
    write_json(sidecar, meta)
    return weights


def validate_metadata(meta: dict, where: str) -> None:
    """Check the format, version and required keys of checkpoint metadata."""
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{where}: not a sedscale posterior checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format version {meta.get('format_version')!r}; this sedscale reads "
            f"{CHECKPOINT_VERSION}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{where}: checkpoint metadata lacks {missing}")
    if len(meta["x_columns"]) != len(meta["normalization"]["x_mean"]):
        raise CheckpointError(f"{where}: x_columns and normalisation disagree in length")
    if list(meta["param_names"]) != [p["name"] for p in meta["prior"]["parameters"]]:
        raise CheckpointError(f"{where}: param_names and prior disagree")


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read and check a checkpoint; returns ``(state_dict, metadata)``.

    Raises
    ------
    CheckpointError
        Missing files, foreign or corrupt metadata, truncated weights.
    """
    weights, sidecar = existing_checkpoint_paths(path)
    meta = read_json(sidecar)
    validate_metadata(meta, str(sidecar))
    return read_weights(weights, meta["weights"]), meta


def _names(names, show: int = 12) -> str:
    """A list of column names for a one-line message: whole when short, else its size and ends."""
    names = list(names)
    if len(names) <= show:
        return str(names)
    return f"[{len(names)} names: {', '.join(map(repr, names[:3]))}, ..., {', '.join(map(repr, names[-2:]))}]"


def check_compatible(meta: dict, where: str, model=None, x_columns=None, param_names=None) -> None:
    """Refuse a checkpoint trained for another model, x layout or parameter order.

    Parameters
    ----------
    meta : dict
        Checkpoint metadata.
    where : str
        The checkpoint's path, for messages.
    model : str or ForwardModel, optional
        Expected model (name or instance).
    x_columns, param_names : sequence of str, optional
        Expected observation columns / parameter order.

    Raises
    ------
    CheckpointError
        Naming what differs.
    """
    if model is not None:
        name = model if isinstance(model, str) else getattr(model, "name", str(model))
        if name != meta["model"]["name"]:
            raise CheckpointError(
                f"{where} was trained for model {meta['model']['name']!r}, not {name!r}; "
                "use a checkpoint trained on simulations of this model"
            )
    for label, expected, have in (
        ("x layout", x_columns, meta["x_columns"]),
        ("parameter order", param_names, meta["param_names"]),
    ):
        if expected is not None and list(expected) != list(have):
            raise CheckpointError(f"{where}: {label} {_names(have)} does not match the expected {_names(expected)}")
