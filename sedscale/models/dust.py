"""Dust attenuation curves.

All functions return the optical depth tau(lambda) for a given optical depth
at 5500 A, so that the transmitted fraction is ``exp(-tau)``.  Wavelengths
in Angstrom.
"""
from __future__ import annotations

import numpy as np

#: Total-to-selective extinction of the Calzetti et al. (2000) curve.
CALZETTI_RV = 4.05
#: Centre and width (FWHM) of the 2175 A bump in Angstrom (Kriek & Conroy 2013).
BUMP_CENTER_AA = 2175.0
BUMP_WIDTH_AA = 350.0
#: Power-law index of the birth-cloud curve (FSPS ``dust1_index`` default).
BIRTH_CLOUD_INDEX = -1.0


def calzetti_k(wave: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) starburst curve k(lambda) = A_lambda / E(B-V).

    The two published polynomials (0.12-0.63 um and 0.63-2.2 um) are
    continued beyond their range and clipped at zero (k reaches 0 near 3.1 um).
    """
    x = 1e4 / np.asarray(wave, dtype=float)  # inverse micron
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + CALZETTI_RV
    red = 2.659 * (-1.857 + 1.040 * x) + CALZETTI_RV
    return np.clip(np.where(wave < 6300.0, blue, red), 0.0, None)


def calzetti_tau(wave: np.ndarray, tau_v) -> np.ndarray:
    """Calzetti optical depth, normalized to ``tau_v`` at 5500 A.

    ``tau_v`` may be an array of shape (n,) -> result (n, n_wave).
    """
    shape = calzetti_k(wave) / calzetti_k(np.array(5500.0))
    return np.asarray(tau_v, dtype=float)[..., None] * shape


def kriek_conroy_tau(wave: np.ndarray, tau_v, n_dust) -> np.ndarray:
    """Kriek & Conroy (2013) curve: Calzetti times (lambda/5500)^n plus a UV bump.

    ``A(l)/A_V = (k_C(l) + D(l)) / R_V * (l / 5500)^n`` with a Drude bump
    ``D`` of strength ``E_b = 0.85 - 1.9 n`` (FSPS ``dust_type=4``).

    Parameters
    ----------
    wave : ndarray, shape (n_wave,)
    tau_v, n_dust : array_like, shape (n,)
        Optical depth at 5500 A and slope offset from Calzetti.

    Returns
    -------
    ndarray, shape (n, n_wave)
    """
    wave = np.asarray(wave, dtype=float)
    n_dust = np.asarray(n_dust, dtype=float)[..., None]
    lw = wave * BUMP_WIDTH_AA
    drude = lw**2 / ((wave**2 - BUMP_CENTER_AA**2) ** 2 + lw**2) / CALZETTI_RV
    # (k_C + E_b D) / R_V with E_b = 0.85 - 1.9 n, split so that only one
    # (n, n_wave) product and one exp depend on the galaxy.
    base = calzetti_k(wave) / CALZETTI_RV + 0.85 * drude
    a_over_av = (base - 1.9 * n_dust * drude) * np.exp(n_dust * np.log(wave / 5500.0))
    return np.asarray(tau_v, dtype=float)[..., None] * np.clip(a_over_av, 0.0, None)


def birth_cloud_tau(wave: np.ndarray, tau_bc) -> np.ndarray:
    """Charlot & Fall (2000) birth-cloud optical depth ``tau_bc (lambda/5500)^-1``."""
    return np.asarray(tau_bc, dtype=float)[..., None] * (np.asarray(wave, dtype=float) / 5500.0) ** BIRTH_CLOUD_INDEX
