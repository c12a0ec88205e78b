"""``sedscale fit-noise-model`` (``bin/fit_noise_model``): fit the SEDflow photometric noise model to NSA FITS files.

Regenerate the shipped model from the repository root with

    bin/fit_noise_model ../shared/data/nsa_lcs/*.fits -o sedscale/data/nsa_noise.json
"""
from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence

import numpy as np

from . import prog_name, run_guarded

PROG = "fit_noise_model"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name(PROG), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="NSA FITS files (NMGY, NMGY_IVAR, Z, NSAID columns)")
    p.add_argument("-o", "--output", required=True, help="output JSON path")
    p.add_argument("--n-bins", type=int, default=20, help="log-spaced flux bins per band (default 20)")
    p.add_argument("--min-count", type=int, default=10, help="fewest galaxies for a bin's statistics (default 10)")
    p.add_argument("--min-snr", type=float, default=1.0, help="drop rows with S/N below this in any band (default 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    return run_guarded(_main, argv, PROG)


def _main(argv: Sequence[str] | None) -> int:
    import sys

    from ..observe.noise import fit_nsa_noise_model

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    model = fit_nsa_noise_model(args.inputs, n_bins=args.n_bins, min_count=args.min_count, min_snr=args.min_snr,
                                command=shlex.join(["bin/fit_noise_model", *argv]))
    path = model.to_json(args.output)
    print(f"{model.source}; {model.n_galaxies} used")
    for band in model.bands:
        med = band.median[np.isfinite(band.median)]
        print(f"  {band.band}: flux {band.f_min:.4g}-{band.f_max:.4g} nmgy, {med.size}/{band.counts.size} "
              f"populated bins, bin median sigma {med.min():.4f}-{med.max():.4f} mag")
    print(f"wrote {path}")
    return 0
