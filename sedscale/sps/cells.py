"""SSP spectra averaged over lookback-time cells.

A composite stellar population is the integral of SFR(t) * SSP(t, Z(t)) over
lookback time t.  Splitting t into cells and assuming the SFR and Z are
constant within each cell turns the integral into a matrix product

    L(lambda) = sum_{Z, cell} W[Z, cell] * S[Z, cell, lambda]

where ``S`` is the SSP averaged over the cell (computed once here) and ``W``
the mass formed in the cell, split between the two bracketing metallicities.
This is what makes the forward models batched linear algebra.

Cells are 0.1 dex wide in lookback time from 1 Myr to 10^10.2 yr (plus a
first cell [0, 1 Myr]); an edge falls exactly at 100 Myr, the birth-cloud
dust boundary.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import SSPGrid
from .rebin import rebin_flux

#: Default lookback-time cell edges in yr.
DEFAULT_CELL_EDGES_YR = np.concatenate([[0.0], 10.0 ** np.round(np.arange(6.0, 10.2001, 0.1), 2)])
#: Stars younger than this sit in their birth clouds (Charlot & Fall 2000).
BIRTH_CLOUD_AGE_YR = 1e8
#: Sub-samples per cell when averaging the SSP over a cell.
_SUBSAMPLES = 64


@dataclass(frozen=True)
class CellLibrary:
    """Cell-averaged SSP spectra on a binned wavelength grid.

    Attributes
    ----------
    cell_edges : ndarray, shape (n_cell + 1,)
        Lookback-time cell edges in yr.
    wave_edges : ndarray, shape (n_wave + 1,)
        Wavelength bin edges in Angstrom.
    metallicities : ndarray, shape (n_z,)
        Absolute Z of the grid.
    cell_lum : ndarray, shape (n_z, n_cell, n_wave)
        Mean L_lambda (Lsun/A per Msun formed) of a constant-SFR population
        spanning the cell (nebular emission included when requested).
    cell_surviving : ndarray, shape (n_z, n_cell)
        Mean living-mass fraction over the cell.
    native_lum : ndarray, shape (n_z, n_age, n_wave)
        The SSPs at the native ages on the same wavelength bins (for bursts).
    native_ages : ndarray, shape (n_age,)
        Native SSP ages in yr.
    native_surviving : ndarray, shape (n_z, n_age)
    """

    cell_edges: np.ndarray
    wave_edges: np.ndarray
    metallicities: np.ndarray
    cell_lum: np.ndarray
    cell_surviving: np.ndarray
    native_lum: np.ndarray
    native_ages: np.ndarray
    native_surviving: np.ndarray

    @property
    def wavelength(self) -> np.ndarray:
        """Bin centres (geometric mean of the edges) in Angstrom."""
        return np.sqrt(self.wave_edges[1:] * self.wave_edges[:-1])

    @property
    def young(self) -> np.ndarray:
        """Boolean mask of cells entirely younger than the birth-cloud age."""
        return self.cell_edges[1:] <= BIRTH_CLOUD_AGE_YR * (1 + 1e-9)


def ssp_with_nebular(grid: SSPGrid, log_u: float | None) -> np.ndarray:
    """SSP L_lambda (n_z, n_age, n_wave) on the native grid, nebular emission added.

    Nebular continuum and lines (Cloudy grids at fixed ``log_u``, same
    metallicity as the stars) are added to SSPs younger than the oldest
    nebular age; lines are deposited into the native wavelength pixel that
    holds them, conserving their luminosity.  The ionizing flux below 912 A
    is removed (it was absorbed by the gas).
    """
    lum = grid.lum.copy()
    if log_u is None:
        return lum
    neb = grid.nebular
    if neb is None:
        raise ValueError("nebular emission requested but the SSP grid was loaded without nebular=True")
    if not np.allclose(neb.metallicities, grid.metallicities):
        raise ValueError("nebular and stellar metallicity grids differ")
    iu = int(np.argmin(np.abs(neb.log_u - log_u)))
    if abs(neb.log_u[iu] - log_u) > 1e-6:
        raise ValueError(f"log_u={log_u} not on the nebular grid {neb.log_u.tolist()}")
    wave = grid.wavelength
    edges = np.concatenate([[wave[0]], 0.5 * (wave[1:] + wave[:-1]), [wave[-1]]])
    width = np.diff(edges)
    line_pix = np.clip(np.searchsorted(edges, neb.line_wavelength) - 1, 0, wave.size - 1)
    ionizing = wave < 911.8
    young = grid.ages <= neb.ages[-1] * (1 + 1e-9)
    for ia in np.flatnonzero(young):
        age = max(grid.ages[ia], neb.ages[0])
        j = int(np.clip(np.searchsorted(neb.ages, age) - 1, 0, neb.ages.size - 2))
        w = np.clip((age - neb.ages[j]) / (neb.ages[j + 1] - neb.ages[j]), 0, 1)
        cont = (1 - w) * neb.cont_lum[iu, :, j] + w * neb.cont_lum[iu, :, j + 1]
        lines = (1 - w) * neb.line_lum[iu, :, j] + w * neb.line_lum[iu, :, j + 1]
        lum[:, ia, ionizing] = 0.0
        lum[:, ia, :] += cont
        for iz in range(grid.metallicities.size):
            np.add.at(lum[iz, ia], line_pix, lines[iz] / width[line_pix])
    return lum


def _interp_age(ages: np.ndarray, lum: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``lum[..., age, :]`` at ages ``t`` (yr)."""
    t = np.clip(t, ages[0], ages[-1])
    i = np.clip(np.searchsorted(ages, t, side="right") - 1, 0, ages.size - 2)
    w = (t - ages[i]) / (ages[i + 1] - ages[i])
    return lum[:, i] * (1 - w)[None, :, None] + lum[:, i + 1] * w[None, :, None]


def build_cell_library(
    grid: SSPGrid,
    wave_edges: np.ndarray,
    cell_edges: np.ndarray = DEFAULT_CELL_EDGES_YR,
    log_u: float | None = None,
) -> CellLibrary:
    """Average the SSP grid over lookback-time cells and wavelength bins.

    Parameters
    ----------
    grid : SSPGrid
    wave_edges : ndarray
        Wavelength bin edges (Angstrom) of the output.
    cell_edges : ndarray
        Lookback-time cell edges (yr), starting at 0.
    log_u : float or None
        Add nebular emission at this ionization parameter.
    """
    lum = ssp_with_nebular(grid, log_u)
    native = rebin_flux(grid.wavelength, lum, wave_edges)
    n_cell = cell_edges.size - 1
    cell_lum = np.empty((grid.metallicities.size, n_cell, wave_edges.size - 1))
    cell_surv = np.empty((grid.metallicities.size, n_cell))
    # Midpoint sub-samples, uniform in t: the SSP is averaged as a
    # constant-SFR population over the cell.
    frac = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES
    for c in range(n_cell):
        t = cell_edges[c] + frac * (cell_edges[c + 1] - cell_edges[c])
        cell_lum[:, c] = _interp_age(grid.ages, native, t).mean(axis=1)
        cell_surv[:, c] = _interp_age(grid.ages, grid.surviving_mass_fraction[..., None], t)[..., 0].mean(axis=1)
    return CellLibrary(
        cell_edges=np.asarray(cell_edges, dtype=float),
        wave_edges=np.asarray(wave_edges, dtype=float),
        metallicities=grid.metallicities,
        cell_lum=cell_lum,
        cell_surviving=cell_surv,
        native_lum=native,
        native_ages=grid.ages,
        native_surviving=grid.surviving_mass_fraction,
    )
