"""Star-formation-history building blocks (pure functions, batched).

Times are lookback times in yr.  Each function returns, at the requested
lookback times t, the cumulative mass fraction ``M(t) = int_0^t SFR dt'`` and
first moment ``K(t) = int_0^t t' SFR dt'`` (yr) of an SFH normalized to one
unit of mass; :func:`sedscale.sps.nodes.hat_weights` turns them into SSP
node weights.
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammainc


def cumulative_table(t: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid integral of ``rate`` (..., n_t) on grid ``t``."""
    steps = 0.5 * np.diff(t) * (rate[..., 1:] + rate[..., :-1])
    return np.concatenate([np.zeros(rate.shape[:-1] + (1,)), np.cumsum(steps, axis=-1)], axis=-1)


def piecewise_constant_moments(bin_edges: np.ndarray, bin_fraction: np.ndarray, t: np.ndarray):
    """M(t) and K(t) of an SFR that is constant within lookback-time bins.

    Parameters
    ----------
    bin_edges : ndarray, shape (n, n_bin + 1)
        Lookback-time bin edges for each galaxy (yr), ascending.
    bin_fraction : ndarray, shape (n, n_bin)
        Mass fraction formed in each bin (sums to 1).
    t : ndarray, shape (n_t,)
        Lookback times (yr).

    Returns
    -------
    M, K : ndarray, shape (n, n_t)
    """
    rate = bin_fraction / np.diff(bin_edges, axis=1)
    lo = bin_edges[:, :-1]
    cum_m = np.concatenate([np.zeros((rate.shape[0], 1)), np.cumsum(bin_fraction, axis=1)], axis=1)
    cum_k = np.concatenate(
        [np.zeros((rate.shape[0], 1)), np.cumsum(rate * 0.5 * (bin_edges[:, 1:] ** 2 - lo**2), axis=1)], axis=1
    )
    # Bin holding each time (the last bin also takes every t beyond the age).
    b = np.zeros((rate.shape[0], t.size), dtype=np.intp)
    for j in range(1, rate.shape[1]):
        b += t[None, :] >= bin_edges[:, j, None]
    u = np.minimum(t[None, :], np.take_along_axis(bin_edges, b + 1, axis=1))
    lo_b = np.take_along_axis(lo, b, axis=1)
    r_b = np.take_along_axis(rate, b, axis=1)
    m = np.take_along_axis(cum_m, b, axis=1) + r_b * (u - lo_b)
    k = np.take_along_axis(cum_k, b, axis=1) + r_b * 0.5 * (u - lo_b) * (u + lo_b)
    return m, k


def delayed_tau_moments(age: np.ndarray, tau: np.ndarray, t: np.ndarray):
    """M(t) and K(t) of a delayed-tau SFH ``SFR(s) ~ s/tau exp(-s/tau)``.

    ``s = age - t`` is the time since the onset of star formation; the SFR is
    zero for t > age.  With ``P`` the regularized lower incomplete gamma
    function, the mass formed after onset up to time s is ``tau P(2, s/tau)``
    and its first moment in s is ``2 tau^2 P(3, s/tau)`` -- both accurate for
    s << tau, where the closed forms cancel catastrophically.

    Parameters
    ----------
    age, tau : ndarray, shape (n,)
        Age of the population and e-folding time (yr), age > 0.
    t : ndarray, shape (n_t,)

    Returns
    -------
    M, K : ndarray, shape (n, n_t)
        Normalized to unit total mass.
    """
    age = np.asarray(age, dtype=float)[:, None]
    tau = np.asarray(tau, dtype=float)[:, None]
    s_now = age  # s at lookback 0
    s_t = np.clip(age - t[None, :], 0.0, None)  # s at lookback t

    def mass(s):
        return tau * gammainc(2, s / tau)

    def moment_s(s):
        return 2 * tau**2 * gammainc(3, s / tau)

    total = mass(s_now)
    m = (total - mass(s_t)) / total
    # int t' SFR dt' with t' = age - s:  age * dM - d(int s SFR ds)
    k = (age * (total - mass(s_t)) - (moment_s(s_now) - moment_s(s_t))) / total
    return m, k
