"""Prior predictive check on real catalogs: can the model and its prior make the colours real galaxies have?

A flow can only be right about galaxies whose photometry its training set
contains.  For a real catalog, prior draws are simulated at the catalog's own
redshifts (resampled within redshift bins) and every galaxy's colours
(adjacent bands: u-g, g-r, r-i, i-z for ugriz; those of its usable bands) are compared with the
nearest draw of its bin, in units of the galaxy's colour uncertainty (its
two magnitude errors in quadrature plus ``floor`` for the model's own
systematic error).  A galaxy is *covered* when a draw lies within
``n_sigma`` in every colour.

Run it as::

    python -m sedscale.validate.prior_predictive ../shared/data/nsa_lcs/*.fits --prior physical
    python -m sedscale.validate.prior_predictive SDSS_MGS.train --columns format=text names=... z=zs \\
        mag={band} mag_err=e{band} --prior flat
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..units import flux_sigma_to_mag_sigma, ivar_to_sigma, nanomaggies_to_mag

__all__ = ["PriorCoverage", "prior_draws_by_redshift", "prior_predictive_coverage"]


@dataclass(frozen=True)
class PriorCoverage:
    """Result of :func:`prior_predictive_coverage`.

    Attributes
    ----------
    covered : ndarray of bool, shape (n,)
        Per galaxy with at least two usable adjacent bands and a usable z.
    distance : ndarray, shape (n,)
        Distance (in sigma, max over colours) to the nearest prior draw.
    z : ndarray, shape (n,)
    n_draws : int
        Prior draws per redshift bin.
    """

    covered: np.ndarray
    distance: np.ndarray
    z: np.ndarray
    n_draws: int

    @property
    def fraction_outside(self) -> float:
        return float(1.0 - self.covered.mean()) if self.covered.size else float("nan")


def prior_draws_by_redshift(model, z, rows, n_draws: int, n_bins: int, rng: np.random.Generator):
    """Prior draws at a catalog's redshifts, one batch per redshift quantile bin.

    Parameters
    ----------
    model : ForwardModel
    z : ndarray, shape (n,)
        Catalog redshifts.
    rows : ndarray of int
        The rows to serve (usable redshifts).
    n_draws : int
        Draws per bin, at redshifts resampled from the bin's rows.
    n_bins : int
    rng : numpy.random.Generator

    Yields
    ------
    rows_in_bin : ndarray of int
    theta : ndarray, shape (n_draws, d)
    z_draw : ndarray, shape (n_draws,)
    flux : ndarray, shape (n_draws, n_band)
        Noiseless fluxes of the draws, nanomaggies.
    """
    rows = np.asarray(rows)
    if rows.size == 0:
        return
    edges = np.unique(np.quantile(z[rows], np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, z[rows], side="right") - 1, 0, max(edges.size - 2, 0))
    for b in np.unique(which):
        in_bin = rows[which == b]
        z_draw = rng.choice(z[in_bin], n_draws)
        theta = model.prior.sample(n_draws, rng, z_draw)
        yield in_bin, theta, z_draw, model.photometry(theta, z_draw)


def prior_predictive_coverage(model, flux, ivar, z, n_draws: int = 20000, n_bins: int = 20, n_sigma: float = 3.0,
                              floor: float = 0.03, seed: int = 0) -> PriorCoverage:
    """Fraction of real galaxies whose colours the prior predictive distribution reaches.

    Parameters
    ----------
    model : ForwardModel
        With its prior (z-dependent priors are sampled at the draws' z).
    flux, ivar : ndarray, shape (n, n_band)
        Fluxes in ``model.bands`` (nanomaggies) and inverse variances.
    z : ndarray, shape (n,)
    n_draws : int
        Prior draws per redshift bin.
    n_bins : int
        Redshift quantile bins of the catalog.
    n_sigma : float
        Coverage radius in units of the colour uncertainty.
    floor : float
        Magnitudes added in quadrature to each colour's uncertainty.
    seed : int
    """
    flux = np.asarray(flux, dtype=float)
    mag = nanomaggies_to_mag(flux)
    sig = flux_sigma_to_mag_sigma(flux, ivar_to_sigma(ivar))
    z = np.asarray(z, dtype=float)
    colour = mag[:, :-1] - mag[:, 1:]
    colour_sig = np.sqrt(sig[:, :-1] ** 2 + sig[:, 1:] ** 2 + floor**2)
    usable = np.isfinite(colour) & np.isfinite(colour_sig)
    keep = np.flatnonzero(usable.any(axis=1) & np.isfinite(z) & (z > 0) & (z <= model.z_max))
    distance = np.full(keep.size, np.inf)
    for rows, _, _, model_flux in prior_draws_by_redshift(model, z, keep, n_draws, n_bins,
                                                          np.random.default_rng(seed)):
        model_mag = nanomaggies_to_mag(model_flux)
        model_colour = (model_mag[:, :-1] - model_mag[:, 1:]).astype(np.float32)
        for s in range(0, rows.size, 256):
            r = rows[s : s + 256]
            scaled = (colour[r][:, None, :] - model_colour[None, :, :]) / colour_sig[r][:, None, :]
            scaled = np.where(usable[r][:, None, :], np.abs(scaled), 0.0)
            distance[np.searchsorted(keep, r)] = scaled.max(axis=2).min(axis=1)
    return PriorCoverage(covered=distance <= n_sigma, distance=distance, z=z[keep], n_draws=n_draws)


def _main(argv: Sequence[str] | None) -> int:
    from ..io.catalog import load_column_mapping, read_catalog
    from ..models import get_model
    from ..observe.bands import get_band_set

    p = argparse.ArgumentParser(prog="python -m sedscale.validate.prior_predictive",
                                description=__doc__.split("\n")[0])
    p.add_argument("catalog", nargs="+", help="catalog files (NSA FITS, or any table with --columns)")
    p.add_argument("--columns", nargs="+", metavar="KEY=VALUE", help="column mapping (as bin/run_catalog)")
    p.add_argument("--model", default="dirichlet")
    p.add_argument("--nebular-log-u", type=float, help="add nebular emission at this log U (model option)")
    p.add_argument("--bands", default="sdss", help="band set of the model and of the catalog columns (default sdss)")
    p.add_argument("--prior", default="physical", help="prior preset or YAML file (dirichlet model)")
    p.add_argument("--n-draws", type=int, default=20000, help="prior draws per redshift bin (default 20000)")
    p.add_argument("--n-sigma", type=float, default=3.0, help="coverage radius in sigma (default 3)")
    args = p.parse_args(argv)
    bands = get_band_set(args.bands)
    df = read_catalog(args.catalog, mapping=load_column_mapping(args.columns, bands=bands.bands) if args.columns else None,
                      bands=bands.bands)
    options = {"nebular_log_u": args.nebular_log_u} if args.nebular_log_u is not None else {}
    options["bands"] = bands
    model = get_model(args.model, prior=args.prior, **options) if args.model == "dirichlet" else get_model(
        args.model, bands=bands)
    res = prior_predictive_coverage(model, df[list(bands.columns("flux_"))].to_numpy(),
                                    df[list(bands.columns("flux_ivar_"))].to_numpy(),
                                    df["z"].to_numpy(), n_draws=args.n_draws, n_sigma=args.n_sigma)
    print(f"{res.covered.size} galaxies (z {res.z.min():.4f}-{res.z.max():.4f}); prior {args.prior}: "
          f"{100 * res.fraction_outside:.2f}% outside the prior predictive colours "
          f"(> {args.n_sigma:g} sigma from all {res.n_draws} draws of their redshift bin); "
          f"median distance {np.median(res.distance):.2f} sigma", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli import run_guarded

    return run_guarded(_main, argv, "prior_predictive")


if __name__ == "__main__":
    raise SystemExit(main())
