"""``sedscale flows``: the trained flows this installation can use by name, and what each serves.

Lists the checkpoints shipped inside the package (usable as ``--flow NAME``
from any directory) and, in a source checkout, those of its
``checkpoints/`` folder (usable by path), read from their sidecars alone.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ..shipped import DEFAULT_FLOW_NAME, SHIPPED_CHECKPOINTS
from . import run_guarded

PROG = "sedscale flows"
#: A source checkout's checkpoint folder, when ``sedscale flows`` runs from the checkout's root.
CHECKOUT_CHECKPOINTS = Path("checkpoints")


def describe(sidecar: Path) -> dict[str, str]:
    """What a checkpoint serves, from its sidecar: observable, model, bands, redshifts, inputs."""
    meta = json.loads(sidecar.read_text())
    x = list(meta.get("x_columns") or [])
    bands = [c.removeprefix("mag_") for c in x if c.startswith("mag_")]
    z = (meta.get("training_set") or {}).get("redshift") or {}
    photoz = "z_obs" in x
    observable = meta.get("observable", "photometry")
    return {
        "observable": observable,
        "model": meta["model"]["name"],
        "bands": ("".join(bands) if all(len(b) == 1 for b in bands) else ",".join(bands)) if bands else "-",
        "z": f"{z.get('low', '?')}-{z.get('high', '?')}",
        "redshift": "inferred (photo-z) or given" if photoz else ("given" if observable == "photometry" else "given (spectra)"),
    }


def rows() -> list[tuple[str, str, dict[str, str]]]:
    """(name, where, description) of every checkpoint found, shipped ones first."""
    found = []
    for folder, where in ((SHIPPED_CHECKPOINTS, "package"), (CHECKOUT_CHECKPOINTS, "checkout")):
        if not folder.is_dir():
            continue
        for d in sorted(p for p in folder.iterdir() if (p / "posterior.json").is_file()):
            if where == "checkout" and (SHIPPED_CHECKPOINTS / d.name).is_dir():
                continue  # the checkout's link to a shipped flow
            found.append((d.name if where == "package" else str(d), where, describe(d / "posterior.json")))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sedscale flows``; returns the exit status."""
    return run_guarded(_main, argv, PROG)


def _main(argv: Sequence[str] | None) -> int:
    argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0]).parse_args(argv)
    table = rows()
    if not table:
        print(f"{PROG}: no checkpoint found in {SHIPPED_CHECKPOINTS}")
        return 0
    width = max(len(name) for name, _, _ in table)
    print(f"{'flow':<{width}}  {'where':<8}  {'observable':<10}  {'model':<11}  {'bands':<16}  {'z':<12}  redshift")
    for name, where, d in table:
        mark = " (default)" if name == DEFAULT_FLOW_NAME and where == "package" else ""
        print(f"{name:<{width}}  {where:<8}  {d['observable']:<10}  {d['model']:<11}  {d['bands']:<16}  {d['z']:<12}  "
              f"{d['redshift']}{mark}")
    print("\npackage flows: --flow NAME from any directory; checkout flows: --flow PATH")
    return 0
