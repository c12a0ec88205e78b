"""Calibration diagnostics of posterior samples on simulations with known truth.

Every diagnostic here reduces to one number per test simulation (and per
parameter, for marginal diagnostics) that is *uniform on [0, 1] when the
posterior is calibrated*:

fractional SBC rank ``u`` (Talts et al. 2018)
    ``(#{samples < truth} + U) / (L + 1)`` with ``U ~ U(0, 1)`` breaking the
    discreteness of the integer rank among ``L`` samples.  ``u`` is also the
    percentile of the truth in the marginal posterior (the SEDflow p-p plot).
central level ``|2u - 1|``
    Credibility of the smallest *central* marginal interval that contains
    the truth.
HPD level
    Fraction of posterior samples whose density exceeds the density at the
    truth: credibility of the smallest highest-density region that contains
    it (joint over all parameters; needs ``log_prob``).
TARP level (Lemos et al. 2023)
    Fraction of samples closer to a random reference point than the truth
    (joint, needs samples only).

The expected coverage of a credibility level ``alpha`` is the fraction of
simulations whose level is ``<= alpha``; it equals ``alpha`` for a calibrated
posterior.  Below the diagonal the posterior is over-confident (too narrow),
above it under-confident.

Pass/fail (:class:`CalibrationThresholds`)
-------------------------------------------
A parameter passes when three tests of its fractional ranks all give
p-values ``>= p_value`` (default 0.001):

* chi2 of the ``n_bins``-bin rank histogram against a flat one (any shape),
* Kolmogorov-Smirnov of ``u`` against U(0, 1) (bias: a shifted posterior),
* Kolmogorov-Smirnov of ``|2u - 1|`` against U(0, 1) (dispersion: a too
  narrow or too wide posterior, to which the KS test of ``u`` is blind).

With 12 parameters and 3 tests each an exactly calibrated posterior fails
some parameter with probability ~3.5%.  The largest deviation of the central
coverage curve from the diagonal (``max_coverage_error``) is reported as the
effect size; it is not a pass criterion because its noise scales as
``1/sqrt(n)``.  Joint levels (HPD, TARP) pass on their KS test alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ParameterError

#: Default p-value below which a uniformity test fails.
DEFAULT_P_VALUE = 1e-3
#: Bins of the SBC rank histograms.
DEFAULT_N_BINS = 20
#: Credibility levels of the coverage curves.
DEFAULT_LEVELS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class CalibrationThresholds:
    """Documented pass/fail settings (see the module docstring).

    Attributes
    ----------
    p_value : float
        A uniformity test fails below this p-value.
    n_bins : int
        Bins of the rank histogram used by the chi2 test.
    band_level : float
        Probability content of the per-bin band drawn on rank histograms.
    """

    p_value: float = DEFAULT_P_VALUE
    n_bins: int = DEFAULT_N_BINS
    band_level: float = 0.99

    def __post_init__(self):
        if not 0 < self.p_value < 1:
            raise ParameterError(f"p_value must be in (0, 1), got {self.p_value}")
        if self.n_bins < 2:
            raise ParameterError(f"n_bins must be >= 2, got {self.n_bins}")
        if not 0 < self.band_level < 1:
            raise ParameterError(f"band_level must be in (0, 1), got {self.band_level}")


# ----------------------------------------------------------------- per-sim values
def _check_samples(samples, theta_true) -> tuple[np.ndarray, np.ndarray]:
    samples = np.asarray(samples, dtype=float)
    theta_true = np.asarray(theta_true, dtype=float)
    if samples.ndim != 3:
        raise ParameterError(f"samples must have shape (n_sims, n_samples, n_params), got {samples.shape}")
    n, n_samples, d = samples.shape
    if theta_true.shape != (n, d):
        raise ParameterError(f"theta_true must have shape ({n}, {d}) to match samples, got {theta_true.shape}")
    if n_samples < 1:
        raise ParameterError("need at least one posterior sample per simulation")
    if not (np.all(np.isfinite(samples)) and np.all(np.isfinite(theta_true))):
        raise ParameterError("samples and theta_true must be finite (drop failed simulations first)")
    return samples, theta_true


def sbc_ranks(samples, theta_true, rng: np.random.Generator | None = None) -> np.ndarray:
    """Integer SBC ranks: posterior samples below the true value, per parameter.

    Parameters
    ----------
    samples : array_like, shape (n_sims, L, d)
        Posterior samples of each simulation.
    theta_true : array_like, shape (n_sims, d)
        True parameters.
    rng : numpy.random.Generator, optional
        Breaks ties: a truth equal to ``m`` samples (a parameter with a point
        mass, e.g. a box edge both the truth and the flow's samples are clamped
        to) gets rank ``below + k``, k uniform on 0..m, the randomized rank of
        a discrete distribution.  Without it (or without ties) ties count as
        not below; the generator is only drawn from where there are ties.

    Returns
    -------
    ndarray of int, shape (n_sims, d)
        Ranks in ``0 .. L``; uniform on these L + 1 values when calibrated.
    """
    samples, theta_true = _check_samples(samples, theta_true)
    ranks = np.sum(samples < theta_true[:, None, :], axis=1)
    if rng is not None:
        ties = np.sum(samples == theta_true[:, None, :], axis=1)
        if ties.any():
            ranks = ranks + rng.integers(0, ties + 1)
    return ranks


def fractional_ranks(ranks, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Randomized fractional ranks ``(rank + U(0,1)) / (L + 1)``, exactly U(0, 1) if calibrated.

    Parameters
    ----------
    ranks : array_like of int
        Integer ranks in ``0 .. n_samples`` (any shape).
    n_samples : int
        Posterior samples ``L`` behind each rank.
    rng : numpy.random.Generator
        Source of the tie-breaking uniforms.
    """
    ranks = np.asarray(ranks)
    if np.any(ranks < 0) or np.any(ranks > n_samples):
        raise ParameterError(f"ranks must lie in 0..{n_samples}")
    return (ranks + rng.random(ranks.shape)) / (n_samples + 1)


