"""Slow, readable float64 reference implementation of the forward models.

Used only by tests and benchmarks to check the batched engine.  It shares
nothing with :mod:`sedscale.models.base` but the SSP grid, the dust curves,
the filter curves and each model's physical parameterization.  For one
galaxy it

1. samples the SFR on a fine lookback-time grid (midpoint rule, ~6000 log-
   spaced intervals) directly from the model's SFH definition,
2. interpolates the SSP linearly in age and log Z at every fine time,
   at full native wavelength resolution,
3. applies birth-cloud dust to stars younger than 100 Myr and diffuse dust
   to all stars,
4. integrates the redshifted spectrum through the filter curves.
"""
from __future__ import annotations

import numpy as np

from ..cosmology import cosmology_table
from ..observe.filters import SDSS_FILTERS, fnu_from_flambda, load_filters
from ..sps.nodes import BIRTH_CLOUD_AGE_YR, ssp_with_nebular
from ..units import LSUN_ERG_S, NANOMAGGY_CGS
from .base import ZSUN, ForwardModel
from .delayed_tau import MIN_AGE_YR
from .dirichlet import dirichlet_bin_edges
from .provabgs import ProvabgsModel

_N_FINE = 6000


def _fine_grid(tmax_yr: float):
    """Midpoints and widths of fine lookback-time intervals on [0, tmax], with an edge at 100 Myr."""
    edges = np.unique(np.concatenate([[0.0], np.geomspace(1e3, tmax_yr, _N_FINE), [min(BIRTH_CLOUD_AGE_YR, tmax_yr)]]))
    return 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)


def sfr_and_z(model: ForwardModel, phys_row: dict, tage_yr: float, t_yr: np.ndarray):
    """SFR (arbitrary units) and Z at lookback times ``t_yr`` for one galaxy."""
    name = model.name
    if name == "provabgs":
        assert isinstance(model, ProvabgsModel)
        sfr = phys_row["beta"] @ model.bases.sfh_at(t_yr / 1e9)
        z = model.metallicity(phys_row["gamma"][None, :], (t_yr / 1e9)[None, :])[0]
    elif name == "dirichlet":
        edges = dirichlet_bin_edges(np.array([tage_yr]))[0]
        rate = phys_row["sfh_fraction"] / np.diff(edges)
        sfr = rate[np.clip(np.searchsorted(edges, t_yr, side="right") - 1, 0, rate.size - 1)]
        z = np.full_like(t_yr, ZSUN * 10 ** phys_row["log_zsol"])
    elif name == "delayed_tau":
        age = max(min(phys_row["age"] * 1e9, tage_yr), MIN_AGE_YR)
        s = np.clip(age - t_yr, 0.0, None)
        tau = phys_row["tau"] * 1e9
        sfr = np.where(t_yr < age, s / tau * np.exp(-s / tau), 0.0)
        z = np.full_like(t_yr, ZSUN * 10 ** phys_row["log_zsol"])
    else:
        raise ValueError(f"no reference SFH for model {name!r}")
    return sfr, z


