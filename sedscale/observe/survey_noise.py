"""Training-time photometric noise that spans real surveys: any per-band depth, missing bands.

The SEDflow noise model (:class:`~sedscale.observe.noise.PhotometricNoiseModel`)
draws uncertainties from one survey's p(sigma | f) and is stored in the
training set; a flow trained on it refuses catalogs of other depths.  Since
the uncertainty is a flow *input*, the training distribution only has to
span the uncertainties real catalogs hold.  :class:`SurveyNoise` draws, for
noiseless fluxes stored by ``bin/run_simulate --noise none``, every time the
rows are read (fresh noise each epoch):

* per band an uncertainty ``sigma_mag`` log-uniform in
  ``[sigma_min, sigma_max]`` (default 0.002-1 mag: SDSS model magnitudes of
  bright galaxies to deep-survey detections), independent of the flux;
* Gaussian flux noise ``sigma_f = sigma_mag f_true / 1.0857``, plus, with an
  ``error_floor``, calibration noise of that many magnitudes;
* random band masks: all bands with probability ``p_all_bands``, else 1 to
  ``max_masked`` bands chosen at random are removed; with ``p_missing``, each
  band is also missing independently with its own probability (GALEX FUV and
  NUV are missing from many NSA rows: a flow over FUV NUV ugriz must see
  ugriz alone often);
* with ``band_patterns``, every row first gets one survey's bands (drawn
  with ``pattern_weights``), the others missing: one flow over the union of
  several surveys' bands (set ``all_surveys``: GALEX + SDSS + Legacy grz +
  WISE) learns each survey's pattern, and the random masks act within it.

A band whose noisy flux is <= 0 is masked too (at inference a measured
flux <= 0 is masked the same way), rows keep at least
:data:`~sedscale.observe.layout.MIN_BANDS` bands, and rows whose mean true
magnitude lies outside ``mag_range`` (no survey measures them) are not
used.  x is made by :func:`~sedscale.observe.layout.masked_photometry_x`,
as for catalogs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import ConfigError
from ..options import check_option_keys
from ..units import POGSON, nanomaggies_to_mag
from .layout import MIN_BANDS, masked_photometry_x

__all__ = ["PHOTOMETRIC_NOISE_PRESETS", "SurveyNoise", "photometric_noise_model"]


@dataclass(frozen=True)
class SurveyNoise:
    """Broad per-band uncertainties and random band masks (see the module docstring).

    Attributes
    ----------
    sigma_min, sigma_max : float
        Range of the log-uniform magnitude uncertainties (mag).
    p_all_bands : float
        Probability that a row keeps all its bands.
    max_masked : int
        Most bands removed from a masked row (the rest must keep >= 3).
    mag_range : (float, float)
        Usable rows: mean true AB magnitude within this range.
    error_floor : float
        Calibration uncertainty (mag), drawn as noise and added in quadrature
        to the reported uncertainty, as ``bin/run_catalog --error-floor`` does.
    p_missing : tuple of float, optional
        Per band (band-set order), the probability that the band is missing,
        on top of the random masks; not applied to a row where it would leave
        fewer than 3 bands.
    mag_limit : float, optional
        Bands whose true magnitude is fainter are not detected (masked), and
        the mean magnitude of ``mag_range`` is taken over the detected bands:
        for band sets with UV bands, in which red or distant galaxies are far
        fainter than in the optical (FUV ~ 30-50 mag).
    band_patterns : tuple of tuple of int, optional
        Surveys' band patterns: per pattern a 0/1 presence per band (band-set
        order), each with >= 3 bands.  Every row is observed in one pattern.
    pattern_weights : tuple of float, optional
        Relative frequency of each pattern (default: equal).
    """

    sigma_min: float = 0.002
    sigma_max: float = 1.0
    p_all_bands: float = 0.5
    max_masked: int = 2
    mag_range: tuple[float, float] = (5.0, 27.0)
    error_floor: float = 0.0
    p_missing: tuple[float, ...] | None = None
    mag_limit: float | None = None
    band_patterns: tuple[tuple[int, ...], ...] | None = None
    pattern_weights: tuple[float, ...] | None = None
    kind: str = "survey"

    def __post_init__(self):
        object.__setattr__(self, "mag_range", tuple(float(v) for v in self.mag_range))
        if self.p_missing is not None:
            object.__setattr__(self, "p_missing", tuple(float(v) for v in self.p_missing))
            if not all(0 <= v <= 1 for v in self.p_missing):
                raise ConfigError(f"p_missing must be probabilities, got {self.p_missing}")
        if self.band_patterns is not None:
            patterns = tuple(tuple(int(bool(v)) for v in p) for p in self.band_patterns)
            if not patterns or len({len(p) for p in patterns}) != 1 or min(sum(p) for p in patterns) < MIN_BANDS:
                raise ConfigError(f"band_patterns must be 0/1 rows of one length with >= {MIN_BANDS} bands each, "
                                  f"got {self.band_patterns}")
            weights = (1.0,) * len(patterns) if self.pattern_weights is None else tuple(map(float, self.pattern_weights))
            if len(weights) != len(patterns) or min(weights) < 0 or sum(weights) <= 0:
                raise ConfigError(f"pattern_weights must be {len(patterns)} non-negative weights, got {self.pattern_weights}")
            object.__setattr__(self, "band_patterns", patterns)
            object.__setattr__(self, "pattern_weights", weights)
        elif self.pattern_weights is not None:
            raise ConfigError("pattern_weights needs band_patterns")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ConfigError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not 0 <= self.p_all_bands <= 1:
            raise ConfigError(f"p_all_bands must be in [0, 1], got {self.p_all_bands}")
        if isinstance(self.max_masked, bool) or not isinstance(self.max_masked, int) or self.max_masked < 0:
            raise ConfigError(f"max_masked must be a non-negative integer, got {self.max_masked!r}")
        if self.error_floor < 0:
            raise ConfigError(f"error_floor must be >= 0 mag, got {self.error_floor}")
        if self.kind != "survey":
            raise ConfigError(f"photometric noise kind must be 'survey', got {self.kind!r}")

    def draw(self, flux_true, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Noisy fluxes and their uncertainties, masked bands NaN.

        Parameters
        ----------
        flux_true : ndarray, shape (n, n_band)
            Noiseless fluxes, nanomaggies.
        rng : numpy.random.Generator

        Returns
        -------
        flux, flux_sigma : ndarray, shape (n, n_band)
            Nanomaggies; ``flux_sigma`` is NaN for the bands masked at random
            (the error floor is not in it: :func:`masked_photometry_x` adds it).
        """
        flux_true = np.asarray(flux_true, dtype=np.float64)
        n, n_band = flux_true.shape
        if self.max_masked > n_band - MIN_BANDS:
            raise ConfigError(f"max_masked {self.max_masked} leaves fewer than {MIN_BANDS} of {n_band} bands")
        if self.p_missing is not None and len(self.p_missing) != n_band:
            raise ConfigError(f"p_missing has {len(self.p_missing)} values for {n_band} bands")
        if self.band_patterns is not None and len(self.band_patterns[0]) != n_band:
            raise ConfigError(f"band_patterns have {len(self.band_patterns[0])} bands for {n_band} bands")
        lo, hi = np.log10(self.sigma_min), np.log10(self.sigma_max)
        sigma_mag = 10.0 ** (lo + (hi - lo) * rng.random((n, n_band)))
        sigma_f = sigma_mag * flux_true / POGSON
        noise = sigma_f * rng.standard_normal((n, n_band))
        noise += self.error_floor * flux_true / POGSON * rng.standard_normal((n, n_band))
        n_masked = np.where(rng.random(n) < self.p_all_bands, 0, rng.integers(1, self.max_masked + 1, n))
        keys = rng.random((n, n_band))
        absent = np.zeros((n, n_band), dtype=bool)
        if self.band_patterns is not None:
            weights = np.asarray(self.pattern_weights)
            absent = ~np.asarray(self.band_patterns, dtype=bool)[rng.choice(weights.size, n, p=weights / weights.sum())]
            # The random masks act within the row's pattern and keep >= MIN_BANDS of its bands.
            keys[absent] = 2.0
            n_masked = np.minimum(n_masked, np.maximum(n_band - absent.sum(axis=1) - MIN_BANDS, 0))
        rank = np.argsort(np.argsort(keys, axis=1), axis=1)
        masked = (rank < n_masked[:, None]) | absent
        if self.p_missing is not None:
            missing = masked | (rng.random((n, n_band)) < np.asarray(self.p_missing))
            masked = np.where((n_band - missing.sum(axis=1) >= MIN_BANDS)[:, None], missing, masked)
        if self.mag_limit is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                masked |= ~(nanomaggies_to_mag(flux_true) <= self.mag_limit)
        return flux_true + noise, np.where(masked, np.nan, sigma_f)

    def usable(self, flux_true) -> np.ndarray:
        """Rows whose mean true magnitude (of the detected bands) lies in ``mag_range``, (n,) bool."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mag = nanomaggies_to_mag(flux_true)
            if self.mag_limit is None:
                mean_mag = np.mean(mag, axis=1)
            else:
                detected = mag <= self.mag_limit
                mean_mag = np.where(detected, mag, 0.0).sum(axis=1) / detected.sum(axis=1)
        return (mean_mag >= self.mag_range[0]) & (mean_mag <= self.mag_range[1])

    def apply(self, flux_true, z, rng: np.random.Generator):
        """Noisy, masked flow inputs of noiseless fluxes.

        Parameters
        ----------
        flux_true : ndarray, shape (n, n_band)
            Noiseless fluxes, nanomaggies.
        z : ndarray, shape (n,)
        rng : numpy.random.Generator

        Returns
        -------
        x : ndarray, shape (n, 3 n_band + 1), float32
        valid : ndarray of bool, shape (n,)
        """
        flux, flux_sigma = self.draw(flux_true, rng)
        x, _, valid = masked_photometry_x(flux, flux_sigma, z, self.error_floor)
        return x, valid & self.usable(flux_true)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mag_range"] = list(self.mag_range)
        # Options left at None are left out: dicts (and hashes) of older noise models stay as they were.
        for key in ("p_missing", "mag_limit", "band_patterns", "pattern_weights"):
            if d[key] is None:
                del d[key]
            elif isinstance(d[key], tuple):
                d[key] = [list(v) if isinstance(v, tuple) else v for v in d[key]]
        return d

    def observing(self, present) -> SurveyNoise:
        """This noise restricted to one band pattern, all of it observed (no random masks).

        Parameters
        ----------
        present : sequence of bool, shape (n_band,)
            The bands a survey provides (band-set order).

        Returns
        -------
        SurveyNoise
            Same uncertainties, floor and detection limit; every row has
            exactly ``present`` (less bands below the detection limit).
        """
        return replace(self, band_patterns=(tuple(int(bool(v)) for v in present),), pattern_weights=None,
                       p_all_bands=1.0, p_missing=None)


#: Named training noise models of noiseless photometric sets.  ``galex_sdss``
#: (FUV NUV ugriz): FUV missing in 45% and NUV in 35% of rows (independently),
#: so that ~16% of rows are ugriz only -- the NSA lacks FUV in ~13% and NUV in
#: ~12% of Virgo rows, the SDSS MGS has no GALEX at all -- and bands fainter
#: than 27 mag (the faint end of ``mag_range``) undetected.  ``all_surveys``
#: (band set of the same name, FUV NUV ugriz + DECam grz + W1 W2): rows
#: observed as the NSA (45%, GALEX missing as in ``galex_sdss``), as DESI's
#: Legacy Surveys (35%) or in all twelve bands (20%).
PHOTOMETRIC_NOISE_PRESETS = {
    "survey": SurveyNoise(),
    "galex_sdss": SurveyNoise(p_missing=(0.45, 0.35, 0.0, 0.0, 0.0, 0.0, 0.0), mag_limit=27.0),
    "all_surveys": SurveyNoise(
        p_missing=(0.45, 0.35) + (0.0,) * 10, mag_limit=27.0,
        band_patterns=((1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),   # NSA / SDSS: FUV NUV ugriz (GALEX often missing)
                       (0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1),   # DESI: Legacy grz + WISE W1 W2
                       (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)),  # a galaxy in both footprints
        pattern_weights=(0.45, 0.35, 0.20)),
}


def photometric_noise_model(spec) -> SurveyNoise:
    """A :class:`SurveyNoise` from a preset name, a dict of options or a model.

    Raises
    ------
    ConfigError
        Unknown preset or option.
    """
    if isinstance(spec, SurveyNoise):
        return spec
    if isinstance(spec, str):
        if spec not in PHOTOMETRIC_NOISE_PRESETS:
            raise ConfigError(f"unknown photometric noise {spec!r}; choose one of {sorted(PHOTOMETRIC_NOISE_PRESETS)}")
        return PHOTOMETRIC_NOISE_PRESETS[spec]
    if isinstance(spec, dict):
        check_option_keys(SurveyNoise, spec, "photometric noise")
        return SurveyNoise(**spec)
    raise ConfigError(f"photometric noise must be a preset name or a dict of options, got {spec!r}")
