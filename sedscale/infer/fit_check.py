"""Goodness of fit per galaxy: does its posterior reproduce its own photometry?

A posterior can be confidently wrong (a flow extrapolating, a galaxy the
model cannot describe) while every input check passes.  For each galaxy,
the model photometry of ``n_fit`` of its posterior samples is computed with
the forward model, and compared with the measured fluxes of every measured
band, those the flow used and those masked for low S/N (a model far above a
band's upper limit does not reproduce it), errors with the run's error floor:

* ``model_mag_<band>``: the median posterior-predictive model magnitude;
* ``chi2_best``: the smallest chi2 among those samples (a best fit from
  the posterior), with ``n_bands_fit`` bands;
* ``ppc_p``: the posterior-predictive p-value of the chi2 discrepancy
  (Gelman, Meng & Stern 1996): the probability that photometry replicated
  from a posterior sample (model + Gaussian noise) fits worse than the
  measured one, averaged over the samples (exact per sample: the replica's
  chi2 follows chi2 with ``n_bands_fit`` degrees of freedom), or, if
  smaller, the same tail probability of the median model photometry (a
  posterior split between models that fit and models magnitudes away
  passes the average).  Below :data:`POOR_FIT_P` the galaxy's photometry is
  not reproduced: status ``poor_fit``.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from scipy import stats

from ..models.base import ForwardModel
from ..units import nanomaggies_to_mag

__all__ = ["FIT_SAMPLES", "POOR_FIT_P", "FitCheck", "fit_check", "posterior_photometry"]

#: Posterior samples per galaxy whose photometry is computed (the cost: this many forward-model evaluations).
FIT_SAMPLES = 50
#: Posterior-predictive p-value below which a galaxy's photometry counts as not reproduced.
POOR_FIT_P = 1e-3


class FitCheck(NamedTuple):
    """Goodness of fit of a block of galaxies.

    Attributes
    ----------
    model_mag : ndarray, shape (n, n_band)
        Median posterior-predictive AB magnitude per band.
    chi2_best : ndarray, shape (n,)
        Smallest chi2 of the samples over the used bands.
    n_bands_fit : ndarray of int, shape (n,)
    ppc_p : ndarray, shape (n,)
        Posterior-predictive p-value of chi2 (NaN without a used band).
    """

    model_mag: np.ndarray
    chi2_best: np.ndarray
    n_bands_fit: np.ndarray
    ppc_p: np.ndarray


def posterior_photometry(model: ForwardModel, theta: np.ndarray, z: np.ndarray, n_fit: int,
                         dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Model fluxes of the first ``n_fit`` posterior samples of each galaxy.

    Parameters
    ----------
    model : ForwardModel
    theta : ndarray, shape (n, n_samples, d)
        Posterior samples of the model's parameters (NaN rows: none); clipped into the prior box.
    z : ndarray, shape (n,) or (n, n_samples)
        Redshift of each galaxy, or of each sample (photometric redshifts).
    n_fit : int
    dtype : numpy dtype
        Of the forward model's arithmetic.

    Returns
    -------
    model_flux : ndarray, shape (n, k, n_band)
        Nanomaggies, ``k = min(n_fit, n_samples)``; NaN for samples that are not ``valid``.
    valid : ndarray of bool, shape (n, k)
        Samples with finite parameters and redshift.
    """
    theta = np.asarray(theta, dtype=float)
    n, n_samples, _ = theta.shape
    k = min(n_fit, n_samples)
    if n == 0:
        return np.empty((0, k, len(model.bands.bands))), np.zeros((0, k), dtype=bool)
    z_samples = np.broadcast_to(np.asarray(z, dtype=float).reshape(n, -1), (n, n_samples))[:, :k]
    sub = theta[:, :k]
    valid = np.isfinite(sub).all(axis=2) & np.isfinite(z_samples)
    model_flux = np.full((n, k, len(model.bands.bands)), np.nan)
    if valid.any():
        inside = np.clip(sub[valid], model.prior.low, model.prior.high)
        model_flux[valid] = model.photometry(inside, z_samples[valid], dtype=dtype)
    return model_flux, valid


def fit_check(model: ForwardModel, theta: np.ndarray, z: np.ndarray, flux: np.ndarray, flux_sigma: np.ndarray,
              n_fit: int = FIT_SAMPLES) -> FitCheck:
    """Posterior-predictive photometry and its fit to the measured photometry.

    Parameters
    ----------
    model : ForwardModel
    theta : ndarray, shape (n, n_samples, d)
        Posterior samples of the model's parameters (NaN rows: none).
    z : ndarray, shape (n,) or (n, n_samples)
        Redshift of each galaxy, or of each sample (photometric redshifts).
    flux, flux_sigma : ndarray, shape (n, n_band)
        Measured fluxes and 1-sigma errors (nanomaggies, floor included); NaN for bands not measured.
    n_fit : int
        Samples per galaxy used (the first ones: the samples are exchangeable).
    """
    # Imported here: sedscale.validate imports this module (posterior_photometry) at package import.
    from ..validate.mcmc import photometry_chi2

    n, n_band = flux.shape
    out = FitCheck(np.full((n, n_band), np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int64), np.full(n, np.nan))
    model_flux, valid = posterior_photometry(model, theta, z, n_fit, dtype=np.float64)
    if not valid.any():
        return out
    chi2 = np.where(valid, photometry_chi2(model_flux, flux[:, None, :], flux_sigma[:, None, :]), np.nan)
    n_used = (np.isfinite(flux) & np.isfinite(flux_sigma) & (flux_sigma > 0)).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # galaxies without samples: all-NaN slices
        median_flux = np.nanmedian(model_flux, axis=1)
    chi2_median = photometry_chi2(median_flux, flux, flux_sigma)
    # Replicated photometry of a sample is its model plus Gaussian noise, so its chi2 follows chi2(n_used)
    # exactly: the tail probability replaces a Monte Carlo of replicas (whose 1/n_fit resolution would
    # flag ~2% of good fits at p = 0).
    tail = stats.chi2.sf(chi2, np.maximum(n_used, 1)[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        mags = nanomaggies_to_mag(np.where(model_flux > 0, model_flux, np.nan))
    rows = np.flatnonzero(valid.any(axis=1) & (n_used > 0))
    out.model_mag[rows] = np.nanmedian(mags[rows], axis=1)
    out.chi2_best[rows] = np.nanmin(chi2[rows], axis=1)
    out.n_bands_fit[:] = n_used
    # A posterior split between models that fit and models magnitudes away passes the mean tail
    # probability; the median model photometry must fit too.
    out.ppc_p[rows] = np.minimum(np.nanmean(tail[rows], axis=1), stats.chi2.sf(chi2_median[rows], n_used[rows]))
    return out
