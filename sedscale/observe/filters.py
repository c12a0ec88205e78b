"""Broadband filter curves and synthetic AB photometry.

Filter curves come from the PyPI package ``astro-sedpy`` (SDSS ugriz:
``sdss_u0`` ... ``sdss_z0``, photon-counting response including the
atmosphere at airmass 1.3).

Synthetic photometry convention (photon-counting detector)::

    f_nu = int f_lambda(l) R(l) l dl / (c int R(l) / l dl)

so that a source with constant f_nu has exactly that f_nu in every band.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import MissingDataError
from ..units import C_AA_S

SDSS_BANDS = ("u", "g", "r", "i", "z")
SDSS_FILTERS = tuple(f"sdss_{b}0" for b in SDSS_BANDS)


@dataclass(frozen=True)
class Filter:
    """A filter transmission curve.

    Attributes
    ----------
    name : str
    wavelength : ndarray
        Observed-frame wavelength in Angstrom.
    transmission : ndarray
        Photon-counting response (dimensionless).
    """

    name: str
    wavelength: np.ndarray
    transmission: np.ndarray

    @property
    def norm(self) -> float:
        """``c * int R / lambda dlambda`` (Angstrom/s), the f_nu normalization."""
        return C_AA_S * np.trapezoid(self.transmission / self.wavelength, self.wavelength)

    def response(self, wave_obs: np.ndarray) -> np.ndarray:
        """Transmission at arbitrary observed wavelengths (0 outside the curve)."""
        return np.interp(wave_obs, self.wavelength, self.transmission, left=0.0, right=0.0)


@lru_cache(maxsize=16)
def load_filter(name: str) -> Filter:
    """Load a filter curve by its sedpy name (e.g. ``"sdss_r0"``)."""
    try:
        from sedpy import observate
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise MissingDataError("filter curves come from the PyPI package 'astro-sedpy'") from exc
    try:
        f = observate.Filter(name)
    except Exception as exc:
        raise MissingDataError(f"sedpy has no filter named {name!r}") from exc
    wave = np.asarray(f.wavelength, dtype=float)
    trans = np.clip(np.asarray(f.transmission, dtype=float), 0, None)
    return Filter(name, wave, trans)


def load_filters(names=SDSS_FILTERS) -> tuple[Filter, ...]:
    """Load several filters; defaults to SDSS ugriz."""
    return tuple(load_filter(n) for n in names)


def fnu_from_flambda(filters, wave_obs: np.ndarray, flambda: np.ndarray) -> np.ndarray:
    """Band-averaged f_nu (erg/s/cm^2/Hz) of a finely tabulated f_lambda.

    Parameters
    ----------
    filters : sequence of Filter
    wave_obs : ndarray, shape (n_wave,)
        Observed-frame wavelength (Angstrom), finely sampled.
    flambda : ndarray, shape (..., n_wave)
        erg/s/cm^2/A.
    """
    out = []
    for f in filters:
        r = f.response(wave_obs)
        out.append(np.trapezoid(flambda * r * wave_obs, wave_obs, axis=-1) / f.norm)
    return np.stack(out, axis=-1)
