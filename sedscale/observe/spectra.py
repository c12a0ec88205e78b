"""DIGS spectral observation operator (Khullar et al. 2022).

DIGS smooths its model spectra with a Gaussian of velocity dispersion
sigma_v = 350 km/s ("R ~ 100") and resamples them onto 138 flux elements
covering rest-frame 3750-9500 A, using Prospector's ``smoothspec`` (smooth in
ln(lambda), then linear interpolation).  This module reproduces that data
vector as a batched linear operator:

1. the forward model computes bin-averaged rest-frame L_lambda on a fine
   log-uniform library grid (:data:`SPECTRUM_WAVE_EDGES`, 50 km/s pixels,
   3400-10500 A, so that the Gaussian never reaches the ends of the grid);
2. :func:`smooth_velocity` convolves with the velocity Gaussian;
3. :func:`resample` interpolates onto :data:`DIGS_WAVELENGTH`.

Steps 2 and 3 are linear and independent of the galaxy, so
:class:`SpectrumOperator` folds them into one (n_fine, 138) matrix and a
batch of spectra costs one matrix product.

Conventions
-----------
* Wavelengths in Angstrom, rest frame; L_lambda in Lsun/A (the model's
  output); observed f_lambda in units of 1e-17 erg/s/cm^2/A
  (:data:`FLAMBDA_UNIT_CGS`, the SDSS spectro unit).
* The DIGS grid is log-uniform: a constant-velocity kernel then spans the same
  number of pixels everywhere (constant resolution R = lambda/dlambda ~ 147
  per pixel), as for a spectrum binned in velocity.  Its pixels (~2,030 km/s)
  are ~6 sigma_v wide, so the DIGS data vector *undersamples* the 350 km/s
  line-spread function: interpolation picks point samples of the smoothed
  spectrum, and an emission line between two pixels is strongly suppressed
  (H-alpha at 6563 A lies half a pixel from the nearest node).  This is the
  paper's data model; ``method="average"`` instead integrates the smoothed
  spectrum over each output pixel (what a detector does) and keeps line flux.
* The 350 km/s smoothing is the *total* broadening (DIGS: "to account for
  stellar velocities and the resolution of the model libraries"); the
  library's own resolution (MILES ~2.5 A FWHM, i.e. sigma ~ 80 km/s at
  4000 A) is not subtracted in quadrature.  Redward of ~8,500 A the BC03
  library is tabulated every 20 A (~700 km/s), so features there are broader
  than 350 km/s before any smoothing.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..cosmology import DEFAULT_COSMOLOGY, cosmology_table
from ..errors import ParameterError
from ..sps.rebin import log_wavelength_edges
from ..units import C_KMS, LSUN_ERG_S

#: DIGS output grid: 138 log-uniform rest-frame wavelengths, 3750-9500 A.
DIGS_N_PIXELS = 138
DIGS_WAVELENGTH = np.geomspace(3750.0, 9500.0, DIGS_N_PIXELS)
#: DIGS velocity dispersion of the Gaussian smoothing kernel (km/s, sigma not FWHM).
DIGS_SIGMA_V_KMS = 350.0
#: Pixel width of the fine rest-frame library grid (km/s).
SPECTRUM_PIXEL_KMS = 50.0
_FINE_MIN_AA, _FINE_MAX_AA = 3400.0, 10500.0
#: Fine log-uniform library grid edges (Angstrom): ~6,760 pixels of 50 km/s.
SPECTRUM_WAVE_EDGES = log_wavelength_edges(
    _FINE_MIN_AA, _FINE_MAX_AA, int(round(np.log(_FINE_MAX_AA / _FINE_MIN_AA) * C_KMS / SPECTRUM_PIXEL_KMS))
)
#: Observed f_lambda unit in erg/s/cm^2/A.
FLAMBDA_UNIT_CGS = 1e-17
#: The Gaussian kernel is cut at this many sigma (scipy's ``truncate``).
KERNEL_TRUNCATE = 5.0
#: Largest relative deviation of d ln(lambda) from uniform accepted as log-uniform.
_LOG_UNIFORM_RTOL = 1e-6
_CHUNK = 2048
METHODS = ("interpolate", "average")


def log_step(wave_log: np.ndarray) -> float:
    """Constant ln(lambda) step of a log-uniform grid.

    Raises
    ------
    ParameterError
        If the grid is not strictly increasing and log-uniform.
    """
    wave_log = np.asarray(wave_log, dtype=float)
    if wave_log.ndim != 1 or wave_log.size < 2 or np.any(wave_log <= 0):
        raise ParameterError("wavelength grid must be 1-d, positive, with at least 2 points")
    dln = np.diff(np.log(wave_log))
    step = float(dln.mean())
    if step <= 0 or np.max(np.abs(dln - step)) > _LOG_UNIFORM_RTOL * step:
        raise ParameterError("wavelength grid must be strictly increasing and uniform in ln(lambda)")
    return step


def _gaussian_rows(values: np.ndarray, sigma_pix: float, axis: int) -> np.ndarray:
    # Reflecting boundaries with a symmetric, normalized kernel make the
    # smoothing matrix symmetric and doubly stochastic: the pixel sum is
    # conserved exactly, even next to the ends of the grid.
    return gaussian_filter1d(values, sigma_pix, axis=axis, mode="reflect", truncate=KERNEL_TRUNCATE)


def smooth_velocity(wave_log, flux, sigma_v_kms: float) -> np.ndarray:
    """Broaden spectra by a Gaussian line-of-sight velocity distribution.

    Velocity broadening shifts ln(lambda) by ln(1 + v/c) and conserves energy,
    so it is an exact convolution of ``lambda * f_lambda`` (energy per unit
    ln(lambda)) along ln(lambda): we convolve ``lambda * flux``, then divide by
    ``lambda``.  This conserves ``sum(flux * dlambda)`` over the grid exactly
    (pixel widths of a log-uniform grid are proportional to lambda).

    Parameters
    ----------
    wave_log : array_like, shape (n_wave,)
        Log-uniform wavelength grid (Angstrom), e.g. bin centres of
        :data:`SPECTRUM_WAVE_EDGES`.
    flux : array_like, shape (..., n_wave)
        Flux or luminosity density per Angstrom; any leading batch shape.
    sigma_v_kms : float
        Velocity dispersion (sigma, not FWHM) in km/s; 0 returns a copy.

    Returns
    -------
    ndarray, shape (..., n_wave)
        Smoothed spectra in the units (and float dtype) of ``flux``.
    """
    step = log_step(wave_log)
    flux = np.asarray(flux)
    if not np.issubdtype(flux.dtype, np.floating):
        flux = flux.astype(np.float64)
    if flux.shape[-1] != np.size(wave_log):
        raise ParameterError(f"flux has {flux.shape[-1]} wavelengths, grid has {np.size(wave_log)}")
    if not np.isfinite(sigma_v_kms) or sigma_v_kms < 0:
        raise ParameterError(f"sigma_v_kms must be finite and >= 0, got {sigma_v_kms}")
    if sigma_v_kms == 0:
        return flux.copy()
    # Relative wavelength keeps lambda * flux in the dynamic range of float32.
    rel = (np.asarray(wave_log, dtype=float) / wave_log[0]).astype(flux.dtype)
    sigma_pix = sigma_v_kms / (C_KMS * step)
    return _gaussian_rows(flux * rel, sigma_pix, axis=-1) / rel


def _interpolation_weights(wave_in: np.ndarray, wave_out: np.ndarray):
    """Left input index and weight of the right neighbour for each output wavelength."""
    _check_coverage(wave_in, wave_out)
    i = np.clip(np.searchsorted(wave_in, wave_out, side="right") - 1, 0, wave_in.size - 2)
    return i, (wave_out - wave_in[i]) / (wave_in[i + 1] - wave_in[i])


def _interpolation_matrix(wave_in: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    """Dense (n_out, n_in) matrix of linear interpolation weights."""
    i, w = _interpolation_weights(wave_in, wave_out)
    matrix = np.zeros((wave_out.size, wave_in.size))
    rows = np.arange(wave_out.size)
    matrix[rows, i] = 1.0 - w
    matrix[rows, i + 1] += w
    return matrix


def _check_coverage(wave_in: np.ndarray, wave_out: np.ndarray) -> None:
    if wave_in.ndim != 1 or wave_in.size < 2 or np.any(np.diff(wave_in) <= 0):
        raise ParameterError("input wavelengths must be 1-d and strictly increasing")
    if wave_out.size == 0 or wave_out.min() < wave_in[0] or wave_out.max() > wave_in[-1]:
        raise ParameterError(
            f"output grid [{wave_out.min() if wave_out.size else np.nan:.1f}, "
            f"{wave_out.max() if wave_out.size else np.nan:.1f}] A is outside the input coverage "
            f"[{wave_in[0]:.1f}, {wave_in[-1]:.1f}] A"
        )


def resample(wave_in, flux_in, wave_out) -> np.ndarray:
    """Linearly interpolate spectra onto a new wavelength grid.

    This is the resampling step of Prospector's ``smoothspec`` (``np.interp``
    of the smoothed spectrum), batched over leading axes.

    Parameters
    ----------
    wave_in : array_like, shape (n_in,)
        Strictly increasing input wavelengths (Angstrom).
    flux_in : array_like, shape (..., n_in)
    wave_out : array_like, shape (n_out,)
        Output wavelengths, inside ``[wave_in[0], wave_in[-1]]``.

    Returns
    -------
    ndarray, shape (..., n_out)

    Raises
    ------
    ParameterError
        If ``wave_out`` reaches outside the input coverage (no extrapolation).
    """
    wave_in = np.asarray(wave_in, dtype=float)
    wave_out = np.asarray(wave_out, dtype=float)
    flux_in = np.asarray(flux_in)
    if flux_in.shape[-1] != wave_in.size:
        raise ParameterError(f"flux has {flux_in.shape[-1]} wavelengths, grid has {wave_in.size}")
    i, w = _interpolation_weights(wave_in, wave_out)
    return flux_in[..., i] * (1.0 - w) + flux_in[..., i + 1] * w


def pixel_edges(wave_log: np.ndarray) -> np.ndarray:
    """Edges of the pixels centred (geometrically) on a log-uniform grid."""
    step = log_step(wave_log)
    lnw = np.log(np.asarray(wave_log, dtype=float))
    return np.exp(np.concatenate([lnw - 0.5 * step, [lnw[-1] + 0.5 * step]]))


def _averaging_matrix(edges_in: np.ndarray, edges_out: np.ndarray) -> np.ndarray:
    """Dense (n_out, n_in) matrix averaging piecewise-constant bins over output bins."""
    if edges_out[0] < edges_in[0] or edges_out[-1] > edges_in[-1]:
        raise ParameterError(
            f"output pixels [{edges_out[0]:.1f}, {edges_out[-1]:.1f}] A are outside the input "
            f"coverage [{edges_in[0]:.1f}, {edges_in[-1]:.1f}] A"
        )
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    overlap = np.clip(hi - lo, 0.0, None)
    return overlap / np.diff(edges_out)[:, None]


class SpectrumOperator:
    """Fine rest-frame spectra -> smoothed DIGS data vectors.

    Parameters
    ----------
    sigma_v_kms : float
        Gaussian velocity dispersion of the smoothing (km/s).
    wave_out : array_like
        Output rest-frame wavelengths (Angstrom); log-uniform when
        ``method="average"``.
    wave_edges : array_like
        Log-uniform edges of the fine library grid the model is evaluated on.
    method : {"interpolate", "average"}
        ``"interpolate"`` samples the smoothed spectrum at ``wave_out`` (DIGS /
        Prospector); ``"average"`` averages it over pixels centred on
        ``wave_out`` (flux conserving).

    Attributes
    ----------
    matrix : ndarray, shape (n_fine, n_out)
        ``model_lum @ matrix`` is the smoothed, resampled spectrum.
    """

    def __init__(
        self,
        sigma_v_kms: float = DIGS_SIGMA_V_KMS,
        wave_out=DIGS_WAVELENGTH,
        wave_edges=SPECTRUM_WAVE_EDGES,
        method: str = "interpolate",
    ):
        if method not in METHODS:
            raise ParameterError(f"method must be one of {METHODS}, got {method!r}")
        self.sigma_v_kms = float(sigma_v_kms)
        self.wave_out = np.asarray(wave_out, dtype=float)
        self.wave_edges = np.asarray(wave_edges, dtype=float)
        self.method = method
        self.wave_fine = np.sqrt(self.wave_edges[1:] * self.wave_edges[:-1])
        step = log_step(self.wave_fine)
        if method == "interpolate":
            sampling = _interpolation_matrix(self.wave_fine, self.wave_out)
            reach = (self.wave_out[0], self.wave_out[-1])
        else:
            out_edges = pixel_edges(self.wave_out)
            sampling = _averaging_matrix(self.wave_edges, out_edges)
            reach = (out_edges[0], out_edges[-1])
        self._check_margins(reach, step)
        self.matrix = self._compose(sampling, step)

    def _check_margins(self, reach, step: float) -> None:
        # Outputs must not feel the grid boundary, where the reflection would
        # fold flux back instead of continuing the spectrum.
        margin = KERNEL_TRUNCATE * self.sigma_v_kms / C_KMS + 2 * step
        lo = self.wave_fine[0] * np.exp(margin)
        hi = self.wave_fine[-1] * np.exp(-margin)
        if reach[0] < lo or reach[1] > hi:
            raise ParameterError(
                f"output range [{reach[0]:.1f}, {reach[1]:.1f}] A needs a library grid extending "
                f"{KERNEL_TRUNCATE:g} sigma_v beyond it, i.e. within [{lo:.1f}, {hi:.1f}] A"
            )

    def _compose(self, sampling: np.ndarray, step: float) -> np.ndarray:
        """(n_fine, n_out) matrix of ``sampling @ smooth``.

        With x = lambda/lambda_0 and the symmetric Gaussian matrix G,
        smoothing is ``diag(1/x) G diag(x)``; its transpose applied to the
        sampling rows is ``diag(x) G diag(1/x) sampling.T`` - one Gaussian
        filter over n_out columns instead of over n_fine unit vectors.
        """
        if self.sigma_v_kms == 0:
            return np.ascontiguousarray(sampling.T)
        rel = self.wave_fine / self.wave_fine[0]
        sigma_pix = self.sigma_v_kms / (C_KMS * step)
        columns = _gaussian_rows(sampling.T / rel[:, None], sigma_pix, axis=0)
        return np.ascontiguousarray(columns * rel[:, None])

    @property
    def n_pixels(self) -> int:
        return self.wave_out.size

    def project(self, lum) -> np.ndarray:
        """Smooth and resample fine-grid spectra.

        Parameters
        ----------
        lum : array_like, shape (..., n_fine)
            L_lambda on the fine grid (any units per Angstrom).

        Returns
        -------
        ndarray, shape (..., n_out)
            Same units; float32 input stays float32.
        """
        lum = np.asarray(lum)
        if lum.shape[-1] != self.wave_fine.size:
            raise ParameterError(
                f"spectra have {lum.shape[-1]} wavelengths, the operator expects {self.wave_fine.size}"
            )
        dtype = lum.dtype if lum.dtype == np.float32 else np.float64
        return lum.astype(dtype, copy=False) @ self.matrix.astype(dtype, copy=False)

    def model_spectra(self, model, theta, z, dtype=np.float32) -> np.ndarray:
        """Noiseless DIGS spectra of a forward model.

        Parameters
        ----------
        model : sedscale.models.ForwardModel
            Any model with ``rest_spectrum(theta, z, wave_edges=..., dtype=...)``.
        theta : array_like, shape (n, d)
            Sampling-space parameters.
        z : array_like, shape (n,) or scalar
            Redshift (caps the population age at the age of the universe).

        Returns
        -------
        ndarray, shape (n, n_out)
            Rest-frame L_lambda in Lsun/A at :attr:`wave_out`.
        """
        matrix = self.matrix.astype(dtype)
        return _chunked_spectra(model, theta, z, self.wave_edges, self.n_pixels, dtype, lambda lum, sl: lum @ matrix)


def _chunked_spectra(model, theta, z, wave_edges, n_out: int, dtype, project) -> np.ndarray:
    """``project(fine_lum, rows)`` of the model's fine-grid spectra, in chunks of :data:`_CHUNK` galaxies."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    z = np.asarray(z, dtype=float)
    if z.ndim == 0:
        z = np.full(theta.shape[0], float(z))
    if z.shape != (theta.shape[0],):
        raise ParameterError(f"z must have shape ({theta.shape[0]},), got {z.shape}")
    out = np.empty((theta.shape[0], n_out), dtype=dtype)
    # Chunks bound the (chunk, n_fine) intermediate to ~55 MB in float32.
    for s in range(0, theta.shape[0], _CHUNK):
        sl = slice(s, s + _CHUNK)
        _, lum = model.rest_spectrum(theta[sl], z[sl], wave_edges=wave_edges, dtype=dtype)
        out[sl] = project(lum, sl)
    return out


