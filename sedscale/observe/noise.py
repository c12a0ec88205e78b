"""Observational noise models.

:class:`PhotometricNoiseModel` (SEDflow, Hahn & Melchior 2022, Sec. 2.3)
    The flows are conditioned on the reported uncertainties, so simulated
    photometry needs realistic *uncertainties* as well as noise.  Per band the
    model tabulates, in log-spaced flux bins, the median and the spread of the
    reported uncertainty in magnitudes, ``sigma_mag = 1.0857 sigma_f / f``,
    of a reference catalog (the NSA), and draws
    ``sigma_mag | f ~ Normal(median(f), spread(f))`` with both interpolated
    linearly in ``log f`` between bin centres.  Draws with ``sigma_mag <= 0``
    and fluxes outside the catalog's flux range are rejected, as in SEDflow.
:class:`FractionalGaussianNoise` (DIGS, Khullar et al. 2022)
    Gaussian noise with a standard deviation that is a fixed fraction (5%,
    SNR ~ 20) of the noiseless flux.

Fluxes are in nanomaggies, uncertainties of magnitudes in magnitudes.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, MissingDataError, ParameterError
from ..io.atomic import atomic_write_bytes
from ..units import POGSON, nanomaggies_to_mag
from .filters import SDSS_BANDS
from .layout import FLUX_COLUMNS, FLUX_SIGMA_COLUMNS, MAG_COLUMNS, MAG_SIGMA_COLUMNS

#: Version of the JSON file written by :meth:`PhotometricNoiseModel.to_json`.
NOISE_MODEL_VERSION = 1
NOISE_MODEL_KIND = "sedscale.photometric_noise"
DEFAULT_NOISE_FILE = "nsa_noise.json"

#: ``NoisyPhotometry.reason`` values; a row gets the first check it fails, in this order.
REASON_OK = ""
REASON_RANGE = "flux_outside_reference_range"
REASON_SIGMA = "sigma<0"
REASON_NONPOSITIVE = "nonpositive_flux"

#: Robust spread: half the 16-84 percentile range (= sigma for a Gaussian).
_SPREAD_PERCENTILES = (16.0, 84.0)


def _readonly(a, dtype=float) -> np.ndarray:
    a = np.array(a, dtype=dtype)
    a.setflags(write=False)
    return a


# eq=False on the array-holding classes: a generated __eq__ would compare
# arrays ambiguously; compare ``to_dict()`` instead.
@dataclass(frozen=True, eq=False)
class BandNoise:
    """Noise table of one band.

    Attributes
    ----------
    band : str
    bin_edges : ndarray, shape (n_bins + 1,)
        Log-spaced flux bin edges in nanomaggies.
    median, spread : ndarray, shape (n_bins,)
        Median and half the 16-84 percentile range of ``sigma_mag`` (mag) in
        each bin; NaN where the bin holds fewer than the fit's ``min_count``
        galaxies (such bins are skipped by the interpolation).
    counts : ndarray of int, shape (n_bins,)
        Galaxies per bin.
    f_min, f_max : float
        Flux range (nanomaggies) of the reference catalog in this band.
    """

    band: str
    bin_edges: np.ndarray
    median: np.ndarray
    spread: np.ndarray
    counts: np.ndarray
    f_min: float
    f_max: float

    def __post_init__(self):
        object.__setattr__(self, "bin_edges", _readonly(self.bin_edges))
        object.__setattr__(self, "median", _readonly(self.median))
        object.__setattr__(self, "spread", _readonly(self.spread))
        object.__setattr__(self, "counts", _readonly(self.counts, dtype=np.int64))
        n = self.bin_edges.size - 1
        if n < 1 or any(a.shape != (n,) for a in (self.median, self.spread, self.counts)):
            raise ConfigError(f"band {self.band}: need n_bins+1 edges and n_bins medians, spreads and counts")
        if not np.all(np.diff(self.bin_edges) > 0) or self.bin_edges[0] <= 0:
            raise ConfigError(f"band {self.band}: bin edges must be positive and increasing")
        if not np.isfinite(self.median).any():
            raise ConfigError(f"band {self.band}: no populated flux bin")
        if not 0 < self.f_min <= self.f_max:
            raise ConfigError(f"band {self.band}: invalid flux range [{self.f_min}, {self.f_max}]")

    @property
    def log_centres(self) -> np.ndarray:
        """log10 of the geometric bin centres (log10 nanomaggies)."""
        return 0.5 * (np.log10(self.bin_edges[:-1]) + np.log10(self.bin_edges[1:]))

    def sigma_parameters(self, flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated (median, spread) of ``sigma_mag`` at ``flux``.

        Constant beyond the outermost populated bin centres; NaN for
        non-positive or non-finite flux.
        """
        good = np.isfinite(self.median)
        with np.errstate(divide="ignore", invalid="ignore"):
            logf = np.where(flux > 0, np.log10(flux), np.nan)
        x = self.log_centres[good]
        return np.interp(logf, x, self.median[good]), np.interp(logf, x, self.spread[good])

    def to_dict(self) -> dict:
        def floats(a):
            return [None if not np.isfinite(v) else float(v) for v in a]

        return {
            "bin_edges": floats(self.bin_edges),
            "median": floats(self.median),
            "spread": floats(self.spread),
            "counts": [int(c) for c in self.counts],
            "f_min": float(self.f_min),
            "f_max": float(self.f_max),
        }

    @classmethod
    def from_dict(cls, band: str, d: dict) -> BandNoise:
        """Inverse of :meth:`to_dict` (``None`` entries become NaN)."""

        def floats(key):
            return np.array([np.nan if v is None else v for v in d[key]], dtype=float)

        try:
            arrays = {k: floats(k) for k in ("bin_edges", "median", "spread")}
            counts, f_min, f_max = np.asarray(d["counts"], dtype=np.int64), float(d["f_min"]), float(d["f_max"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"noise model band {band!r}: malformed entry ({exc!r})") from exc
        return cls(band=band, counts=counts, f_min=f_min, f_max=f_max, **arrays)


@dataclass(frozen=True, eq=False)
class NoisyPhotometry:
    """Noisy photometry of a batch, as produced by :meth:`PhotometricNoiseModel.apply`.

    Rows that fail a check (``valid`` False) hold NaN in every array.

    Attributes
    ----------
    flux, flux_sigma : ndarray, shape (n, n_bands)
        Noisy flux and its 1-sigma uncertainty, nanomaggies.
    mag, mag_sigma : ndarray, shape (n, n_bands)
        AB magnitude of the noisy flux and the drawn uncertainty, mag.
    valid : ndarray of bool, shape (n,)
    reason : ndarray of str, shape (n,)
        ``""`` for valid rows, else the first failed check:
        ``"flux_outside_reference_range"`` (a true flux outside the
        reference catalog's range), ``"sigma<0"`` (a drawn ``sigma_mag <= 0``)
        or ``"nonpositive_flux"`` (a noisy flux <= 0, magnitude undefined).
    """

    flux: np.ndarray
    flux_sigma: np.ndarray
    mag: np.ndarray
    mag_sigma: np.ndarray
    valid: np.ndarray
    reason: np.ndarray

    def as_columns(self) -> dict[str, np.ndarray]:
        """Columns named as in :mod:`sedscale.observe.layout` (ugriz only)."""
        if self.flux.shape[1] != len(SDSS_BANDS):
            raise ParameterError(f"as_columns needs the {len(SDSS_BANDS)} SDSS bands, got {self.flux.shape[1]}")
        out = {}
        for names, arr in (
            (FLUX_COLUMNS, self.flux),
            (FLUX_SIGMA_COLUMNS, self.flux_sigma),
            (MAG_COLUMNS, self.mag),
            (MAG_SIGMA_COLUMNS, self.mag_sigma),
        ):
            out.update({n: arr[:, k] for k, n in enumerate(names)})
        return out


@dataclass(frozen=True, eq=False)
class PhotometricNoiseModel:
    """SEDflow uncertainty and noise model, p(sigma_mag | f) per band.

    Attributes
    ----------
    bands : tuple of BandNoise
        One table per band, in the column order of the flux arrays.
    source : str
        What the tables were fitted on.
    command : str
        The command that regenerates the tables.
    n_galaxies : int
        Reference-catalog rows used in the fit.
    min_count : int
    min_snr : float
        Fit settings (see :func:`fit_photometric_noise`).
    """

    bands: tuple[BandNoise, ...]
    source: str = ""
    command: str = ""
    n_galaxies: int = 0
    min_count: int = 0
    min_snr: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "bands", tuple(self.bands))
        if not self.bands:
            raise ConfigError("a noise model needs at least one band")

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.band for b in self.bands)

    @property
    def flux_range(self) -> np.ndarray:
        """(n_bands, 2) array of [f_min, f_max] in nanomaggies."""
        return np.array([[b.f_min, b.f_max] for b in self.bands])

    def _check_flux(self, flux) -> np.ndarray:
        flux = np.asarray(flux, dtype=float)
        if flux.ndim != 2 or flux.shape[1] != len(self.bands):
            raise ParameterError(
                f"flux must have shape (n, {len(self.bands)}) for bands {''.join(self.band_names)}, got {flux.shape}"
            )
        return flux

    def in_range(self, flux) -> np.ndarray:
        """Whether each flux (n, n_bands) lies in the reference range (NaN -> False)."""
        flux = self._check_flux(flux)
        limits = self.flux_range
        return (flux >= limits[:, 0]) & (flux <= limits[:, 1])

    def sigma_parameters(self, flux) -> tuple[np.ndarray, np.ndarray]:
        """Median and spread of ``sigma_mag`` (mag) at fluxes (n, n_bands) in nanomaggies."""
        flux = self._check_flux(flux)
        med = np.empty_like(flux)
        spr = np.empty_like(flux)
        for k, band in enumerate(self.bands):
            med[:, k], spr[:, k] = band.sigma_parameters(flux[:, k])
        return med, spr

    def sample_sigma_mag(self, flux, rng: np.random.Generator) -> np.ndarray:
        """Draw ``sigma_mag`` (mag) for fluxes (n, n_bands); may be <= 0 (see :meth:`apply`)."""
        med, spr = self.sigma_parameters(flux)
        return med + spr * rng.standard_normal(med.shape)

    def apply(self, flux_true, rng: np.random.Generator) -> NoisyPhotometry:
        """Draw uncertainties and noisy photometry for noiseless fluxes.

        Parameters
        ----------
        flux_true : array_like, shape (n, n_bands)
            Noiseless fluxes, nanomaggies.
        rng : numpy.random.Generator
            Source of randomness; the result is a deterministic function of
            its state (2 * n * n_bands standard normals are consumed).

        Returns
        -------
        NoisyPhotometry
            ``flux = flux_true + sigma_f * N(0, 1)`` with
            ``sigma_f = sigma_mag * flux_true / 1.0857``; ``mag_sigma`` is the
            drawn ``sigma_mag``.  Rejected rows are flagged and NaN.
        """
        flux_true = self._check_flux(flux_true)
        sigma_mag = self.sample_sigma_mag(flux_true, rng)
        sigma_f = sigma_mag * flux_true / POGSON
        with np.errstate(invalid="ignore"):
            flux = flux_true + sigma_f * rng.standard_normal(flux_true.shape)
            in_range = self.in_range(flux_true).all(axis=1)
            sigma_ok = (sigma_mag > 0).all(axis=1)
            flux_ok = (flux > 0).all(axis=1)
        reason = np.select(
            [~in_range, ~sigma_ok, ~flux_ok], [REASON_RANGE, REASON_SIGMA, REASON_NONPOSITIVE], default=REASON_OK
        )
        valid = reason == REASON_OK
        bad = ~valid[:, None]
        mag = nanomaggies_to_mag(np.where(bad, np.nan, flux))
        return NoisyPhotometry(
            flux=np.where(bad, np.nan, flux),
            flux_sigma=np.where(bad, np.nan, sigma_f),
            mag=mag,
            mag_sigma=np.where(bad, np.nan, sigma_mag),
            valid=valid,
            reason=reason,
        )

    def to_dict(self) -> dict:
        return {
            "kind": NOISE_MODEL_KIND,
            "version": NOISE_MODEL_VERSION,
            "flux_unit": "nanomaggy",
            "sigma_unit": "mag",
            "bands": list(self.band_names),
            "source": self.source,
            "command": self.command,
            "n_galaxies": int(self.n_galaxies),
            "min_count": int(self.min_count),
            "min_snr": float(self.min_snr),
            "per_band": {b.band: b.to_dict() for b in self.bands},
        }

    @classmethod
    def from_dict(cls, d: dict) -> PhotometricNoiseModel:
        kind = d.get("kind") if isinstance(d, dict) else None
        if kind != NOISE_MODEL_KIND:
            raise ConfigError(f"not a sedscale photometric noise model (kind {kind!r}, expected {NOISE_MODEL_KIND!r})")
        if d.get("version") != NOISE_MODEL_VERSION:
            raise ConfigError(f"noise model version {d.get('version')!r}; this sedscale reads {NOISE_MODEL_VERSION}")
        try:
            bands = [BandNoise.from_dict(b, d["per_band"][b]) for b in d["bands"]]
        except KeyError as exc:
            raise ConfigError(f"noise model lacks an entry for band {exc}") from None
        return cls(
            bands=tuple(bands),
            source=str(d.get("source", "")),
            command=str(d.get("command", "")),
            n_galaxies=int(d.get("n_galaxies", 0)),
            min_count=int(d.get("min_count", 0)),
            min_snr=float(d.get("min_snr", 0.0)),
        )

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the model as compact JSON atomically (temp file + rename); returns the path."""
        text = json.dumps(self.to_dict(), separators=(",", ":")) + "\n"
        return atomic_write_bytes(path, text.encode())

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> PhotometricNoiseModel:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise MissingDataError(f"noise model file {path} does not exist") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(d)


def reference_sigma_mag(flux: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Catalog uncertainty in magnitudes, ``1.0857 / (f sqrt(ivar))``; NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((flux > 0) & (ivar > 0), POGSON / (flux * np.sqrt(ivar)), np.nan)


def select_reference_rows(df: pd.DataFrame, bands=SDSS_BANDS, min_snr: float = 1.0) -> pd.DataFrame:
    """Rows of a :func:`sedscale.io.read_nsa` frame usable for the noise fit.

    Keeps rows with a finite redshift >= 0 and, in every band, a finite
    positive flux and inverse variance with ``f sqrt(ivar) >= min_snr``.
    The S/N cut removes failed photometry (a handful of NSA rows report
    ~0 flux with S/N ~ 1e-6 in one band), which would otherwise stretch the
    flux range over ten decades.
    """
    needed = ["z"] + [c for b in bands for c in (f"flux_{b}", f"flux_ivar_{b}")]
    missing = [c for c in needed if c not in df]
    if missing:
        raise ParameterError(f"catalog frame lacks column(s) {', '.join(missing)}")
    flux = df[[f"flux_{b}" for b in bands]].to_numpy(dtype=float)
    ivar = df[[f"flux_ivar_{b}" for b in bands]].to_numpy(dtype=float)
    z = df["z"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z >= 0)
        ok &= np.all(np.isfinite(flux) & np.isfinite(ivar) & (flux > 0) & (ivar > 0), axis=1)
        ok &= np.all(flux * np.sqrt(np.where(ivar > 0, ivar, 0.0)) >= min_snr, axis=1)
    return df.loc[ok]


def _fit_band(band: str, flux: np.ndarray, sigma: np.ndarray, n_bins: int, min_count: int) -> BandNoise:
    edges = np.geomspace(flux.min(), flux.max(), n_bins + 1)
    idx = np.clip(np.searchsorted(edges, flux, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    median = np.full(n_bins, np.nan)
    spread = np.full(n_bins, np.nan)
    for k in np.flatnonzero(counts >= min_count):
        s = sigma[idx == k]
        median[k] = np.median(s)
        lo, hi = np.percentile(s, _SPREAD_PERCENTILES)
        spread[k] = 0.5 * (hi - lo)
    return BandNoise(band, edges, median, spread, counts, float(flux.min()), float(flux.max()))


def fit_photometric_noise(
    df: pd.DataFrame,
    n_bins: int = 20,
    min_count: int = 10,
    min_snr: float = 1.0,
    bands=SDSS_BANDS,
    source: str = "",
    command: str = "",
) -> PhotometricNoiseModel:
    """Fit the SEDflow noise model to a reference catalog.

    Parameters
    ----------
    df : pandas.DataFrame
        As returned by :func:`sedscale.io.read_nsa`: ``z``, ``flux_<b>``
        (nanomaggies) and ``flux_ivar_<b>`` (nanomaggies^-2) per band.
    n_bins : int
        Log-spaced flux bins per band between the band's smallest and
        largest flux.
    min_count : int
        Bins with fewer galaxies get no median/spread (NaN) and are skipped
        by the interpolation.
    min_snr : float
        Rows with S/N below this in any band are dropped (failed photometry).
    bands : sequence of str
        Band suffixes of the flux columns, in output order.
    source, command : str
        Provenance stored with the model.

    Returns
    -------
    PhotometricNoiseModel
    """
    if n_bins < 1 or min_count < 1:
        raise ParameterError(f"n_bins and min_count must be >= 1 (got {n_bins}, {min_count})")
    ref = select_reference_rows(df, bands, min_snr)
    if len(ref) < min_count:
        raise ParameterError(f"only {len(ref)} usable catalog rows for the noise fit (need >= {min_count})")
    flux = ref[[f"flux_{b}" for b in bands]].to_numpy(dtype=float)
    ivar = ref[[f"flux_ivar_{b}" for b in bands]].to_numpy(dtype=float)
    sigma = reference_sigma_mag(flux, ivar)
    tables = tuple(_fit_band(b, flux[:, k], sigma[:, k], n_bins, min_count) for k, b in enumerate(bands))
    return PhotometricNoiseModel(
        bands=tables, source=source, command=command, n_galaxies=len(ref), min_count=min_count, min_snr=min_snr
    )


def fit_nsa_noise_model(paths, n_bins: int = 20, min_count: int = 10, min_snr: float = 1.0, command: str = ""):
    """Fit the noise model to NSA FITS files (de-duplicated by NSAID).

    Parameters
    ----------
    paths : iterable of str or PathLike
        NSA catalog files (see :func:`sedscale.io.read_nsa`).
    n_bins, min_count, min_snr
        See :func:`fit_photometric_noise`.
    command : str
        The command line that regenerates the result, stored as provenance.

    Returns
    -------
    PhotometricNoiseModel
    """
    from ..io.nsa import read_nsa

    paths = [Path(p) for p in paths]
    df = read_nsa(paths)
    source = (
        f"NSA rows (NMGY/NMGY_IVAR ugriz, Galactic-extinction corrected) from {len(paths)} file(s) "
        f"{', '.join(p.name for p in paths)}: {df.attrs['n_rows_read']} rows, {len(df)} unique NSAID"
    )
    return fit_photometric_noise(
        df, n_bins=n_bins, min_count=min_count, min_snr=min_snr, source=source, command=command
    )


def default_noise_model_path():
    """The packaged ``sedscale/data/nsa_noise.json`` (an importlib.resources Traversable)."""
    return resources.files("sedscale").joinpath("data", DEFAULT_NOISE_FILE)


@lru_cache(maxsize=1)
def load_default_noise_model() -> PhotometricNoiseModel:
    """The NSA noise model shipped with sedscale (fitted by ``bin/fit_noise_model``)."""
    ref = default_noise_model_path()
    with resources.as_file(ref) as path:
        return PhotometricNoiseModel.from_json(path)


@dataclass(frozen=True)
class FractionalGaussianNoise:
    """DIGS spectral noise: Gaussian with sigma = ``fraction`` * |flux|.

    Parameters
    ----------
    fraction : float
        Noise-to-signal ratio (0.05 in DIGS, i.e. SNR ~ 20).
    """

    fraction: float = 0.05

    def __post_init__(self):
        if not (np.isfinite(self.fraction) and self.fraction > 0):
            raise ParameterError(f"noise fraction must be finite and > 0, got {self.fraction}")

    def apply(self, flux, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Noisy copies of noiseless fluxes.

        Parameters
        ----------
        flux : array_like, shape (n, m)
            Noiseless fluxes (any flux-density unit).
        rng : numpy.random.Generator

        Returns
        -------
        noisy, sigma : ndarray, shape (n, m)
            ``flux + sigma * N(0, 1)`` and ``sigma = fraction * |flux|``, in
            the unit of ``flux``.
        """
        flux = np.asarray(flux, dtype=float)
        if flux.ndim != 2:
            raise ParameterError(f"flux must have shape (n, m), got {flux.shape}")
        sigma = self.fraction * np.abs(flux)
        return flux + sigma * rng.standard_normal(flux.shape), sigma
