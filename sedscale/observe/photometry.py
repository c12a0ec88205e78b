"""Observation operator: rest-frame spectra -> observed broadband fluxes.

For a rest-frame L_lambda (Lsun/A) at redshift z the observed flux density
is ``f_lambda(l_obs) = L_lambda(l_obs / (1+z)) / (4 pi d_L^2 (1+z))`` and the
band f_nu (photon counting, see :mod:`sedscale.observe.filters`) becomes

    f_nu = (1+z) / (4 pi d_L^2) * int L(l) R(l (1+z)) l dl / (c int R/l dl)

with ``l`` the rest wavelength.  For a binned spectrum the integral is a dot
product with ``P_b(z)_k = int_{bin k} R_b(l (1+z)) l dl / (c int R_b/l dl)``.
:class:`PhotometryOperator` tabulates P on a redshift grid (dz = 0.001) and
interpolates linearly in z; the distance factor is applied exactly.
Rest-frame light below the Lyman limit (912 A) is not transmitted: ionizing
photons are absorbed by the galaxy's gas and the intergalactic medium
(escape fraction 0; it matters only for far-UV bands at z >~ 0.45).
"""
from __future__ import annotations

import numpy as np

from ..cosmology import DEFAULT_COSMOLOGY, cosmology_table
from ..errors import ParameterError
from ..units import LSUN_ERG_S, NANOMAGGY_CGS
from .filters import SDSS_FILTERS, load_filters

_SUBSAMPLES = 8
#: Lyman limit (Angstrom).
LYMAN_LIMIT_AA = 911.75


class PhotometryOperator:
    """Binned rest-frame spectra -> observed fluxes in nanomaggies.

    Parameters
    ----------
    wave_edges : ndarray
        Rest-frame wavelength bin edges (Angstrom) of the input spectra.
    filters : sequence of str
        sedpy filter names.
    cosmology : str
        Astropy cosmology realization.
    z_max : float
        Largest redshift tabulated.
    dz : float
        Redshift grid step.
    """

    def __init__(self, wave_edges, filters=SDSS_FILTERS, cosmology=DEFAULT_COSMOLOGY, z_max=0.98, dz=1e-3):
        self.wave_edges = np.asarray(wave_edges, dtype=float)
        self.filter_names = tuple(filters)
        self.filters = load_filters(self.filter_names)
        self.cosmology = cosmology
        self.z_max = float(z_max)
        self.dz = float(dz)
        self.z_grid = np.arange(0.0, self.z_max + 2 * self.dz, self.dz)
        blue_limit = min(f.wavelength[f.transmission > 0].min() for f in self.filters) / (1 + self.z_max)
        red_limit = max(f.wavelength[f.transmission > 0].max() for f in self.filters)
        if self.wave_edges[0] > blue_limit or self.wave_edges[-1] < red_limit:
            raise ParameterError(
                f"rest-frame wavelength range [{self.wave_edges[0]:.0f}, {self.wave_edges[-1]:.0f}] A "
                f"does not cover the filters up to z={self.z_max} (needs < {blue_limit:.0f} and > {red_limit:.0f})"
            )
        matrix = self._tabulate().astype(np.float32)
        # P(z_j) and P(z_j+1) side by side, (n_z - 1, n_wave, 2 n_band).
        self._stacked = np.ascontiguousarray(np.concatenate([matrix[:-1], matrix[1:]], axis=2))

    @property
    def n_bands(self) -> int:
        return len(self.filters)

    def _tabulate(self) -> np.ndarray:
        """P[j, k, b] on the redshift grid (Angstrom^2 s, see module docstring)."""
        lo, hi = self.wave_edges[:-1], self.wave_edges[1:]
        frac = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES
        sub = lo[:, None] + frac[None, :] * (hi - lo)[:, None]  # (k, s)
        dl = ((hi - lo) / _SUBSAMPLES)[:, None]
        out = np.empty((self.z_grid.size, lo.size, self.n_bands))
        for b, f in enumerate(self.filters):
            resp = f.response(sub[None, :, :] * (1 + self.z_grid)[:, None, None])
            out[:, :, b] = np.sum(resp * (sub * (sub >= LYMAN_LIMIT_AA))[None] * dl[None], axis=-1) / f.norm
        return out

    def project(self, lum: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Fluxes in nanomaggies of binned rest-frame spectra.

        Parameters
        ----------
        lum : ndarray, shape (n, n_wave)
            Mean L_lambda per bin in Lsun/Angstrom.
        z : ndarray, shape (n,)
            Redshifts in (0, z_max].

        Returns
        -------
        ndarray, shape (n, n_band)
        """
        z = np.asarray(z, dtype=float)
        if np.any(~np.isfinite(z)) or np.any(z <= 0) or np.any(z > self.z_max):
            raise ParameterError(f"redshift must be in (0, {self.z_max}]")
        pos = z / self.dz
        j = np.minimum(pos.astype(int), self.z_grid.size - 2)
        w = (pos - j)[:, None]
        lum = np.asarray(lum, dtype=np.float32)
        band = np.empty((lum.shape[0], self.n_bands))
        # Galaxies sharing a redshift-grid cell share the two response
        # matrices: one small matrix product per occupied cell.
        order = np.argsort(j, kind="stable")
        cells, starts = np.unique(j[order], return_index=True)
        for cell, rows in zip(cells, np.split(order, starts[1:])):
            both = lum[rows] @ self._stacked[cell]
            band[rows] = (1 - w[rows]) * both[:, : self.n_bands] + w[rows] * both[:, self.n_bands :]
        dl = cosmology_table(self.cosmology).luminosity_distance_cm(z)
        factor = (1 + z) * LSUN_ERG_S / (4 * np.pi * dl**2) / NANOMAGGY_CGS
        return band * factor[:, None]