#: Stellar velocity dispersions (km/s) at which :class:`BroadenedSpectrumOperator` tabulates its operators.
SIGMA_STAR_NODES_KMS = np.arange(0.0, 401.0, 50.0)


class BroadenedSpectrumOperator:
    """DIGS spectra of galaxies with a stellar velocity dispersion ``sigma_star``.

    The data reader smooths a spectrum to 350 km/s *on top of* the
    instrument (:func:`sedscale.io.sdss.kernel_sigma_kms`), so a galaxy whose
    stars move with dispersion sigma_star appears broadened by
    ``hypot(350, sigma_star)`` (375-460 km/s for sigma_star = 130-300).
    Spectral models of real galaxies draw sigma_star and are marginalised
    over it by the flow.  Gaussian widths add in quadrature, so the operator
    is interpolated linearly in the kernel *variance* between operators
    tabulated at :data:`SIGMA_STAR_NODES_KMS`: the interpolated kernel has the
    exact second moment; its shape differs from a Gaussian's, changing the
    elements by < 0.5% at the sharpest features (nebular lines) between
    nodes 50 km/s apart (``tests/test_real_spectra.py``), a quarter of the
    2% error floor of the spectral models that use it, and a departure
    smaller than that of real line-of-sight velocity distributions from a
    Gaussian.

    Parameters
    ----------
    nodes_kms : array_like
        Increasing sigma_star nodes (km/s), starting at 0.
    **kwargs
        :class:`SpectrumOperator` arguments other than ``sigma_v_kms``.
    """

    def __init__(self, nodes_kms=SIGMA_STAR_NODES_KMS, base_sigma_kms: float = DIGS_SIGMA_V_KMS, **kwargs):
        self.nodes_kms = np.asarray(nodes_kms, dtype=float)
        if self.nodes_kms.ndim != 1 or self.nodes_kms.size < 2 or np.any(np.diff(self.nodes_kms) <= 0):
            raise ParameterError("sigma_star nodes must be increasing, at least two")
        self.base_sigma_kms = float(base_sigma_kms)
        self.operators = [SpectrumOperator(float(np.hypot(base_sigma_kms, s)), **kwargs) for s in self.nodes_kms]
        self.wave_out = self.operators[0].wave_out
        self.wave_edges = self.operators[0].wave_edges
        self._variance = np.hypot(base_sigma_kms, self.nodes_kms) ** 2

    @property
    def sigma_star_range(self) -> tuple[float, float]:
        return float(self.nodes_kms[0]), float(self.nodes_kms[-1])

    def _weights(self, sigma_star) -> tuple[np.ndarray, np.ndarray]:
        sigma_star = np.asarray(sigma_star, dtype=float)
        lo, hi = self.sigma_star_range
        if not np.all((sigma_star >= lo) & (sigma_star <= hi)):
            raise ParameterError(f"sigma_star must lie in [{lo:g}, {hi:g}] km/s")
        var = self.base_sigma_kms**2 + sigma_star**2
        k = np.clip(np.searchsorted(self._variance, var, side="right") - 1, 0, self.nodes_kms.size - 2)
        w = (var - self._variance[k]) / (self._variance[k + 1] - self._variance[k])
        return k, w

    def project(self, lum, sigma_star) -> np.ndarray:
        """Smooth and resample fine-grid spectra ``lum`` (n, n_fine) of dispersions ``sigma_star`` (n,)."""
        lum = np.asarray(lum)
        k, w = self._weights(sigma_star)
        dtype = lum.dtype if lum.dtype == np.float32 else np.float64
        out = np.empty((lum.shape[0], self.wave_out.size), dtype=dtype)
        # Each spectrum needs only its two neighbouring operators: one pair of products per node interval.
        for j in np.unique(k):
            rows = np.flatnonzero(k == j)
            a = self.operators[j].project(lum[rows])
            b = self.operators[j + 1].project(lum[rows])
            out[rows] = a + w[rows, None].astype(dtype) * (b - a)
        return out

    def model_spectra(self, model, theta, z, sigma_star, dtype=np.float32) -> np.ndarray:
        """Noiseless spectra (n, n_out) in Lsun/A of galaxies broadened by ``sigma_star`` (n,) km/s.

        See :meth:`SpectrumOperator.model_spectra`.
        """
        sigma_star = np.broadcast_to(np.asarray(sigma_star, dtype=float), (np.atleast_2d(theta).shape[0],))
        self._weights(sigma_star)
        return _chunked_spectra(model, theta, z, self.wave_edges, self.wave_out.size, dtype,
                                lambda lum, sl: self.project(lum, sigma_star[sl]))


