"""Star-formation-history building blocks (pure functions, batched).

Times are lookback times in yr unless a name says otherwise.  Every function
returns, for each galaxy and lookback-time cell, the *fraction* of the mass
formed in that cell; fractions sum to one over the cells inside the age of
the galaxy.
"""
from __future__ import annotations

import numpy as np


def cumulative_table(t: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid integral of ``rate`` (..., n_t) on grid ``t``."""
    steps = 0.5 * np.diff(t) * (rate[..., 1:] + rate[..., :-1])
    return np.concatenate([np.zeros(rate.shape[:-1] + (1,)), np.cumsum(steps, axis=-1)], axis=-1)


def fractions_from_cumulative(cum_lo: np.ndarray, cum_hi: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Cell mass fractions from the cumulative mass at cell edges; 0 where total == 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (cum_hi - cum_lo) / total[:, None]
    return np.where(total[:, None] > 0, np.clip(frac, 0.0, None), 0.0)


def piecewise_constant_fractions(bin_edges: np.ndarray, bin_fraction: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Spread per-bin mass fractions (constant SFR within a bin) over cells.

    Parameters
    ----------
    bin_edges : ndarray, shape (n, n_bin + 1)
        Lookback-time edges of the SFH bins for each galaxy (yr).
    bin_fraction : ndarray, shape (n, n_bin)
        Mass fraction formed in each bin.
    lo, hi : ndarray, shape (n, n_cell)
        Cell limits inside the galaxy age (see ``cell_coverage``).

    Returns
    -------
    ndarray, shape (n, n_cell)
    """
    b_lo = bin_edges[:, :-1, None]
    b_hi = bin_edges[:, 1:, None]
    overlap = np.clip(np.minimum(hi[:, None, :], b_hi) - np.maximum(lo[:, None, :], b_lo), 0.0, None)
    rate = bin_fraction / np.diff(bin_edges, axis=1)
    return np.einsum("nb,nbc->nc", rate, overlap)


def delayed_tau_cumulative(s: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Mass formed by a delayed-tau SFH ``SFR ~ s/tau exp(-s/tau)`` up to time ``s``.

    ``s`` is the time since the onset of star formation, in units of
    ``tau``'s unit; the result is in units of tau (``tau * (1 - (1+x) e^-x)``).
    A series expansion avoids cancellation for x < 1e-4.
    """
    x = np.clip(s / tau, 0.0, None)
    exact = -np.expm1(-x) - x * np.exp(-x)
    series = x**2 / 2 - x**3 / 3
    return tau * np.where(x < 1e-4, series, exact)
