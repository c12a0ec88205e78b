"""Physical constants and photometric unit conventions.

Conventions
-----------
* Wavelengths are in Angstrom, rest frame unless a name says ``_obs``.
* Rest-frame luminosity densities are in Lsun / Angstrom.
* Fluxes are in SDSS *nanomaggies*: 1 nanomaggy = 3.631e-6 Jy, i.e. an AB
  magnitude of 22.5.  ``mag = 22.5 - 2.5 log10(f_nmgy)``.  We use Pogson
  magnitudes (not SDSS asinh magnitudes); NSA ``NMGY`` columns are linear
  fluxes, so this is exact for them.
* Magnitude uncertainties are first-order propagated:
  ``sigma_mag = 2.5 / ln(10) * sigma_f / f``.
"""
from __future__ import annotations

import numpy as np

#: Solar luminosity in erg/s (IAU 2015 nominal value, as used by FSPS/bagpipes).
LSUN_ERG_S = 3.828e33
#: Speed of light in Angstrom/s.
C_AA_S = 2.99792458e18
#: Speed of light in km/s.
C_KMS = 2.99792458e5
#: One megaparsec in cm.
MPC_CM = 3.0856775814913673e24
#: AB zero point flux density in erg/s/cm^2/Hz (3631 Jy).
AB_ZEROPOINT_CGS = 3631e-23
#: One nanomaggy in erg/s/cm^2/Hz.
NANOMAGGY_CGS = AB_ZEROPOINT_CGS * 1e-9
#: Pogson factor 2.5 / ln(10) = 1.0857..., d(mag) per d(ln f).
POGSON = 2.5 / np.log(10.0)


def mag_to_nanomaggies(mag):
    """AB magnitude -> flux in nanomaggies."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - 22.5))


def nanomaggies_to_mag(flux):
    """Flux in nanomaggies -> AB magnitude; NaN for non-positive flux."""
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, 22.5 - 2.5 * np.log10(flux), np.nan)


def flux_sigma_to_mag_sigma(flux, sigma_flux):
    """Propagate a flux uncertainty to a magnitude uncertainty (first order)."""
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, POGSON * np.asarray(sigma_flux, dtype=float) / flux, np.nan)


def mag_sigma_to_flux_sigma(flux, sigma_mag):
    """Inverse of :func:`flux_sigma_to_mag_sigma`."""
    return np.asarray(sigma_mag, dtype=float) * np.asarray(flux, dtype=float) / POGSON


def ivar_to_sigma(ivar):
    """Inverse variance -> standard deviation; NaN where ivar <= 0 or not finite."""
    ivar = np.asarray(ivar, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(ivar) & (ivar > 0), 1.0 / np.sqrt(ivar), np.nan)
