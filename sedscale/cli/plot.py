"""``sedscale plot``: figures of a posterior catalog, one galaxy's fit or the whole catalog at a glance.

    sedscale plot posteriors.parquet --id 1234 5678 --out figures/      # <id>_fit.png, <id>_corner.png
    sedscale plot posteriors.parquet --summary --out figures/           # summary.png
    sedscale plot nsa.parquet --summary --ref MASS --ref-h 0.7 --out figures/   # masses against a kept column

The fit figure shows the measured photometry with the posterior-predictive
model photometry and SED (through the SPS model) and the star-formation
history in the model's bins; the corner plot the joint posterior of mass,
SFR, sSFR, metallicity, dust and age (``sedscale.plots.galaxy``).  The
summary shows statuses, reasons, colour-mass and masses against a reference
(``sedscale.plots.summary``).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import run_guarded

PROG = "sedscale plot"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:6]))
    p.add_argument("catalog", help="a posterior catalog of sedscale catalog / bin/run_catalog (Parquet or FITS)")
    p.add_argument("--id", nargs="+", default=[], metavar="ID", help="galaxies to plot (their id column)")
    p.add_argument("--summary", action="store_true", help="the catalog's summary figure (summary.png)")
    p.add_argument("--out", default=".", help="output folder (default: the current one)")
    p.add_argument("--flow", help="checkpoint (default: the one the catalog records; its sha256 is checked)")
    p.add_argument("--n-samples", type=int, default=2000,
                   help="posterior samples drawn per galaxy when the catalog stores none (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref", metavar="COLUMN",
                   help="summary: a column of the catalog (kept with --keep) holding reference stellar masses, "
                        "log10 Msun or, for values above 100, Msun")
    p.add_argument("--ref-h", type=float, metavar="H",
                   help="the reference masses are in h^-2 Msun (NSA MASS): divide by H^2 (e.g. 0.7)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sedscale plot``; returns the exit status."""
    return run_guarded(_main, argv, PROG)


def reference_masses(values: np.ndarray, h: float | None) -> np.ndarray:
    """log10 M*/Msun of a reference column: logarithms kept, linear masses (> 100) converted, h^-2 units scaled."""
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.where(values > 100, np.log10(np.where(values > 100, values, 1.0)), values)
    log = np.where(np.isfinite(log) & (values > 0), log, np.nan)
    return log - 2 * np.log10(h) if h else log


def _main(argv: Sequence[str] | None) -> int:
    from ..errors import ConfigError
    from ..plots.galaxy import plot_galaxy, read_catalog_rows, select_ids
    from ..plots.summary import plot_summary

    args = build_parser().parse_args(argv)
    if not args.id and not args.summary:
        raise ConfigError("nothing to plot: give --id ID ... and/or --summary")
    if args.ref and not args.summary:
        raise ConfigError("--ref applies to --summary")
    if args.ref_h and not args.ref:
        raise ConfigError("--ref-h applies to --ref")
    out = Path(args.out)
    # The catalog is read once, and every id must exist before any figure is drawn.
    frame = read_catalog_rows(args.catalog)
    rows = select_ids(frame, args.id, args.catalog)
    for galaxy_id in args.id:
        row = rows[rows["id"].astype(str) == str(galaxy_id)].iloc[0]
        fit, corner = plot_galaxy(args.catalog, galaxy_id, out, flow=args.flow, n_samples=args.n_samples,
                                  seed=args.seed, row=row)
        print(f"{PROG}: {fit}, {corner}", flush=True)
    if args.summary:
        reference = None
        if args.ref:
            # Kept columns are stored lower-case.
            column = {c.lower(): c for c in frame.columns}.get(args.ref.lower())
            if column is None:
                raise ConfigError(f"{args.catalog} has no column {args.ref} (keep it with run_catalog --keep {args.ref})")
            reference = reference_masses(frame[column].to_numpy(), args.ref_h)
        path = plot_summary(frame, out / "summary.png", reference=reference, reference_label=args.ref or "",
                            title=str(args.catalog))
        print(f"{PROG}: {path}", flush=True)
    return 0
