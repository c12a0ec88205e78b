"""Engine-independent containers for simple-stellar-population (SSP) grids."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NebularGrid:
    """Nebular (Cloudy) emission of an SSP, per solar mass formed.

    Attributes
    ----------
    log_u : ndarray, shape (n_u,)
        log10 of the ionization parameter.
    metallicities : ndarray, shape (n_z,)
        Absolute metallicity Z (mass fraction) of the ionizing stars and gas.
    ages : ndarray, shape (n_age,)
        SSP age in yr (nebular emission is zero for older SSPs).
    line_wavelength : ndarray, shape (n_line,)
        Rest-frame line wavelengths in Angstrom.
    line_lum : ndarray, shape (n_u, n_z, n_age, n_line)
        Line luminosity in Lsun per Msun formed.
    cont_lum : ndarray, shape (n_u, n_z, n_age, n_wave)
        Nebular continuum in Lsun/Angstrom per Msun formed, on the stellar grid.
    """

    log_u: np.ndarray
    metallicities: np.ndarray
    ages: np.ndarray
    line_wavelength: np.ndarray
    line_lum: np.ndarray
    cont_lum: np.ndarray


@dataclass(frozen=True)
class SSPGrid:
    """A grid of SSP spectra.

    Attributes
    ----------
    name : str
        Engine and library, e.g. ``"bc03_miles"``.
    ages : ndarray, shape (n_age,)
        SSP age in yr, ascending, starting at 0.
    metallicities : ndarray, shape (n_z,)
        Absolute metallicity Z (mass fraction), ascending.
    zsun : float
        Solar metallicity of the library (to convert Z <-> Z/Zsun).
    wavelength : ndarray, shape (n_wave,)
        Rest-frame wavelength in Angstrom.
    lum : ndarray, shape (n_z, n_age, n_wave)
        L_lambda in Lsun/Angstrom per Msun *formed*.
    surviving_mass_fraction : ndarray, shape (n_z, n_age)
        Mass still in living stars per Msun formed (remnants excluded), the
        "stellar mass" of catalogues such as the NSA.
    imf : str
        Initial mass function.
    nebular : NebularGrid or None
    """

    name: str
    ages: np.ndarray
    metallicities: np.ndarray
    zsun: float
    wavelength: np.ndarray
    lum: np.ndarray
    surviving_mass_fraction: np.ndarray
    imf: str
    nebular: NebularGrid | None = None

    def __post_init__(self):
        n_z, n_age, n_wave = self.lum.shape
        assert self.ages.shape == (n_age,) and self.metallicities.shape == (n_z,)
        assert self.wavelength.shape == (n_wave,)
        assert self.surviving_mass_fraction.shape == (n_z, n_age)

    @property
    def log_ages(self) -> np.ndarray:
        """log10(age / yr) with the age-0 entry set to 5 (100 kyr below the first age)."""
        return np.log10(np.maximum(self.ages, 1e5))

    def interpolation_weights_z(self, z):
        """Linear-in-log Z interpolation indices and weights (clipped to the grid).

        Returns ``(i_lo, w_hi)`` such that a quantity at ``z`` is
        ``(1 - w_hi) q[i_lo] + w_hi q[i_lo + 1]``.
        """
        return _bracket(np.log10(self.metallicities), np.log10(np.asarray(z, dtype=float)))

    def interpolation_weights_age(self, age_yr):
        """Linear-in-age interpolation indices and weights (clipped to the grid)."""
        return _bracket(self.ages, np.asarray(age_yr, dtype=float))

    def spectrum(self, age_yr: float, z: float) -> np.ndarray:
        """SSP spectrum at one (age, Z), bilinearly interpolated; Lsun/A per Msun formed."""
        ia, wa = self.interpolation_weights_age(age_yr)
        iz, wz = self.interpolation_weights_z(z)
        lum = self.lum
        return (
            (1 - wz) * ((1 - wa) * lum[iz, ia] + wa * lum[iz, ia + 1])
            + wz * ((1 - wa) * lum[iz + 1, ia] + wa * lum[iz + 1, ia + 1])
        )


def _bracket(grid: np.ndarray, x: np.ndarray):
    """Index of the left grid node and the linear weight of the right one."""
    x = np.clip(x, grid[0], grid[-1])
    i = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, len(grid) - 2)
    w = (x - grid[i]) / (grid[i + 1] - grid[i])
    return i, w
