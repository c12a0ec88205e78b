"""Noise and coverage of simulated spectra (DIGS data vectors).

A simulated spectrum is stored noiseless (rest-frame L_lambda in Lsun/A on
:data:`~sedscale.observe.spectra.DIGS_WAVELENGTH`); noise is added when the
training loader reads it, with fresh draws every epoch.  That is the DIGS
augmentation (each noiseless spectrum reused with new noise, 10^4 ->
2x10^6 rows) without storing the copies.

Two kinds, both returning the noisy spectrum, the per-element 1-sigma
uncertainty the flow is told, and which elements are observed:

``fractional`` (DIGS)
    ``sigma_i = fraction * |f_true,i|`` (5%: S/N ~ 20), every element
    observed.  The uncertainty the flow sees is ``fraction * |f_noisy,i|``,
    what an observer could compute; the noiseless-flux version would hand
    the flow the true spectrum through the uncertainty channel.
``survey`` (real spectra, the default of sedscale's spectral flows)
    Spans what the SDSS reader delivers (:mod:`sedscale.io.sdss`).  Per
    spectrum: a signal-to-noise ratio per element at the normalization
    window, log-uniform in ``snr_range`` (the six shared SDSS spectra have
    29-208); a power-law tilt ``sigma ~ (lambda / 5500 A)^t`` with
    ``t ~ U(tilt_range)`` (their blue/red ratios are 1.0-1.4); a Poisson
    index ``p ~ U(poisson_range)`` with ``sigma ~ |f|^(p/2)`` (0: sky or
    read noise dominates, 1: the galaxy's photons, 2: a fixed fraction of
    the flux, the DIGS model); and the rest-frame coverage of an observed
    range ``observed_range_aa`` for a redshift ``~ U(mask_z_range)``
    (SDSS-I/II, 3800-9200 A observed: the reddest 8-15 DIGS elements are
    missing at z = 0.02-0.06, all above 9200 A rest), plus isolated bad
    elements at ``gap_rate`` (masked pixels) and elements with ``spike_range``
    times the noise at ``spike_rate`` (sky-line residuals).  The noise is
    drawn with the uncertainty of the noiseless flux; the flow is told the
    uncertainty computed from the *noisy* flux, as a pipeline does, so the
    uncertainty channel never carries the noiseless spectrum.

Real galaxies need three more terms (all off in the ``digs`` and ``survey``
presets, on in ``real``), each applied identically when training and at
inference (:meth:`SpectralNoiseModel.observed_sigma`,
:meth:`SpectralNoiseModel.calibrate`):

* a **flux-calibration polynomial**: the spectrum is multiplied by
  ``1 + sum_k c_k P_k(x)`` (Legendre polynomials of order 1..K over the
  grid's ln(lambda) range, ``c_k ~ N(0, calibration_sigma)``), as the
  multiplicative polynomials of ppxf and Prospector's calibration vector;
  the flow is marginalised over it, so broad-band shape (a few per cent of
  tilt, SDSS-I/II spectrophotometry) does not decide age and dust;
* an **error floor**: a fraction ``error_floor`` of the flux added in
  quadrature to the uncertainty (noise drawn with it and the flow told it),
  the photometric ``--error-floor`` for spectra: model-library and
  calibration residuals of ~1-2% per element that no SPS model removes at
  S/N ~ 150;
* an **emission-line mask**: elements within ``line_mask_kms`` of the
  strong nebular lines (:data:`EMISSION_LINES_AA`) are never observed, so
  line strengths that the fixed log U = -2 nebular model cannot follow
  (AGN, shocks, metal-poor HII regions) do not enter the posterior.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, ParameterError
from ..options import check_option_keys
from ..units import C_KMS
from .layout import normalization_window
from .spectra import DIGS_WAVELENGTH

KINDS = ("fractional", "survey")
#: Reference wavelength of the uncertainty tilt (Angstrom).
TILT_PIVOT_AA = 5500.0
#: Strong nebular emission lines masked by ``line_mask_kms`` (air, Angstrom): [NeIII] 3869, H-beta,
#: [OIII] 4959/5007, HeI 5876, [OI] 6300, [NII] 6548/6584, H-alpha, [SII] 6717/6731, [ArIII] 7136,
#: [OII] 7320/7330, [SIII] 9069/9531.  H-gamma and H-delta are kept: in galaxy spectra at this
#: resolution they are dominated by stellar absorption, the age indicators.
EMISSION_LINES_AA = np.array([3868.8, 4861.3, 4958.9, 5006.8, 5875.6, 6300.3, 6548.0, 6562.8, 6583.5, 6716.4,
                              6730.8, 7135.8, 7319.9, 7330.2, 9068.6, 9530.6])


@dataclass(frozen=True)
class NoisySpectra:
    """Noisy spectra with their uncertainties and observed elements.

    Attributes
    ----------
    flux : ndarray (n, m)
        Noisy L_lambda (unit of the input); 0 where not observed.
    sigma : ndarray (n, m)
        1-sigma uncertainty the flow is given (same unit); inf where not observed.
    good : ndarray of bool (n, m)
        Observed elements.
    """

    flux: np.ndarray
    sigma: np.ndarray
    good: np.ndarray


def _check_range(name: str, pair, positive: bool = False) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair of numbers, got {pair!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low <= high) or (positive and low <= 0):
        raise ConfigError(f"{name} must be an increasing{' positive' if positive else ''} pair, got {pair!r}")
    return low, high


@dataclass(frozen=True)
class SpectralNoiseModel:
    """How noise and coverage are drawn for simulated spectra (see the module docstring).

    Parameters
    ----------
    kind : {"fractional", "survey"}
    fraction : float
        ``fractional``: noise-to-signal ratio per element.
    snr_range : (float, float)
        ``survey``: per-element S/N at the normalization window, log-uniform.
    tilt_range : (float, float)
        ``survey``: exponent t of ``sigma ~ (lambda / 5500 A)^t``, uniform.
    observed_range_aa : (float, float)
        ``survey``: observed-frame wavelength range of the spectrograph (Angstrom).
    mask_z_range : (float, float)
        ``survey``: redshift range placing that window in the rest frame.
    gap_rate : float
        ``survey``: probability that an element inside the range is bad.
    poisson_range : (float, float)
        ``survey``: index p of ``sigma ~ |f|^(p/2)``, uniform.
    spike_rate : float
        ``survey``: probability that an element's noise is inflated.
    spike_range : (float, float)
        ``survey``: inflation factor of those elements, uniform.
    edge_scatter_aa : float
        ``survey``: each end of ``observed_range_aa`` moves by U(-s, s) per
        spectrum (spectrographs and reductions differ: SDSS 3800-9200 A,
        BOSS 3600-10400 A, DESI 3600-9824 A).
    line_mask_kms : float
        Elements within this velocity of an ``emission_lines_aa`` line are
        never observed (0: none masked).
    emission_lines_aa : tuple of float
        Rest-frame (air) wavelengths of the masked lines (default
        :data:`EMISSION_LINES_AA`); recorded with the flow, so a later change
        of the default cannot change what an existing flow drops.
    calibration_order : int
        Highest Legendre order K of the multiplicative calibration polynomial (0: none).
    calibration_sigma : float
        Standard deviation of its coefficients c_1..c_K.
    error_floor : float
        Fraction of the flux added in quadrature to the uncertainty.
    """

    kind: str = "survey"
    fraction: float = 0.05
    snr_range: tuple[float, float] = (5.0, 500.0)
    tilt_range: tuple[float, float] = (-1.0, 1.0)
    observed_range_aa: tuple[float, float] = (3800.0, 9200.0)
    mask_z_range: tuple[float, float] = (0.0, 0.3)
    gap_rate: float = 0.01
    poisson_range: tuple[float, float] = (0.0, 2.0)
    spike_rate: float = 0.02
    spike_range: tuple[float, float] = (1.5, 5.0)
    edge_scatter_aa: float = 0.0
    line_mask_kms: float = 0.0
    calibration_order: int = 0
    calibration_sigma: float = 0.0
    error_floor: float = 0.0
    emission_lines_aa: tuple[float, ...] = tuple(float(v) for v in EMISSION_LINES_AA)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"spectral noise kind must be one of {KINDS}, got {self.kind!r}")
        if not (np.isfinite(self.fraction) and self.fraction > 0):
            raise ConfigError(f"noise fraction must be finite and > 0, got {self.fraction!r}")
        for name in ("gap_rate", "spike_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("edge_scatter_aa", "line_mask_kms", "calibration_sigma", "error_floor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        lines = np.asarray(self.emission_lines_aa, dtype=float)
        if lines.ndim != 1 or not np.all(np.isfinite(lines) & (lines > 0)):
            raise ConfigError(f"emission_lines_aa must be positive wavelengths, got {self.emission_lines_aa!r}")
        object.__setattr__(self, "emission_lines_aa", tuple(float(v) for v in lines))
        order = self.calibration_order
        if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= 10:
            raise ConfigError(f"calibration_order must be an integer in 0..10, got {order!r}")
        for name, positive in (("snr_range", True), ("tilt_range", False), ("observed_range_aa", True),
                               ("mask_z_range", False), ("poisson_range", False), ("spike_range", True)):
            object.__setattr__(self, name, _check_range(name, getattr(self, name), positive))
        if self.mask_z_range[0] < 0 or self.poisson_range[0] < 0:
            raise ConfigError(f"mask_z_range and poisson_range must be non-negative, got {self.mask_z_range!r}, "
                              f"{self.poisson_range!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> SpectralNoiseModel:
        check_option_keys(cls, d, "spectral noise")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)

    def describe(self) -> str:
        """One line for logs: the kind and the terms for real spectra that are on."""
        terms = [f"{self.kind} noise"]
        if self.kind == "survey":
            terms.append(f"S/N {self.snr_range[0]:g}-{self.snr_range[1]:g}")
        if self.calibration_order:
            terms.append(f"calibration polynomial order {self.calibration_order} ({self.calibration_sigma:.0%})")
        if self.error_floor:
            terms.append(f"{self.error_floor:.0%} error floor")
        if self.line_mask_kms:
            terms.append(f"emission lines masked (+-{self.line_mask_kms:g} km/s)")
        return ", ".join(terms)

    def observable_elements(self, wave=DIGS_WAVELENGTH) -> np.ndarray:
        """Elements this model ever observes (boolean over ``wave``).

        ``survey``: those some redshift of ``mask_z_range`` puts inside
        ``observed_range_aa`` (SDSS: none above 9200 A rest).  A flow never
        saw the others observed, so inference drops them too
        (:func:`~sedscale.observe.layout.drop_elements`).
        """
        wave = np.asarray(wave, dtype=float)
        if self.kind == "fractional":
            return np.ones(wave.size, dtype=bool)
        lo, hi = self.observed_range_aa
        lo, hi = lo - self.edge_scatter_aa, hi + self.edge_scatter_aa
        seen = (wave * (1 + self.mask_z_range[1]) >= lo) & (wave * (1 + self.mask_z_range[0]) <= hi)
        return seen & ~self.line_elements(wave)

    def line_elements(self, wave=DIGS_WAVELENGTH) -> np.ndarray:
        """Elements of ``wave`` (Angstrom, rest) masked for emission lines (boolean)."""
        wave = np.asarray(wave, dtype=float)
        if self.line_mask_kms == 0:
            return np.zeros(wave.size, dtype=bool)
        dv = np.abs(np.log(wave[:, None] / np.asarray(self.emission_lines_aa)[None, :])) * C_KMS
        return (dv < self.line_mask_kms).any(axis=1)

    def observed_sigma(self, flux, sigma) -> np.ndarray:
        """A measured spectrum's uncertainty as the flow was trained to see it: ``sigma`` with the error floor.

        Parameters
        ----------
        flux, sigma : array_like, shape (..., m)
            Flux and its 1-sigma uncertainty (same unit).
        """
        sigma = np.asarray(sigma, dtype=float)
        if self.error_floor == 0:
            return sigma
        return np.hypot(sigma, self.error_floor * np.abs(np.asarray(flux, dtype=float)))

    def calibrate(self, model, data, sigma, good, wave=DIGS_WAVELENGTH) -> np.ndarray:
        """Model spectra times their most probable calibration polynomial given the data.

        The coefficients maximize the Gaussian likelihood over the ``good``
        elements times their N(0, ``calibration_sigma``) prior: a linear
        least-squares problem per spectrum (K x K normal equations), as ppxf
        fits its multiplicative polynomial.  Used for the chi2 of model
        spectra against data; without a calibration term the models are
        returned unchanged.

        Parameters
        ----------
        model, data, sigma : array_like, shape (n, m)
            Model spectra, data and uncertainties (one unit per Angstrom).
        good : array_like of bool, shape (n, m)

        Returns
        -------
        ndarray, shape (n, m)
        """
        model = np.asarray(model, dtype=float)
        if not self.calibration_order or self.calibration_sigma == 0:
            return model
        basis = calibration_basis(wave, self.calibration_order)
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = np.where(good, 1.0 / np.asarray(sigma, dtype=float) ** 2, 0.0)
        design = model[:, :, None] * basis[None, :, :]
        normal = np.einsum("nmk,nm,nml->nkl", design, weight, design)
        normal += np.eye(self.calibration_order) / self.calibration_sigma**2
        resid = np.where(good, np.asarray(data, dtype=float) - model, 0.0)
        coeff = np.linalg.solve(normal, np.einsum("nmk,nm,nm->nk", design, weight, resid)[..., None])[..., 0]
        return model * calibration_factor(coeff, wave)

    def apply(self, spec_true, rng: np.random.Generator, wave=DIGS_WAVELENGTH) -> NoisySpectra:
        """Noisy, partly observed copies of noiseless spectra.

        Parameters
        ----------
        spec_true : array_like, shape (n, m)
            Noiseless rest-frame L_lambda (any unit per Angstrom).
        rng : numpy.random.Generator
        wave : array_like, shape (m,)
            Rest-frame wavelengths (Angstrom).

        Returns
        -------
        NoisySpectra
            float32 arrays.
        """
        f = np.asarray(spec_true, dtype=np.float64)
        wave = np.asarray(wave, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != wave.size:
            raise ParameterError(f"spectra must have shape (n, {wave.size}), got {f.shape}")
        n: int = f.shape[0]
        m: int = f.shape[1]
        if self.kind == "fractional":
            noisy = f + self.fraction * np.abs(f) * rng.standard_normal((n, m))
            sigma = self.fraction * np.abs(noisy)
            good = np.ones((n, m), dtype=bool)
        else:
            if self.calibration_order:
                coeff = self.calibration_sigma * rng.standard_normal((n, self.calibration_order))
                f = f * calibration_factor(coeff, wave)
            norm = np.abs(f[:, normalization_window(wave)]).mean(axis=1)[:, None]
            log_snr_low, log_snr_high = np.log(self.snr_range)
            log_snr = rng.uniform(log_snr_low, log_snr_high, size=n)
            tilt = rng.uniform(*self.tilt_range, size=n)
            half_p = rng.uniform(*self.poisson_range, size=n)[:, None] / 2
            spike = np.where(rng.random((n, m)) < self.spike_rate, rng.uniform(*self.spike_range, size=(n, m)), 1.0)
            base = norm / np.exp(log_snr)[:, None] * (wave / TILT_PIVOT_AA)[None, :] ** tilt[:, None] * spike

            def uncertainty(flux):
                # A floor keeps sigma > 0 where the flux crosses zero.
                return self.observed_sigma(flux, base * np.maximum(np.abs(flux) / norm, 1e-3) ** half_p)

            noisy = f + uncertainty(f) * rng.standard_normal((n, m))
            sigma = uncertainty(noisy)
            z = rng.uniform(*self.mask_z_range, size=n)
            # No draw without scatter: the streams (and noise) of the older presets stay as they were.
            shift = (rng.uniform(-self.edge_scatter_aa, self.edge_scatter_aa, size=(2, n, 1)) if self.edge_scatter_aa
                     else np.zeros((2, 1, 1)))
            lo = self.observed_range_aa[0] + shift[0]
            hi = self.observed_range_aa[1] + shift[1]
            observed = wave[None, :] * (1.0 + z[:, None])
            good = (observed >= lo) & (observed <= hi) & (rng.random((n, m)) >= self.gap_rate)
            good &= ~self.line_elements(wave)[None, :]
        return NoisySpectra(
            flux=np.where(good, noisy, 0.0).astype(np.float32),
            sigma=np.where(good, sigma, np.inf).astype(np.float32),
            good=good,
        )


#: Named configurations (``--spectral-noise``).
SPECTRAL_NOISE_PRESETS = {
    "digs": SpectralNoiseModel(kind="fractional", fraction=0.05),
    "survey": SpectralNoiseModel(kind="survey"),
    # Real SDSS, BOSS and DESI spectra (issue 17, docs/spectra.md): their coverage to z = 0.6, S/N down to 2
    # per element (faint DESI targets), a 3%-per-order calibration polynomial to order 2, a 2% error floor
    # and strong emission lines masked.
    "real": SpectralNoiseModel(kind="survey", snr_range=(2.0, 500.0), observed_range_aa=(3700.0, 9500.0),
                               edge_scatter_aa=300.0, mask_z_range=(0.0, 0.6), line_mask_kms=1500.0,
                               calibration_order=2, calibration_sigma=0.03, error_floor=0.02),
}


def calibration_basis(wave, order: int) -> np.ndarray:
    """Legendre polynomials P_1..P_order (m, order) over the ln(lambda) range of ``wave`` mapped to [-1, 1]."""
    from numpy.polynomial import legendre

    lnw = np.log(np.asarray(wave, dtype=float))
    x = 2.0 * (lnw - lnw[0]) / (lnw[-1] - lnw[0]) - 1.0
    return np.stack([legendre.legval(x, np.eye(order + 1)[k]) for k in range(1, order + 1)], axis=1)


def calibration_factor(coeff, wave) -> np.ndarray:
    """Multiplicative calibration ``1 + sum_k c_k P_k`` (n, m) for coefficients ``coeff`` (n, K)."""
    coeff = np.atleast_2d(np.asarray(coeff, dtype=float))
    return 1.0 + coeff @ calibration_basis(wave, coeff.shape[1]).T


def spectral_noise_model(spec) -> SpectralNoiseModel:
    """A preset name, a dict of options or a model -> :class:`SpectralNoiseModel`."""
    if isinstance(spec, SpectralNoiseModel):
        return spec
    if isinstance(spec, dict):
        return SpectralNoiseModel.from_dict(spec)
    try:
        return SPECTRAL_NOISE_PRESETS[spec]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown spectral noise {spec!r}; choose one of {sorted(SPECTRAL_NOISE_PRESETS)}") from None
