"""Instrumental smoothing and resampling of observed spectra onto a model grid.

The physics between a spectrograph's pixels and a flow's wavelength grid:
the vacuum -> air wavelength conversion, the Gaussian kernel that brings an
instrumental resolution to a target one, and the kernel-weighted resampling
with inverse-variance propagation (:func:`smooth_resample`).  Readers of
survey spectra (:mod:`sedscale.io.sdss`) call these; the choices are
described there.
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf

from ..errors import ParameterError
from ..units import C_KMS
from .spectra import DIGS_SIGMA_V_KMS, DIGS_WAVELENGTH, KERNEL_TRUNCATE

__all__ = ["MIN_WEIGHT_FRACTION", "kernel_sigma_kms", "smooth_resample", "smoothing_weights", "vacuum_to_air"]

#: An element is good when its good pixels carry this fraction of the kernel.
MIN_WEIGHT_FRACTION = 0.8


def vacuum_to_air(wave_vac) -> np.ndarray:
    """Vacuum -> air wavelengths (Angstrom).

    The IAU standard of Morton (1991, ApJS 77, 119), as in the SDSS
    ``vactoair``: ``lambda_air = lambda_vac / n`` with
    ``n = 1 + 2.735182e-4 + 131.4182 / lambda^2 + 2.76249e8 / lambda^4``;
    wavelengths below 2000 A are vacuum by convention and returned unchanged.
    """
    wave_vac = np.asarray(wave_vac, dtype=float)
    index = 1.0 + 2.735182e-4 + 131.4182 / wave_vac**2 + 2.76249e8 / wave_vac**4
    return np.where(wave_vac >= 2000.0, wave_vac / index, wave_vac)


def kernel_sigma_kms(sigma_inst_kms: float, sigma_target_kms: float = DIGS_SIGMA_V_KMS) -> float:
    """Sigma of the Gaussian that broadens sigma_inst to sigma_target (km/s, in quadrature).

    Raises
    ------
    ParameterError
        If the data are already broader than the target.
    """
    if not np.isfinite(sigma_inst_kms) or sigma_inst_kms < 0:
        raise ParameterError(f"instrumental sigma must be finite and >= 0 km/s, got {sigma_inst_kms}")
    if sigma_inst_kms >= sigma_target_kms:
        raise ParameterError(
            f"instrumental sigma {sigma_inst_kms:.0f} km/s is not below the target {sigma_target_kms:.0f} km/s"
        )
    return float(np.sqrt(sigma_target_kms**2 - sigma_inst_kms**2))


def smoothing_weights(wave_in, good, wave_out, sigma_kms: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalized Gaussian-kernel weights of good input pixels for each output wavelength.

    The kernel is a Gaussian in ln(lambda) of sigma ``sigma_kms / c``, cut at
    :data:`~sedscale.observe.spectra.KERNEL_TRUNCATE` sigma, times the pixel
    width in ln(lambda) (so non-uniform grids are integrated correctly) and
    times ``lambda_in / lambda_out``: as in
    :func:`~sedscale.observe.spectra.smooth_velocity`, velocity broadening
    convolves ``lambda * f_lambda``.

    Parameters
    ----------
    wave_in : array_like, shape (n_in,)
        Strictly increasing input wavelengths (Angstrom).
    good : array_like of bool, shape (n_in,)
        Pixels that may contribute.
    wave_out : array_like, shape (n_out,)
        Output wavelengths (Angstrom).
    sigma_kms : float
        Kernel sigma (km/s), > 0.

    Returns
    -------
    weights : ndarray, shape (n_out, n_in)
        ``flux_out = weights @ flux_in``: the kernel values of a row sum to 1
        before the ``lambda_in / lambda_out`` factor; rows are zero where no
        good pixel is reached.
    weight_fraction : ndarray, shape (n_out,)
        Kernel integral carried by the good pixels over the full (truncated)
        Gaussian's: 1 well inside fully good data, ~0.5 at an end of the data.
    """
    wave_in = np.asarray(wave_in, dtype=float)
    wave_out = np.asarray(wave_out, dtype=float)
    good = np.asarray(good, dtype=bool)
    if wave_in.ndim != 1 or wave_in.size < 2 or np.any(np.diff(wave_in) <= 0) or np.any(wave_in <= 0):
        raise ParameterError("input wavelengths must be 1-d, positive and strictly increasing")
    if good.shape != wave_in.shape:
        raise ParameterError(f"good mask has shape {good.shape}, wavelengths {wave_in.shape}")
    if not np.isfinite(sigma_kms) or sigma_kms <= 0:
        raise ParameterError(f"kernel sigma must be finite and > 0 km/s, got {sigma_kms}")
    s = sigma_kms / C_KMS
    ln_in, ln_out = np.log(wave_in), np.log(wave_out)
    width = np.gradient(ln_in)
    # Evaluate the Gaussian only in each row's band of pixels within the cut.
    lo = np.searchsorted(ln_in, ln_out - KERNEL_TRUNCATE * s, side="left")
    hi = np.searchsorted(ln_in, ln_out + KERNEL_TRUNCATE * s, side="right")
    cols = lo[:, None] + np.arange(max(int(np.max(hi - lo, initial=0)), 1))[None, :]
    in_band = cols < hi[:, None]
    cols = np.minimum(cols, wave_in.size - 1)
    u = (ln_in[cols] - ln_out[:, None]) / s
    band = np.where(in_band & (np.abs(u) <= KERNEL_TRUNCATE), np.exp(-0.5 * u**2), 0.0) * width[cols] * good[cols]
    kernel = np.zeros((wave_out.size, wave_in.size))
    # Clipped out-of-band columns repeat the last pixel with zero weight: add, never overwrite.
    np.add.at(kernel, (np.broadcast_to(np.arange(wave_out.size)[:, None], cols.shape), cols), band)
    full = np.sqrt(2.0 * np.pi) * s * erf(KERNEL_TRUNCATE / np.sqrt(2.0))
    total = kernel.sum(axis=1)
    weight_fraction = total / full
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(total[:, None] > 0, kernel / total[:, None], 0.0)
    weights *= wave_in[None, :] / wave_out[:, None]
    return weights, weight_fraction


