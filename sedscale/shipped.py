"""What ships inside the package: trained flows found by name, and the default flow.

Checkpoints live in ``sedscale/data/checkpoints/<name>/`` (package data; in a
source checkout ``checkpoints/<name>`` points there), so a plain
``pip install .`` runs the main job from any directory.  Anywhere a
checkpoint path is taken, a name of a shipped checkpoint is accepted too
(:func:`resolve_checkpoint`); ``bin/run_catalog`` without ``--flow`` uses
:func:`default_flow`.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_FLOW_NAME", "FLOW_ENV", "SHIPPED_CHECKPOINTS", "default_flow", "resolve_checkpoint", "shipped_names"]

#: Checkpoints shipped inside the package (package data), found by name.
SHIPPED_CHECKPOINTS = Path(__file__).resolve().parent / "data" / "checkpoints"
#: The shipped flow used when none is named (``bin/run_catalog`` without ``--flow``).
DEFAULT_FLOW_NAME = "dirichlet_dwarf"
#: Environment variable naming another default flow (a path or a shipped name).
FLOW_ENV = "SEDSCALE_FLOW"


def default_flow() -> str:
    """The flow used when none is named: ``$SEDSCALE_FLOW``, else the shipped :data:`DEFAULT_FLOW_NAME`."""
    return os.environ.get(FLOW_ENV) or str(SHIPPED_CHECKPOINTS / DEFAULT_FLOW_NAME)


def shipped_names() -> list[str]:
    """Names of the checkpoints shipped inside the package, sorted."""
    if not SHIPPED_CHECKPOINTS.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_CHECKPOINTS.iterdir() if (p / "posterior.json").is_file())


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint path as given, or the shipped checkpoint of that name (``"dirichlet_dwarf"``) if no such path exists."""
    given = Path(path)
    shipped = SHIPPED_CHECKPOINTS / str(path)
    if not given.exists() and os.sep not in str(path) and shipped.is_dir():
        return shipped
    return given
