"""Photometric redshifts side by side: sedscale, a template code (BPZ) and an empirical k-NN, same rows, same run.

    python -m sedscale.bench photoz [--flow photoz_ugriz]
        [--catalog ../shared/data/sdss_mgs/SDSS_MGS.train] [--columns KEY=VALUE ...] [--zspec zs]
        [--n-samples 1000] [--workers 2] [--max-rows N] [--out result.json]

The catalog is read through sedscale's own reader with its redshift withheld
(the default mapping is the SDSS MGS text table's, with ``z=none`` and the
spec-z kept as ``zs``).  Then, on the rows every code can use:

1. **sedscale**: ``run_catalog`` with the photometric-redshift flow on a
   LocalCluster (wall-clock galaxies/s), the posterior median as the point
   photo-z and the 16-84% / 2.5-97.5% intervals for coverage; plus its
   per-galaxy cost on one thread in this process.
2. **BPZ** (:mod:`sedscale.validate.bpz`): BPZ's CWWSB4_6 templates with
   its HDFN prior (I-band magnitude) and with a flat prior; ``Z_B`` and the
   16-84% range of p(z).
3. **k-NN** (:func:`sedscale.validate.photoz.knn_photoz`): 10 neighbours in
   u-g, g-r, r-i, i-z and r, trained on the other half of the rows.

For each: sigma_NMAD of dz/(1+z), outlier fraction (|dz|/(1+z) > 0.15), bias
(median dz), interval coverage where defined, and CPU per galaxy; sedscale
also by spec-z and r-magnitude bins.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..cli import run_guarded
from ..infer.catalog import CatalogOptions, plan_catalog
from ..units import nanomaggies_to_mag
from ..validate.photoz import knn_photoz, photoz_metrics
from .catalog import bench_cluster, stage_costs

#: The shared SDSS MGS table and its true column order (its '#' header is wrong; see its README).
MGS = Path("../shared/data/sdss_mgs/SDSS_MGS.train")  # from a checkout's root, as the docs' commands
MGS_COLUMNS = ("format=text", "names=zs,u,g,r,i,z,u-g,g-r,r-i,i-z,eu,eg,er,ei,ez,eu-g,eg-r,er-i,ei-z",
               "z=none", "mag={band}", "mag_err=e{band}", "keep=zs")
#: Spec-z and r-magnitude bins of the sedscale breakdown.
Z_BINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 1.0)
R_BINS = (10.0, 16.0, 17.0, 17.5, 18.0, 30.0)


def _row(name: str, m: dict) -> str:
    """A markdown table row of one code's figures (:meth:`PhotozMetrics.to_dict` plus ``cpu_ms_per_galaxy``)."""
    cov = " / ".join("-" if not np.isfinite(m[k]) else f"{100 * m[k]:.1f}%" for k in ("coverage_68", "coverage_95"))
    return (f"| {name} | {m['n']} | {m['sigma_nmad']:.4f} | {100 * m['outlier_fraction']:.2f}% | {m['bias']:+.4f} "
            f"| {cov} | {m['cpu_ms_per_galaxy']:.2f} |")


def binned(values, z_phot, z_spec, edges, lo=None, hi=None) -> list[dict]:
    """:func:`photoz_metrics` in bins of ``values``."""
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (values >= a) & (values < b)
        if sel.sum() >= 10:
            m = photoz_metrics(z_phot[sel], z_spec[sel], None if lo is None else (lo[sel], hi[sel]))
            out.append({"low": a, "high": b, **m.to_dict()})
    return out