def smooth_resample(
    wave_in,
    flux,
    ivar,
    good,
    wave_out=DIGS_WAVELENGTH,
    sigma_kms: float = DIGS_SIGMA_V_KMS,
    min_weight_fraction: float = MIN_WEIGHT_FRACTION,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian-smooth and resample a spectrum with inverse-variance propagation.

    Each output is the kernel-weighted mean of the good input pixels
    (:func:`smoothing_weights`), and its variance is that of the weighted
    mean of independent pixels, ``sum_i w_i^2 / ivar_i``.  Masked pixels
    carry zero weight and never enter the variance.

    Parameters
    ----------
    wave_in : array_like, shape (n_in,)
        Strictly increasing wavelengths (Angstrom).
    flux : array_like, shape (..., n_in)
        f_lambda (any unit); leading axes are spectra sharing ``ivar``/``good``.
    ivar : array_like, shape (n_in,)
        Inverse variance of ``flux`` (unit^-2).
    good : array_like of bool, shape (n_in,)
        Usable pixels; pixels with ``ivar <= 0`` or non-finite values are
        dropped as well.
    wave_out : array_like, shape (n_out,)
        Output wavelengths (Angstrom), default the DIGS grid.
    sigma_kms : float
        Gaussian sigma (km/s) to apply.
    min_weight_fraction : float
        Outputs whose good pixels carry less of the kernel are not good.

    Returns
    -------
    flux_out : ndarray, shape (..., n_out)
        Smoothed f_lambda at ``wave_out``; NaN where no good pixel is reached.
    ivar_out : ndarray, shape (n_out,)
        Its inverse variance; 0 where no good pixel is reached.
    good_out : ndarray of bool, shape (n_out,)
    """
    flux = np.asarray(flux, dtype=float)
    ivar = np.asarray(ivar, dtype=float)
    if flux.shape[-1] != np.size(wave_in) or ivar.shape != (np.size(wave_in),):
        raise ParameterError(
            f"flux {flux.shape} and ivar {ivar.shape} must end with the {np.size(wave_in)} wavelengths"
        )
    good = np.asarray(good, dtype=bool) & np.isfinite(ivar) & (ivar > 0)
    good &= np.all(np.isfinite(flux.reshape(-1, flux.shape[-1])), axis=0)
    weights, weight_fraction = smoothing_weights(wave_in, good, wave_out, sigma_kms)
    reached = weights.any(axis=1)
    # Masked pixels have zero weight; zero their values too so NaNs cannot leak.
    flux_out = np.where(good, flux, 0.0) @ weights.T
    variance = (weights**2) @ np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
    ivar_out = np.where(reached, 1.0 / np.where(reached, variance, 1.0), 0.0)
    flux_out = np.where(reached, flux_out, np.nan)
    good_out = reached & (weight_fraction >= min_weight_fraction)
    return flux_out, ivar_out, good_out