def central_levels(u) -> np.ndarray:
    """Credibility of the smallest central interval containing the truth, ``|2u - 1|``."""
    return np.abs(2.0 * np.asarray(u, dtype=float) - 1.0)


def _randomized_level(n_inside: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    return (n_inside + rng.random(n_inside.shape)) / (n_samples + 1)


def hpd_levels(logp_samples, logp_true, rng: np.random.Generator) -> np.ndarray:
    """Credibility of the smallest highest-density region containing the truth.

    Parameters
    ----------
    logp_samples : array_like, shape (n_sims, L)
        Posterior log density at each simulation's own posterior samples.
    logp_true : array_like, shape (n_sims,)
        Posterior log density at the true parameters.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, shape (n_sims,)
        Randomized fraction of samples with higher density than the truth;
        U(0, 1) when calibrated.  A truth with ``-inf`` density (outside the
        flow's support) gets level ~1.
    """
    logp_samples = np.asarray(logp_samples, dtype=float)
    logp_true = np.asarray(logp_true, dtype=float)
    if logp_samples.ndim != 2 or logp_true.shape != (logp_samples.shape[0],):
        raise ParameterError(
            f"logp_samples must be (n_sims, L) and logp_true (n_sims,), got {logp_samples.shape}, {logp_true.shape}"
        )
    if np.any(np.isnan(logp_samples)) or np.any(np.isnan(logp_true)):
        raise ParameterError("log densities must not be NaN")
    higher = np.sum(logp_samples > logp_true[:, None], axis=1)
    return _randomized_level(higher, logp_samples.shape[1], rng)


def tarp_levels(samples, theta_true, low, high, rng: np.random.Generator, references=None) -> np.ndarray:
    """TARP credibility levels (Lemos et al. 2023) of the truths.

    Parameters are rescaled to the unit box ``(theta - low) / (high - low)``
    before Euclidean distances are taken, so that every parameter counts the
    same.

    Parameters
    ----------
    samples : array_like, shape (n_sims, L, d)
    theta_true : array_like, shape (n_sims, d)
    low, high : array_like, shape (d,)
        Prior box (or any per-parameter scale) in the units of ``theta``.
    rng : numpy.random.Generator
        Draws the references (uniform in the box) and the tie-breaking uniforms.
    references : array_like, shape (n_sims, d), optional
        Reference points in the units of ``theta`` instead of random ones.

    Returns
    -------
    ndarray, shape (n_sims,)
        Randomized fraction of samples closer to the reference than the
        truth; U(0, 1) when calibrated.
    """
    samples, theta_true = _check_samples(samples, theta_true)
    low = np.asarray(low, dtype=float)
    scale = np.asarray(high, dtype=float) - low
    d = theta_true.shape[1]
    if low.shape != (d,) or scale.shape != (d,) or np.any(scale <= 0):
        raise ParameterError(f"low and high must be ({d},) with high > low")
    if references is None:
        ref = rng.random(theta_true.shape)
    else:
        ref = (np.asarray(references, dtype=float) - low) / scale
        if ref.shape != theta_true.shape:
            raise ParameterError(f"references must have shape {theta_true.shape}, got {ref.shape}")
    s = (samples - low) / scale
    t = (theta_true - low) / scale
    d_samples = np.linalg.norm(s - ref[:, None, :], axis=2)
    d_true = np.linalg.norm(t - ref, axis=1)
    closer = np.sum(d_samples < d_true[:, None], axis=1)
    return _randomized_level(closer, samples.shape[1], rng)


# ------------------------------------------------------------- curves and tests
def expected_coverage(levels, alphas=DEFAULT_LEVELS) -> np.ndarray:
    """Fraction of simulations whose credibility level is ``<= alpha``.

    Parameters
    ----------
    levels : array_like, shape (n_sims,) or (n_sims, k)
    alphas : array_like, shape (m,)

    Returns
    -------
    ndarray, shape (m,) or (m, k)
        Empirical coverage at each credibility ``alpha`` (the diagonal when
        calibrated).  Applied to fractional ranks ``u`` this is the p-p plot.
    """
    levels = np.asarray(levels, dtype=float)
    alphas = np.asarray(alphas, dtype=float)
    if levels.shape[0] == 0:
        raise ParameterError("no simulations to compute a coverage from")
    return np.mean(levels[None, ...] <= alphas.reshape((-1,) + (1,) * levels.ndim), axis=1)


def max_coverage_error(levels, alphas=DEFAULT_LEVELS) -> np.ndarray:
    """Largest ``|coverage(alpha) - alpha|`` over ``alphas`` (per column of ``levels``)."""
    alphas = np.asarray(alphas, dtype=float)
    cov = expected_coverage(levels, alphas)
    return np.max(np.abs(cov - alphas.reshape((-1,) + (1,) * (cov.ndim - 1))), axis=0)


def rank_histogram(u, n_bins: int = DEFAULT_N_BINS) -> np.ndarray:
    """Counts of fractional ranks in ``n_bins`` equal bins of [0, 1].

    Parameters
    ----------
    u : array_like, shape (n_sims,) or (n_sims, d)

    Returns
    -------
    ndarray of int, shape (n_bins,) or (n_bins, d)
    """
    u = np.asarray(u, dtype=float)
    idx = np.clip((u * n_bins).astype(int), 0, n_bins - 1)
    if u.ndim == 1:
        return np.bincount(idx, minlength=n_bins)
    return np.stack([np.bincount(idx[:, j], minlength=n_bins) for j in range(u.shape[1])], axis=1)


def uniform_band(n_sims: int, n_bins: int = DEFAULT_N_BINS, level: float = 0.99) -> tuple[int, int]:
    """Central ``level`` interval of one bin's count of a uniform histogram.

    Each bin of ``n_sims`` uniform ranks in ``n_bins`` bins is
    Binomial(n_sims, 1/n_bins); returns its (lower, upper) quantiles.
    """
    dist = stats.binom(n_sims, 1.0 / n_bins)
    tail = 0.5 * (1.0 - level)
    return int(dist.ppf(tail)), int(dist.ppf(1.0 - tail))


def chi2_uniformity(counts) -> tuple[np.ndarray, np.ndarray]:
    """Pearson chi2 of histogram counts against a flat histogram.

    Parameters
    ----------
    counts : array_like, shape (n_bins,) or (n_bins, d)

    Returns
    -------
    stat, p_value : ndarray (scalar or (d,))
        ``n_bins - 1`` degrees of freedom.
    """
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum(axis=0) / counts.shape[0]
    stat = np.sum((counts - expected) ** 2 / expected, axis=0)
    return stat, stats.chi2.sf(stat, counts.shape[0] - 1)


def ks_uniformity(levels) -> tuple[np.ndarray, np.ndarray]:
    """Kolmogorov-Smirnov test of values (per column) against U(0, 1).

    Returns
    -------
    stat, p_value : ndarray (scalar or (d,))
    """
    levels = np.asarray(levels, dtype=float)
    res = stats.kstest(levels, "uniform", axis=0)
    return np.asarray(res.statistic), np.asarray(res.pvalue)


# ------------------------------------------------------------------ summaries
@dataclass(frozen=True)
class Calibration:
    """Per-simulation calibration values of one test set (see the module docstring).

    Attributes
    ----------
    names : tuple of str
        Parameter names (columns of ``ranks`` and ``u``).
    n_samples : int
        Posterior samples per simulation behind the ranks.
    ranks : ndarray of int, shape (n_sims, d)
    u : ndarray, shape (n_sims, d)
        Fractional ranks.
    hpd : ndarray, shape (n_sims,) or None
        Joint HPD levels (None without log densities).
    tarp : ndarray, shape (n_sims,)
        TARP levels.
    """

    names: tuple
    n_samples: int
    ranks: np.ndarray
    u: np.ndarray
    hpd: np.ndarray | None
    tarp: np.ndarray

    @property
    def n_sims(self) -> int:
        return self.u.shape[0]

    def subset(self, mask) -> Calibration:
        """The simulations selected by a boolean mask or index array."""
        return Calibration(
            self.names,
            self.n_samples,
            self.ranks[mask],
            self.u[mask],
            None if self.hpd is None else self.hpd[mask],
            self.tarp[mask],
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per simulation: ``rank_<p>``, ``u_<p>``, ``hpd_level``, ``tarp_level``."""
        cols = {f"rank_{n}": self.ranks[:, j] for j, n in enumerate(self.names)}
        cols.update({f"u_{n}": self.u[:, j] for j, n in enumerate(self.names)})
        if self.hpd is not None:
            cols["hpd_level"] = self.hpd
        cols["tarp_level"] = self.tarp
        return pd.DataFrame(cols)


def compute_calibration(
    samples,
    theta_true,
    names,
    low,
    high,
    rng: np.random.Generator,
    logp_samples=None,
    logp_true=None,
) -> Calibration:
    """All per-simulation calibration values of a test set.

    Parameters
    ----------
    samples : array_like, shape (n_sims, L, d)
        Posterior samples (sampling-space parameters).
    theta_true : array_like, shape (n_sims, d)
    names : sequence of str, length d
    low, high : array_like, shape (d,)
        Prior box (sets the TARP distance scale).
    rng : numpy.random.Generator
        Tie-breaking uniforms and TARP references.
    logp_samples, logp_true : array_like, optional
        Posterior log density at the samples (n_sims, L) and at the truth
        (n_sims,); both or neither.  Enable the joint HPD levels.
    """
    samples, theta_true = _check_samples(samples, theta_true)
    names = tuple(names)
    if len(names) != theta_true.shape[1]:
        raise ParameterError(f"{len(names)} names for {theta_true.shape[1]} parameters")
    if (logp_samples is None) != (logp_true is None):
        raise ParameterError("give both logp_samples and logp_true, or neither")
    n_samples = samples.shape[1]
    ranks = sbc_ranks(samples, theta_true, rng)
    u = fractional_ranks(ranks, n_samples, rng)
    hpd = None if logp_samples is None else hpd_levels(logp_samples, logp_true, rng)
    tarp = tarp_levels(samples, theta_true, low, high, rng)
    return Calibration(names, n_samples, ranks, u, hpd, tarp)


def _verdict(passed: bool, u: np.ndarray) -> str:
    """Name the dominant departure from uniformity of failing fractional ranks.

    Compares the z-scores of the mean of ``u`` (bias) and of the mean of
    ``|2u - 1|`` (dispersion); both are U(0, 1) with variance 1/12 when
    calibrated.
    """
    if passed:
        return "ok"
    se = np.sqrt(1.0 / 12.0 / u.size)
    z_bias = (u.mean() - 0.5) / se
    z_width = (central_levels(u).mean() - 0.5) / se
    if abs(z_width) >= abs(z_bias):
        return "over-confident" if z_width > 0 else "under-confident"
    # u near 1: the truth lies above most samples, i.e. the posterior sits too low.
    return "biased low" if z_bias > 0 else "biased high"


def summarize_calibration(cal: Calibration, thresholds: CalibrationThresholds | None = None) -> pd.DataFrame:
    """Pass/fail table, one row per parameter plus the joint HPD/TARP rows.

    Columns: ``parameter``, ``n``, ``chi2``, ``p_chi2``, ``p_ks``,
    ``p_ks_width``, ``max_coverage_error`` (largest |central coverage -
    alpha|), ``mean_u`` (0.5 when unbiased), ``mean_width_level`` (mean of
    ``|2u-1|``, 0.5 when calibrated, larger when over-confident),
    ``passed`` and ``verdict`` ("ok", "over-confident", "under-confident",
    "biased low", "biased high").  Joint rows (``joint_hpd``,
    ``joint_tarp``) fill ``p_ks`` and ``max_coverage_error`` only.
    ``thresholds`` defaults to :class:`CalibrationThresholds`().
    """
    thresholds = thresholds or CalibrationThresholds()
    if cal.n_sims < thresholds.n_bins:
        raise ParameterError(f"{cal.n_sims} simulations are too few for a {thresholds.n_bins}-bin rank test")
    counts = rank_histogram(cal.u, thresholds.n_bins)
    chi2, p_chi2 = chi2_uniformity(counts)
    _, p_ks = ks_uniformity(cal.u)
    width = central_levels(cal.u)
    _, p_width = ks_uniformity(width)
    cov_err = max_coverage_error(width)
    rows = []
    for j, name in enumerate(cal.names):
        passed = bool(min(p_chi2[j], p_ks[j], p_width[j]) >= thresholds.p_value)
        rows.append(
            dict(
                parameter=name,
                n=cal.n_sims,
                chi2=float(chi2[j]),
                p_chi2=float(p_chi2[j]),
                p_ks=float(p_ks[j]),
                p_ks_width=float(p_width[j]),
                max_coverage_error=float(cov_err[j]),
                mean_u=float(cal.u[:, j].mean()),
                mean_width_level=float(width[:, j].mean()),
                passed=passed,
                verdict=_verdict(passed, cal.u[:, j]),
            )
        )
    for label, levels in (("joint_hpd", cal.hpd), ("joint_tarp", cal.tarp)):
        if levels is None:
            continue
        _, p = ks_uniformity(levels)
        passed = bool(p >= thresholds.p_value)
        if label == "joint_hpd":
            # An HPD level near 1 puts the truth outside most of the mass: over-confident.
            verdict = "ok" if passed else ("over-confident" if levels.mean() > 0.5 else "under-confident")
        else:
            # TARP levels of a too narrow posterior pile up at both 0 and 1 (the
            # truth is nearer or farther than all samples), like marginal ranks.
            verdict = _verdict(passed, levels).replace("biased low", "biased").replace("biased high", "biased")
        rows.append(
            dict(
                parameter=label,
                n=cal.n_sims,
                chi2=np.nan,
                p_chi2=np.nan,
                p_ks=float(p),
                p_ks_width=np.nan,
                max_coverage_error=float(max_coverage_error(levels)),
                mean_u=float(levels.mean()),
                mean_width_level=np.nan,
                passed=passed,
                verdict=verdict,
            )
        )
    table = pd.DataFrame(rows)
    table.attrs["thresholds"] = asdict(thresholds)
    return table


def coverage_table(cal: Calibration, alphas=DEFAULT_LEVELS) -> pd.DataFrame:
    """Coverage curves in long form: ``alpha``, ``parameter``, ``kind``, ``coverage``.

    ``kind`` is ``"pp"`` (ECDF of fractional ranks: the p-p plot),
    ``"central"`` (marginal central intervals), ``"hpd"`` or ``"tarp"``
    (joint, parameter ``"joint"``).
    """
    alphas = np.asarray(alphas, dtype=float)
    frames = []
    for kind, levels in (("pp", cal.u), ("central", central_levels(cal.u))):
        cov = expected_coverage(levels, alphas)
        for j, name in enumerate(cal.names):
            frames.append(pd.DataFrame({"alpha": alphas, "parameter": name, "kind": kind, "coverage": cov[:, j]}))
    for kind, joint in (("hpd", cal.hpd), ("tarp", cal.tarp)):
        if joint is not None:
            frames.append(
                pd.DataFrame(
                    {"alpha": alphas, "parameter": "joint", "kind": kind, "coverage": expected_coverage(joint, alphas)}
                )
            )
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------- stratification
def quantile_edges(values, n_bins: int) -> np.ndarray:
    """Bin edges holding about equal numbers of the finite ``values``.

    Returns
    -------
    ndarray, shape (<= n_bins + 1,)
        Increasing edges from the minimum to the maximum (duplicates of a
        discrete variable are merged).
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ParameterError("no finite values to stratify on")
    if n_bins < 1:
        raise ParameterError(f"n_bins must be >= 1, got {n_bins}")
    return np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1)))