def _main(argv: Sequence[str] | None) -> int:
    from ..validate.bpz import bpz_photoz, template_grid

    p = argparse.ArgumentParser(prog="python -m sedscale.bench photoz", description=__doc__.split("\n")[0])
    p.add_argument("--flow", default="photoz_ugriz", help="photometric-redshift checkpoint (default photoz_ugriz)")
    p.add_argument("--catalog", default=str(MGS), help="catalog with spectroscopic redshifts (default: the SDSS MGS)")
    p.add_argument("--columns", nargs="+", default=list(MGS_COLUMNS),
                   help="column mapping (key=value) that withholds z (z=none) and keeps the spec-z column")
    p.add_argument("--zspec", default="zs", help="the kept spec-z column (default zs)")
    p.add_argument("--n-samples", type=int, default=1000, help="posterior samples per galaxy (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    p.add_argument("--stage-galaxies", type=int, default=100, help="galaxies for sedscale's 1-thread cost (default 100)")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sedscale-bench-photoz-") as tmp_name:
        out = Path(tmp_name) / "photoz.parquet"
        plan = plan_catalog(args.catalog, args.flow, out, CatalogOptions(n_samples=args.n_samples),
                            mapping=args.columns)
        post = plan.posterior
        if post.redshift_input is None:
            raise SystemExit(f"{post.path} takes z as an input; give a photometric-redshift flow (--flow)")
        run = bench_cluster([plan], args.workers)[0]["summary"]
        costs = stage_costs(plan, args.stage_galaxies)
        cat = pd.read_parquet(out)
        frame = plan.source.read()
    bands = post.bands
    z_spec = cat[args.zspec].to_numpy(dtype=float)
    ok = (cat["status"] == "ok").to_numpy()
    flux = frame[list(bands.columns("flux_"))].to_numpy(dtype=float)
    err = 1.0 / np.sqrt(frame[list(bands.columns("flux_ivar_"))].to_numpy(dtype=float))
    mag = nanomaggies_to_mag(flux)
    results: dict[str, dict] = {}
    z50, lo68, hi68 = (cat[f"z_{s}"].to_numpy() for s in ("p50", "p16", "p84"))
    m_sed = photoz_metrics(np.where(ok, z50, np.nan), z_spec, (lo68, hi68), (cat["z_p025"].to_numpy(),
                                                                            cat["z_p975"].to_numpy()))
    sed_ms = 1e3 * sum(costs.values())
    results["sedscale"] = {**m_sed.to_dict(), "cpu_ms_per_galaxy": sed_ms, "ok_fraction": float(ok.mean()),
                           "galaxies_per_s": run.galaxies_per_s, "workers": args.workers,
                           "by_z": binned(z_spec, z50, z_spec, Z_BINS, lo68, hi68),
                           "by_r": binned(mag[:, list(bands.bands).index("r")], z50, z_spec, R_BINS, lo68, hi68)}
    # BPZ on the rows sedscale served (its I-band prior magnitude: i).
    rows = np.flatnonzero(ok)
    t0 = time.process_time()
    grid = template_grid(bands.filters, np.arange(0.002, 1.0, 0.002))
    grid_s = time.process_time() - t0
    i_band = list(bands.bands).index("i")
    for prior in ("hdfn", "flat"):
        t0 = time.process_time()
        r = bpz_photoz(grid, flux[rows], err[rows], m0=mag[rows, i_band], prior=prior)
        cpu = (time.process_time() - t0 + grid_s) / rows.size
        m = photoz_metrics(r.z_b, z_spec[rows], (r.z_low, r.z_high))
        results[f"bpz_{prior}"] = {**m.to_dict(), "cpu_ms_per_galaxy": 1e3 * cpu}
    t0 = time.process_time()
    colours = np.column_stack([mag[rows, k] - mag[rows, k + 1] for k in range(mag.shape[1] - 1)] + [mag[rows, 2]])
    knn = knn_photoz(colours, z_spec[rows])
    m = photoz_metrics(knn, z_spec[rows])
    results["knn"] = {**m.to_dict(), "cpu_ms_per_galaxy": 1e3 * (time.process_time() - t0) / rows.size}
    m_same = photoz_metrics(z50[rows], z_spec[rows], (lo68[rows], hi68[rows]),
                            (cat["z_p025"].to_numpy()[rows], cat["z_p975"].to_numpy()[rows]))
    print(f"{args.catalog}: {len(cat)} galaxies, {ok.sum()} ok ({100 * ok.mean():.2f}%) with {post.path}; "
          f"{run.galaxies_per_s:.1f} galaxies/s x {args.n_samples} samples on {args.workers} workers")
    print("| code | n | sigma_NMAD | outliers | bias | 68% / 95% coverage | CPU ms/galaxy |")
    print("|---|---:|---:|---:|---:|---|---:|")
    print(_row("sedscale (posterior median)", {**m_same.to_dict(), "cpu_ms_per_galaxy": sed_ms}))
    print(_row("BPZ, HDFN prior (Z_B)", results["bpz_hdfn"]))
    print(_row("BPZ, flat prior (Z_B)", results["bpz_flat"]))
    print(_row("k-NN (10 neighbours, 2-fold)", results["knn"]))
    for key, label in (("by_z", "spec-z"), ("by_r", "r mag")):
        print(f"sedscale by {label}: " + "; ".join(
            f"{b['low']:g}-{b['high']:g}: n {b['n']}, NMAD {b['sigma_nmad']:.4f}, out {100 * b['outlier_fraction']:.1f}%, "
            f"bias {b['bias']:+.4f}, 68% {100 * b['coverage_68']:.0f}%" for b in results["sedscale"][key]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sedscale.bench photoz``."""
    return run_guarded(_main, argv, "bench photoz")