def _ssp_at(model: ForwardModel, t_yr: np.ndarray, z: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """SSP spectra at (t, Z) pairs by bilinear interpolation (age linear, log Z linear)."""
    grid = model.ssp
    out = np.empty((t_yr.size, lum.shape[-1]))
    for k in range(t_yr.size):
        ia, wa = grid.interpolation_weights_age(t_yr[k])
        iz, wz = grid.interpolation_weights_z(z[k])
        out[k] = (1 - wz) * ((1 - wa) * lum[iz, ia] + wa * lum[iz, ia + 1]) + wz * (
            (1 - wa) * lum[iz + 1, ia] + wa * lum[iz + 1, ia + 1]
        )
    return out


def _weights_on_nodes(model: ForwardModel, t_yr, z, mass):
    """Spread masses at (t, Z) onto the SSP grid nodes with bilinear weights -> (n_z, n_age)."""
    grid = model.ssp
    w = np.zeros((grid.metallicities.size, grid.ages.size))
    ia, wa = grid.interpolation_weights_age(t_yr)
    iz, wz = grid.interpolation_weights_z(z)
    for di, fa in ((0, 1 - wa), (1, wa)):
        for dj, fz in ((0, 1 - wz), (1, wz)):
            np.add.at(w, (iz + dj, ia + di), mass * fa * fz)
    return w


_NATIVE_CACHE: dict = {}


def _native_spectra(model: ForwardModel, wave_range):
    """Native-resolution SSPs (nebular emission added) inside ``wave_range``.

    Cached per (SSP grid, nebular setting, range); the grid is kept in the
    value so that its ``id`` cannot be reused by another object.
    """
    grid = model.ssp
    key = (id(grid), model.nebular_log_u, tuple(wave_range))
    if key not in _NATIVE_CACHE:
        sel = (grid.wavelength >= wave_range[0]) & (grid.wavelength <= wave_range[1])
        _NATIVE_CACHE[key] = (grid, grid.wavelength[sel], ssp_with_nebular(grid, model.nebular_log_u)[..., sel])
    return _NATIVE_CACHE[key][1:]


def reference_spectrum(model: ForwardModel, theta_row: np.ndarray, z: float, wave_range=(1000.0, 13000.0)):
    """Rest-frame L_lambda (Lsun/A) of one galaxy at full SSP resolution.

    Returns
    -------
    wave : ndarray
        Native SSP wavelengths inside ``wave_range`` (Angstrom).
    lum : ndarray
        L_lambda in Lsun/Angstrom (float64).
    """
    theta_row = model.prior.validate(theta_row)
    phys = {k: v[0] for k, v in model.physical(theta_row).items()}
    tage = float(model.tage_yr(np.array([z]))[0])
    wave, lum = _native_spectra(model, wave_range)
    t, dt = _fine_grid(tage)
    sfr, zt = sfr_and_z(model, phys, tage, t)
    mass = sfr * dt
    mass = mass / mass.sum()
    burst = None
    if model.name == "provabgs":
        assert isinstance(model, ProvabgsModel)
        f_burst = phys["f_burst"] if phys["t_burst"] < tage / 1e9 else 0.0
        mass = mass * (1 - f_burst)
        if f_burst > 0:
            tb = np.array([phys["t_burst"] * 1e9])
            zb = model.metallicity(phys["gamma"][None, :], tb[None, :] / 1e9)[0]
            burst = (tb[0], f_burst * _ssp_at(model, tb, zb, lum)[0])
    tau_all, tau_bc = model.optical_depths({k: np.atleast_1d(v) if np.ndim(v) == 0 else v[None] for k, v in phys.items()}, wave)
    young = t < BIRTH_CLOUD_AGE_YR
    spectra = []
    for mask in (young, ~young):
        w = _weights_on_nodes(model, t[mask], zt[mask], mass[mask])
        spectra.append(np.tensordot(w, lum, axes=([0, 1], [0, 1])))
    l_young, l_old = spectra
    if burst is not None:
        if burst[0] < BIRTH_CLOUD_AGE_YR:
            l_young = l_young + burst[1]
        else:
            l_old = l_old + burst[1]
    if tau_bc is not None:
        l_young = l_young * np.exp(-tau_bc[0])
    total = l_young + l_old
    if tau_all is not None:
        total = total * np.exp(-tau_all[0])
    return wave, total * 10 ** phys["log_mass"]


def reference_photometry(model: ForwardModel, theta_row, z: float, filters=SDSS_FILTERS) -> np.ndarray:
    """SDSS fluxes (nanomaggies) of one galaxy by direct filter integration."""
    wave, lum = reference_spectrum(model, theta_row, z)
    dl = cosmology_table(model.cosmology).luminosity_distance_cm(np.array([z]))[0]
    wave_obs = wave * (1 + z)
    flambda = lum * LSUN_ERG_S / (4 * np.pi * dl**2 * (1 + z))
    return fnu_from_flambda(load_filters(filters), wave_obs, flambda) / NANOMAGGY_CGS
