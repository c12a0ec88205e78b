"""``bin/compare_masses``: a posterior catalog's stellar masses against an independent reference.

Examples
--------
    bin/compare_masses virgo.parquet --reference ../shared/data/nsa_virgo_isedfit/nsa_mstar.virgo.fits \\
        --ref-mass MSTAR_50 --match ISEDFIT_ID --out virgo_isedfit
    bin/compare_masses virgo.parquet --reference ../shared/data/nsa_virgo_isedfit/nsa_gswlc.virgo.fits \\
        --ref-mass LOGMSTAR --ref-z Z --match rows
    bin/compare_masses nsa.parquet --reference nsa.parquet --ref-mass mass --ref-linear --ref-offset 0.31 --match rows

Reports the median offset (ours - reference) and the NMAD overall and in bins
of g-r, reference mass and redshift, over galaxies with status ok (Markdown
and strict JSON with --out, plus a PNG plot).  Ids are joined as read; when
one file has integer ids and the other strings (or floats), integer-valued
ones are compared as integers.  A catalog id on several reference rows is an
error unless --ref-duplicates first; no id matched, or no galaxy left to
compare, is an error too.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError
from ..io.catalog import read_table_columns
from ..validate.reference import (
    REF_DUPLICATES,
    VALID_RANGE,
    compare_masses,
    join_ids,
    plot_comparison,
    read_posterior_catalog,
    write_report,
)
from . import prog_name, run_guarded

PROG = "compare_masses"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name(PROG), description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("catalog", help="posterior catalog of bin/run_catalog (Parquet or FITS)")
    p.add_argument("--reference", required=True, help="reference catalog (FITS, Parquet, CSV)")
    p.add_argument("--ref-mass", required=True, metavar="COL", help="reference stellar-mass column")
    p.add_argument(
        "--match", required=True, metavar="ID_COL|rows",
        help="reference id column joined with the catalog's 'id', or 'rows' (same rows in the same order)",
    )
    p.add_argument("--ref-duplicates", choices=REF_DUPLICATES, default="error",
                   help="a catalog id on several reference rows: refuse (default) or use the first of them")
    p.add_argument("--column", default="log_mstar_total_p50",
                   help="our mass column (default log_mstar_total_p50: living stars + remnants, median)")
    p.add_argument("--ref-linear", action="store_true", help="the reference mass is in Msun, not log10 Msun")
    p.add_argument("--ref-offset", type=float, default=0.0,
                   help="dex added to the reference (e.g. 0.31 for Msun h^-2 masses at h = 0.7)")
    p.add_argument("--ref-z", metavar="COL", help="reference redshift column: drop matches whose z differs by > --max-dz")
    p.add_argument("--max-dz", type=float, default=0.003, help="largest |z_ref - z| of a true match (default 0.003)")
    p.add_argument("--label", help="name of the reference in the report (default: the column name)")
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX.md, PREFIX.json and PREFIX.png")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cat = read_posterior_catalog(args.catalog, ["id", "z", "status", "mag_g", "mag_r", args.column])
    wanted = [args.ref_mass] + ([args.ref_z] if args.ref_z else [])
    if args.match == "rows":
        raw = read_table_columns(args.reference, wanted)
        if raw[args.ref_mass].size != len(cat):
            raise ConfigError(f"--match rows: the reference has {raw[args.ref_mass].size} rows, the catalog {len(cat)}")
        ref = {c: raw[c].astype(float) for c in wanted}
        n_joined = len(cat)
    else:
        raw = read_table_columns(args.reference, [args.match] + wanted)
        rows, joined = join_ids(cat["id"].to_numpy(), raw[args.match], args.match, args.ref_duplicates)
        print(f"{PROG}: {joined}", flush=True)
        n_joined = int((rows >= 0).sum())
        ref = {c: np.where(rows >= 0, raw[c].astype(float)[np.maximum(rows, 0)], np.nan) for c in wanted}
    mismatched = np.zeros(len(cat), dtype=bool)
    if args.ref_z:
        with np.errstate(invalid="ignore"):
            mismatched = np.abs(ref[args.ref_z] - cat["z"].to_numpy(dtype=float)) > args.max_dz
        matched = np.isfinite(ref[args.ref_mass]) & (ref[args.ref_mass] > VALID_RANGE[0]) & (ref[args.ref_mass] < VALID_RANGE[1])
        mismatched &= matched
        print(f"{PROG}: {int(mismatched.sum())} of {int(matched.sum())} matches dropped: |z_ref - z| > {args.max_dz:g} "
              "(different objects)")
    ref_mass = np.where(mismatched, np.nan, ref[args.ref_mass])
    if args.ref_linear:
        with np.errstate(divide="ignore", invalid="ignore"):
            ref_mass = np.where(ref_mass > 0, np.log10(ref_mass), np.nan)
    ref_mass = ref_mass + args.ref_offset
    result = compare_masses(cat, ref_mass, column=args.column, label=args.label or args.ref_mass)
    if result.n_ok == 0:
        hint = "" if result.n_matched else " (is --ref-mass in log10 Msun, or in Msun with --ref-linear?)"
        raise ConfigError(f"no galaxy to compare: {n_joined} of {len(cat)} catalog rows joined with the reference, "
                          f"{result.n_matched} of them with a valid reference mass "
                          f"({VALID_RANGE[0]:g} < log10 M < {VALID_RANGE[1]:g}){hint}, none of those with status ok "
                          f"and a finite {args.column}")
    print(result.format(), flush=True)
    if args.out:
        write_report(result, args.out)
        plot_comparison(cat, ref_mass, result, args.out + ".png")
        print(f"{PROG}: wrote {args.out}.md, {args.out}.json, {args.out}.png", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bin/compare_masses``; returns the exit status."""
    return run_guarded(_main, argv, PROG)
