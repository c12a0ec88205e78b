"""Derived galaxy properties from a forward model's star-formation history.

Stellar masses (living stars; living stars plus remnants), mass formed, mean
SFRs over 100 Myr and 1 Gyr, mass-weighted metallicity and age, computed
from the SSP node library: by closed-form integrals over the bins of a
binned SFH (:func:`binned_derived`, fast) or from the hat-function node
weights of any SFH (:func:`node_derived`, the reference).
:meth:`sedscale.models.base.ForwardModel.derived` chooses between them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..sps.nodes import NodeLibrary, bilinear, bracket_log, hat_weights
from ..sps.remnants import remnant_mass_fraction

if TYPE_CHECKING:
    from .base import BinnedSFH, StarFormation

__all__ = ["DERIVED_UNITS", "SFR_WINDOWS_YR", "binned_derived", "hat_young_old", "mass_tables", "node_derived",
           "window_node"]

#: Lookback windows (yr) of the mean SFRs ``sfr_100myr`` and ``sfr_1gyr``.
SFR_WINDOWS_YR = (1e8, 1e9)


#: Unit of every derived property (catalog columns).
DERIVED_UNITS = {
    "log_mstar": "dex(Msun)",
    "log_mstar_total": "dex(Msun)",
    "log_mformed": "dex(Msun)",
    "sfr_100myr": "Msun/yr",
    "sfr_1gyr": "Msun/yr",
    "z_mw": "",
    "age_mw": "Gyr",
    "tau_bc": "",
    "tau_ism": "",
    "tau_v": "",
}


def window_node(lib: NodeLibrary, window: float) -> int:
    """Index of the node age closest to an SFR window (the windows are nodes)."""
    return int(np.argmin(np.abs(lib.node_ages - window)))


def hat_young_old(sf: StarFormation, lib: NodeLibrary):
    """Hat-function node weights (n, n_node) of the continuous SFH, split at 100 Myr."""
    left, right = hat_weights(lib.node_ages, sf.cum_mass, sf.cum_moment)
    out = []
    for mask in (lib.young_intervals, ~lib.young_intervals):
        w = np.zeros(sf.cum_mass.shape)
        w[:, :-1] += left * mask
        w[:, 1:] += right * mask
        out.append(w)
    return out[0], out[1]


def mass_tables(lib: NodeLibrary) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stellar mass per Msun formed at the nodes, (n_z, n_node), and its cumulative integral (yr).

    ``log_mstar``: living stars (the grid's surviving fraction);
    ``log_mstar_total``: living stars plus remnants (:mod:`sedscale.sps.remnants`).
    """
    living = lib.node_surviving
    out = {}
    for name, frac in (("log_mstar", living), ("log_mstar_total", living + remnant_mass_fraction(living))):
        steps = 0.5 * np.diff(lib.node_ages) * (frac[:, 1:] + frac[:, :-1])
        out[name] = (frac, np.concatenate([np.zeros((frac.shape[0], 1)), np.cumsum(steps, axis=1)], axis=1))
    return out


def node_derived(sf: StarFormation, lib: NodeLibrary, mass_tables: dict) -> dict[str, np.ndarray]:
    """Derived properties (without dust) from the hat-function node weights (any SFH, bursts included).

    Parameters
    ----------
    sf : StarFormation
        The SFH at the library's node ages.
    lib : NodeLibrary
    mass_tables : dict
        :func:`mass_tables` of ``lib``.

    Returns
    -------
    dict
        As :func:`binned_derived`.
    """
    w_young, w_old = hat_young_old(sf, lib)
    w = w_young + w_old  # (n, n_node), continuous SFH
    iz, wz = bracket_log(lib.metallicities, sf.node_z)
    cols = np.arange(lib.node_ages.size)[None, :]
    stellar = {}
    for name, (frac, _) in mass_tables.items():
        stellar[name] = np.sum(w * ((1 - wz) * frac[iz, cols] + wz * frac[iz + 1, cols]), axis=1)
    total = w.sum(axis=1)
    mass_z = np.sum(w * sf.node_z, axis=1)
    moment = sf.cum_moment[:, -1]
    formed = {}
    for window in SFR_WINDOWS_YR:
        formed[window] = sf.cum_mass[:, window_node(lib, window)]
    if sf.burst_fraction is not None:
        # A model with a burst sets its fraction, age and metallicity together.
        assert sf.burst_age is not None and sf.burst_z is not None
        fb = sf.burst_fraction
        surv_b = bilinear(
            lib.native_surviving[..., None], lib.native_ages, lib.metallicities, sf.burst_age, sf.burst_z
        )[:, 0]
        stellar["log_mstar"] = stellar["log_mstar"] + fb * surv_b
        stellar["log_mstar_total"] = stellar["log_mstar_total"] + fb * (surv_b + remnant_mass_fraction(surv_b))
        total = total + fb
        mass_z = mass_z + fb * sf.burst_z
        moment = moment + fb * sf.burst_age
        for window in formed:
            formed[window] = formed[window] + fb * (sf.burst_age < window)
    m = sf.mass_formed
    out = {
        **{name: np.log10(m * mass) for name, mass in stellar.items()},
        "log_mformed": np.log10(m * total),
        "sfr_100myr": m * formed[1e8] / 1e8,
        "sfr_1gyr": m * formed[1e9] / 1e9,
        "z_mw": mass_z / total,
        "age_mw": moment / total / 1e9,
    }
    return out