def stratify(values, edges) -> np.ndarray:
    """Bin index of each value in ``edges`` (last bin closed); -1 outside or NaN."""
    values = np.asarray(values, dtype=float)
    edges = np.asarray(edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ParameterError("edges must be increasing with at least two entries")
    idx = np.searchsorted(edges, values, side="right") - 1
    idx = np.where(values == edges[-1], edges.size - 2, idx)
    ok = np.isfinite(values) & (idx >= 0) & (idx <= edges.size - 2)
    return np.where(ok, idx, -1)


def stratified_summary(
    cal: Calibration,
    strata: dict,
    n_bins: int = 3,
    thresholds: CalibrationThresholds | None = None,
) -> pd.DataFrame:
    """:func:`summarize_calibration` in quantile bins of each stratifying variable.

    Parameters
    ----------
    cal : Calibration
    strata : dict of str to array_like, shape (n_sims,), or to (values, edges)
        Variables to stratify on (e.g. ``{"z": z, "mag_r": mag_r, "snr_r": snr}``);
        a ``(values, edges)`` tuple gives fixed bin edges.
    n_bins : int
        Quantile bins per variable (without given edges).
    thresholds : CalibrationThresholds
        The rank-histogram bins are reduced to fit small strata (at least 5
        expected counts per bin).

    Returns
    -------
    pandas.DataFrame
        The summary columns plus ``stratum`` (variable name), ``bin``,
        ``low`` and ``high`` (bin edges in the variable's units).
    """
    thresholds = thresholds or CalibrationThresholds()
    frames = []
    for var, values in strata.items():
        values, edges = values if isinstance(values, tuple) else (values, None)
        values = np.asarray(values, dtype=float)
        if values.shape != (cal.n_sims,):
            raise ParameterError(f"stratum {var!r} must have shape ({cal.n_sims},), got {values.shape}")
        edges = quantile_edges(values, n_bins) if edges is None else np.asarray(edges, dtype=float)
        labels = stratify(values, edges)
        for b in range(edges.size - 1):
            sub = cal.subset(labels == b)
            bins = min(thresholds.n_bins, sub.n_sims // 5)
            if bins < 2:
                continue
            t = CalibrationThresholds(thresholds.p_value, bins, thresholds.band_level)
            table = summarize_calibration(sub, t)
            table.insert(0, "high", edges[b + 1])
            table.insert(0, "low", edges[b])
            table.insert(0, "bin", b)
            table.insert(0, "stratum", var)
            frames.append(table)
    if not frames:
        raise ParameterError("every stratum is too small for a rank test")
    return pd.concat(frames, ignore_index=True)
