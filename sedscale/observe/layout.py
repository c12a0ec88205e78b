"""Column names and the layout of the observation vector ``x``.

This module is the single contract between simulation (Parquet columns),
training (what the flow is conditioned on) and catalog inference (how a
survey catalog is converted), so that the three agree by construction.

Photometric x (SEDflow): the five ugriz AB magnitudes, their 1-sigma
uncertainties in magnitudes, and the redshift -- 11 numbers.

Band-masked photometric x (the survey flows, :func:`masked_photometry_x`):
per band the AB magnitude, log10 of its uncertainty in magnitudes and a
0/1 "observed" indicator, then z -- 16 numbers for ugriz.  A band that is
missing (NaN flux, NaN or non-positive uncertainty) or measured at flux <= 0
is masked: indicator 0, log-sigma :data:`MISSING_LOG_SIGMA_MAG` and, as a
placeholder in the range of real values, the mean magnitude of the row's
observed bands.  Training draws the same masks, so the flow learns that a
masked band carries no information.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from ..units import flux_sigma_to_mag_sigma, nanomaggies_to_mag
from .filters import SDSS_BANDS
from .spectra import DIGS_N_PIXELS, DIGS_WAVELENGTH

#: Noisy observed flux (nanomaggies) and its 1-sigma error.
FLUX_COLUMNS = tuple(f"flux_{b}" for b in SDSS_BANDS)
FLUX_SIGMA_COLUMNS = tuple(f"flux_sigma_{b}" for b in SDSS_BANDS)
#: Noiseless model flux (nanomaggies), kept for diagnostics.
FLUX_TRUE_COLUMNS = tuple(f"flux_true_{b}" for b in SDSS_BANDS)
#: AB magnitude of the noisy flux and its 1-sigma error (magnitudes).
MAG_COLUMNS = tuple(f"mag_{b}" for b in SDSS_BANDS)
MAG_SIGMA_COLUMNS = tuple(f"sigma_{b}" for b in SDSS_BANDS)
REDSHIFT_COLUMN = "z"
#: The conditioning vector of photometric flows, in order.
PHOTOMETRY_X_COLUMNS = MAG_COLUMNS + MAG_SIGMA_COLUMNS + (REDSHIFT_COLUMN,)
X_UNITS = {**{c: "mag(AB)" for c in MAG_COLUMNS}, **{c: "mag" for c in MAG_SIGMA_COLUMNS}, "z": ""}

# --------------------------------------------------- band-masked photometry
LOG_SIGMA_COLUMNS = tuple(f"log_sigma_{b}" for b in SDSS_BANDS)
OBSERVED_COLUMNS = tuple(f"observed_{b}" for b in SDSS_BANDS)
#: The conditioning vector of band-masked photometric flows, in order.
MASKED_PHOTOMETRY_X_COLUMNS = MAG_COLUMNS + LOG_SIGMA_COLUMNS + OBSERVED_COLUMNS + (REDSHIFT_COLUMN,)
#: log10 of the magnitude uncertainty given to a masked band (10 mag: no information).
MISSING_LOG_SIGMA_MAG = 1.0
#: Fewest usable bands for a posterior.
MIN_BANDS = 3


def masked_photometry_x(flux, flux_sigma, z, error_floor: float = 0.0):
    """Band-masked flow inputs from fluxes, their uncertainties and redshifts.

    The single conversion used by training (simulated noisy fluxes) and
    catalog inference (survey fluxes), so that both see the same x.

    Parameters
    ----------
    flux, flux_sigma : array_like, shape (n, n_band)
        Fluxes and 1-sigma uncertainties in nanomaggies; a band with a
        non-finite value, ``flux_sigma <= 0`` or ``flux <= 0`` is masked.
    z : array_like, shape (n,)
    error_floor : float
        Magnitudes added in quadrature to every uncertainty (calibration).

    Returns
    -------
    x : ndarray, shape (n, 3 n_band + 1), float32
        :data:`MASKED_PHOTOMETRY_X_COLUMNS` order; NaN rows where not ``valid``.
    used : ndarray of bool, shape (n, n_band)
        Bands that entered x.
    valid : ndarray of bool, shape (n,)
        At least :data:`MIN_BANDS` usable bands and a finite z.
    """
    flux = np.asarray(flux, dtype=np.float64)
    flux_sigma = np.asarray(flux_sigma, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if flux.ndim != 2 or flux_sigma.shape != flux.shape or z.shape != (flux.shape[0],):
        raise ParameterError(f"flux and flux_sigma must be (n, n_band) and z (n,); got {flux.shape}, "
                             f"{flux_sigma.shape}, {z.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        used = np.isfinite(flux) & np.isfinite(flux_sigma) & (flux_sigma > 0) & (flux > 0)
        mag = np.where(used, nanomaggies_to_mag(flux), np.nan)
        sigma = np.sqrt(flux_sigma_to_mag_sigma(flux, flux_sigma) ** 2 + float(error_floor) ** 2)
        n_used = used.sum(axis=1)
        valid = (n_used >= MIN_BANDS) & np.isfinite(z)
        fill = np.nansum(np.where(used, mag, 0.0), axis=1) / np.maximum(n_used, 1)
        mag = np.where(used, mag, fill[:, None])
        log_sigma = np.where(used, np.log10(sigma), MISSING_LOG_SIGMA_MAG)
    x = np.concatenate([mag, log_sigma, used.astype(np.float64), z[:, None]], axis=1)
    x[~valid] = np.nan
    return x.astype(np.float32), used, valid

# ----------------------------------------------------------------- spectra
# Spectral x (sedscale's choice, docs/spectra.md): the flow sees the *shape*
# and the *amplitude* separately -- log10 of the mean L_lambda in a fixed
# rest-frame window, the spectrum divided by it, and log10 of the per-element
# uncertainty divided by it.  DIGS fed the absolute spectrum (mass in the
# amplitude, a 5-dex dynamic range across the prior); normalized inputs keep
# every element O(1) so that one network serves all masses, while the
# amplitude, which carries the mass, stays one exact input.  Elements that
# are not observed get flux 0 and MISSING_LOG_SIGMA, an uncertainty ten
# times the normalization: "no information", learned from masked training
# spectra.

#: Noiseless rest-frame L_lambda (Lsun/A) of a simulated spectrum: a
#: fixed-size list column of the DIGS length.
SPECTRUM_TRUE_COLUMN = "spec_true"
LOG_NORM_COLUMN = "log_lnorm"
#: Rest-frame window (Angstrom) of the normalization; inside every
#: SDSS-I/II spectrum up to z ~ 0.4.
NORM_WINDOW_AA = (4500.0, 6500.0)
#: Fewest observed elements in the window for a usable normalization.
MIN_NORM_ELEMENTS = 5
MISSING_LOG_SIGMA = 1.0


def _spectrum_x_columns(n_pixels: int) -> tuple[str, ...]:
    return (
        (LOG_NORM_COLUMN,)
        + tuple(f"fnorm_{i:03d}" for i in range(n_pixels))
        + tuple(f"lsig_{i:03d}" for i in range(n_pixels))
    )


def normalization_window(wave) -> np.ndarray:
    """Boolean mask of the elements of ``wave`` (Angstrom) inside :data:`NORM_WINDOW_AA`."""
    wave = np.asarray(wave, dtype=float)
    return (wave >= NORM_WINDOW_AA[0]) & (wave <= NORM_WINDOW_AA[1])


def spectrum_x(flux, sigma, good, wave=None):
    """Spectral flow inputs from spectra, uncertainties and observed elements.

    Parameters
    ----------
    flux, sigma : array_like, shape (n, m)
        Rest-frame L_lambda and its 1-sigma uncertainty (Lsun/A).
    good : array_like of bool, shape (n, m)
        Elements to use; others are ignored whatever their values.
    wave : array_like, shape (m,), optional
        Rest-frame wavelengths (Angstrom); default the DIGS grid.

    Returns
    -------
    x : ndarray, shape (n, 1 + 2 m), float32
        :data:`SPECTRUM_X_COLUMNS` order; NaN rows where ``valid`` is False.
    valid : ndarray of bool, shape (n,)
        False when fewer than :data:`MIN_NORM_ELEMENTS` good elements lie in
        the normalization window or their mean flux is not positive.
    """
    wave = DIGS_WAVELENGTH if wave is None else np.asarray(wave, dtype=float)
    flux = np.asarray(flux, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    good = np.asarray(good, dtype=bool) & np.isfinite(flux) & np.isfinite(sigma) & (sigma > 0)
    if flux.ndim != 2 or flux.shape[1] != wave.size or sigma.shape != flux.shape or good.shape != flux.shape:
        raise ParameterError(f"flux, sigma and good must have shape (n, {wave.size}); got {flux.shape}, "
                         f"{sigma.shape}, {good.shape}")
    window = good & normalization_window(wave)[None, :]
    count = window.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(window, flux, 0.0).sum(axis=1) / count
        valid = (count >= MIN_NORM_ELEMENTS) & (norm > 0)
        scale = np.where(valid, norm, np.nan)[:, None]
        fnorm = np.where(good, flux / scale, 0.0)
        lsig = np.where(good, np.log10(sigma / scale), MISSING_LOG_SIGMA)
        x = np.concatenate([np.log10(scale), fnorm, lsig], axis=1)
    x[~valid] = np.nan
    return x.astype(np.float32), valid


def drop_elements(x, keep) -> np.ndarray:
    """Spectral x with the elements where ``keep`` is False marked missing.

    Parameters
    ----------
    x : array_like, shape (n, 1 + 2 m)
        :func:`spectrum_x` output.
    keep : array_like of bool, shape (m,)

    Returns
    -------
    ndarray
        A copy; the normalization is unchanged (it comes from 4500-6500 A).
    """
    x = np.array(x, dtype=np.float32)
    keep = np.asarray(keep, dtype=bool)
    m = keep.size
    if x.ndim != 2 or x.shape[1] != 1 + 2 * m:
        raise ParameterError(f"x must have shape (n, {1 + 2 * m}), got {x.shape}")
    drop = np.flatnonzero(~keep)
    valid = np.isfinite(x[:, 0])
    x[np.ix_(valid, 1 + drop)] = 0.0
    x[np.ix_(valid, 1 + m + drop)] = MISSING_LOG_SIGMA
    return x


#: The conditioning vector of spectral flows, in order (277 numbers).
SPECTRUM_X_COLUMNS = _spectrum_x_columns(DIGS_N_PIXELS)
SPECTRUM_X_UNITS = {LOG_NORM_COLUMN: "dex(Lsun/Angstrom)", **{c: "" for c in SPECTRUM_X_COLUMNS[1:]}}
#: What the flow is conditioned on, recorded in data and checkpoints.
OBSERVABLES = ("photometry", "spectrum")