def binned_derived(bins: BinnedSFH, lib: NodeLibrary, mass_tables: dict) -> dict[str, np.ndarray]:
    """Derived properties of a binned SFH from closed-form integrals over each bin.

    The node-weight path sums ``w_i s_i`` with hat-function weights, which
    is the integral of SFR(t) times the surviving fraction interpolated
    linearly between nodes.  For a constant SFR on [a, b] that integral is
    ``(C(b) - C(a)) / (b - a)`` with C the cumulative integral of the
    interpolated surviving fraction (at the nodes, a quadratic in between),
    so every property is a sum over the bins of the fractions times per-bin
    factors.  The same holds for living stars plus remnants.  Like the node weights, the integrals
    stop at the oldest node.

    Consecutive rows with equal edges (the samples of one galaxy) share the
    per-bin factors, which are computed once per run of rows.

    Parameters
    ----------
    bins : BinnedSFH
    lib : NodeLibrary
    mass_tables : dict
        Name -> (stellar mass per Msun formed at the nodes (n_z, n_node),
        its cumulative integral (yr)), as :func:`mass_tables`.

    Returns
    -------
    dict
        One log10 mass per ``mass_tables`` entry, ``log_mformed``,
        ``sfr_100myr``, ``sfr_1gyr``, ``z_mw``, ``age_mw``, each (n,).
    """
    edges, frac = bins.edges, bins.fraction
    n = edges.shape[0]
    if n == 0:
        return {k: np.empty(0) for k in (*mass_tables, "log_mformed", "sfr_100myr", "sfr_1gyr", "z_mw", "age_mw")}
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = np.any(edges[1:] != edges[:-1], axis=1)
    run = np.cumsum(new_run) - 1
    e = edges[new_run]  # (n_run, n_bin + 1)
    ages = lib.node_ages
    width = np.diff(e, axis=1)
    ec = np.clip(e, 0.0, ages[-1])
    # C_k(t) at every edge for every grid metallicity: (n_run, n_z, n_bin + 1).
    j = np.clip(np.searchsorted(ages, ec, side="right") - 1, 0, ages.size - 2)
    dt = ec - ages[j]
    per_bin = {}
    for name, (node_frac, cum) in mass_tables.items():
        s0 = node_frac[:, j]
        slope = (node_frac[:, j + 1] - s0) / (ages[j + 1] - ages[j])
        c_edge = (cum[:, j] + s0 * dt + 0.5 * slope * dt * dt).transpose(1, 0, 2)
        per_bin[name] = np.diff(c_edge, axis=2) / width[:, None, :]  # (n_run, n_z, n_bin)
    per_bin.update({
        "total": np.diff(ec, axis=1) / width,
        "moment": 0.5 * np.diff(ec * ec, axis=1) / width,
    })
    for window in SFR_WINDOWS_YR:
        t = ages[window_node(lib, window)]
        per_bin[window] = (np.clip(t, e[:, :-1], e[:, 1:]) - e[:, :-1]) / width
    iz, wz = bracket_log(lib.metallicities, bins.metallicity)
    total = np.einsum("ij,ij->i", frac, per_bin["total"][run])
    moment = np.einsum("ij,ij->i", frac, per_bin["moment"][run])
    m = bins.mass_formed
    out = {}
    for name in mass_tables:
        a = per_bin[name]
        mass = (1 - wz) * np.einsum("ij,ij->i", frac, a[run, iz]) + wz * np.einsum("ij,ij->i", frac, a[run, iz + 1])
        out[name] = np.log10(m * mass)
    return {
        **out,
        "log_mformed": np.log10(m * total),
        "sfr_100myr": m * np.einsum("ij,ij->i", frac, per_bin[1e8][run]) / 1e8,
        "sfr_1gyr": m * np.einsum("ij,ij->i", frac, per_bin[1e9][run]) / 1e9,
        "z_mw": bins.metallicity.astype(float),
        "age_mw": moment / total / 1e9,
    }