def observed_flambda(lum, z, cosmology: str = DEFAULT_COSMOLOGY) -> np.ndarray:
    """Rest-frame L_lambda -> observed-frame f_lambda.

    ``f_lambda(lambda_obs) = L_lambda(lambda_rest) / (4 pi d_L^2 (1 + z))`` with
    ``lambda_obs = (1 + z) lambda_rest``: element i of the result is the flux
    density at the observed wavelength ``(1 + z) * wave_rest[i]``.

    Parameters
    ----------
    lum : array_like, shape (n, n_wave) or (n_wave,)
        Rest-frame L_lambda in Lsun/A.
    z : array_like, shape (n,) or scalar
        Redshift, in ``(0, z_max]`` of the cosmology table.
    cosmology : str
        Astropy cosmology realization for the luminosity distance.

    Returns
    -------
    ndarray
        Observed f_lambda in 1e-17 erg/s/cm^2/A, shape of ``lum``.
    """
    lum = np.asarray(lum, dtype=float)
    z = np.asarray(z, dtype=float)
    if z.ndim > 1 or (z.ndim == 1 and (lum.ndim != 2 or z.size != lum.shape[0])):
        raise ParameterError(f"z of shape {z.shape} does not match spectra of shape {lum.shape}")
    d_l = cosmology_table(cosmology).luminosity_distance_cm(z)
    scale = LSUN_ERG_S / (4.0 * np.pi * d_l**2 * (1.0 + z) * FLAMBDA_UNIT_CGS)
    return lum * (scale[:, None] if z.ndim == 1 else scale)
