"""PNG figures of the validation report (matplotlib, Agg backend).

Every function takes plain arrays / tables, draws one figure and writes it
atomically (temporary file + rename) to the given path.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from ..io.atomic import atomic_write
from .calibration import (
    DEFAULT_LEVELS,
    central_levels,
    expected_coverage,
    rank_histogram,
    uniform_band,
)

_DPI = 110


def save_figure(fig, path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=_DPI, format="png"), suffix=".png")
    finally:
        plt.close(fig)


def _grid(n: int, size: float = 2.6):
    ncol = min(4, n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(size * ncol, size * nrow), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def _ks_band(n: int, alphas, level: float = 0.99):
    """Pointwise-simultaneous KS band around the diagonal for ``n`` simulations."""
    half = stats.kstwo.ppf(level, n)
    return np.clip(alphas - half, 0, 1), np.clip(alphas + half, 0, 1)


def plot_rank_histograms(u, names, path, n_bins: int = 20, band_level: float = 0.99, labels=None) -> Path:
    """SBC rank histograms with the ``band_level`` band of a uniform histogram."""
    u = np.asarray(u)
    counts = rank_histogram(u, n_bins)
    lo, hi = uniform_band(u.shape[0], n_bins, band_level)
    fig, axes = _grid(len(names))
    edges = np.linspace(0, 1, n_bins + 1)
    for j, ax in enumerate(axes):
        ax.axhspan(lo, hi, color="0.85", zorder=0)
        ax.axhline(u.shape[0] / n_bins, color="0.5", lw=0.8)
        ax.stairs(counts[:, j], edges, fill=True, color="C0", alpha=0.8)
        ax.set_title((labels or names)[j], fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_yticks([])
    fig.supxlabel("fractional SBC rank")
    fig.suptitle(f"SBC ranks, {u.shape[0]} test simulations ({band_level:.0%} band of a uniform)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_pp(u, names, path, labels=None) -> Path:
    """p-p plot: ECDF of the truths' posterior percentiles, all parameters."""
    u = np.asarray(u)
    alphas = DEFAULT_LEVELS
    cov = expected_coverage(u, alphas)
    lo, hi = _ks_band(u.shape[0], alphas)
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.fill_between(alphas, lo, hi, color="0.85", label="99% KS band")
    ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=0.8)
    for j, name in enumerate(names):
        ax.plot(alphas, cov[:, j], lw=1.1, label=(labels or names)[j])
    ax.set_xlabel("percentile of the truth in the marginal posterior")
    ax.set_ylabel("fraction of test simulations")
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    ax.set_title("p-p plot", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_coverage(u, names, path, hpd=None, tarp=None, labels=None) -> Path:
    """Expected coverage of marginal central intervals, joint HPD regions and TARP."""
    u = np.asarray(u)
    alphas = DEFAULT_LEVELS
    cov = expected_coverage(central_levels(u), alphas)
    lo, hi = _ks_band(u.shape[0], alphas)
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.fill_between(alphas, lo, hi, color="0.85", label="99% KS band")
    ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=0.8)
    for j, name in enumerate(names):
        ax.plot(alphas, cov[:, j], lw=0.9, alpha=0.8, label=(labels or names)[j])
    if hpd is not None:
        ax.plot(alphas, expected_coverage(hpd, alphas), color="k", lw=2, label="joint HPD")
    if tarp is not None:
        ax.plot(alphas, expected_coverage(tarp, alphas), color="k", lw=2, ls=":", label="TARP")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    ax.text(0.55, 0.05, "below: over-confident\nabove: under-confident", fontsize=7, transform=ax.transAxes)
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    ax.set_title("expected coverage", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_true_vs_recovered(truth, median, q16, q84, names, path, labels=None, max_points: int = 300) -> Path:
    """Posterior medians with 16-84% error bars against the true values."""
    truth, median, q16, q84 = (np.asarray(a) for a in (truth, median, q16, q84))
    show = np.arange(min(max_points, truth.shape[0]))
    fig, axes = _grid(len(names))
    for j, ax in enumerate(axes):
        t, m = truth[show, j], median[show, j]
        err = np.vstack([m - q16[show, j], q84[show, j] - m])
        ax.errorbar(t, m, yerr=np.clip(err, 0, None), fmt=".", ms=2, lw=0.4, alpha=0.6, color="C0")
        lim = [np.nanmin([t.min(), q16[show, j].min()]), np.nanmax([t.max(), q84[show, j].max()])]
        ax.plot(lim, lim, color="k", lw=0.8)
        ax.set_title((labels or names)[j], fontsize=9)
    fig.supxlabel("true")
    fig.supylabel("posterior median (16-84%)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_ppc(chi2, path, dof: int, chi2_truth=None) -> Path:
    """Histogram of the posterior-median SED chi2 against the chi2(dof) density."""
    chi2 = np.asarray(chi2)
    chi2 = chi2[np.isfinite(chi2)]
    top = np.percentile(chi2, 99) if chi2.size else 1.0
    bins = np.linspace(0, max(top, stats.chi2.ppf(0.999, dof)), 50)
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    ax.hist(chi2, bins=bins.tolist(), density=True, histtype="stepfilled", alpha=0.6, label="posterior-median SED")
    if chi2_truth is not None:
        ax.hist(np.asarray(chi2_truth), bins=bins.tolist(), density=True, histtype="step", color="k", label="true SED")
    ax.plot(bins, stats.chi2.pdf(bins, dof), color="C3", label=f"chi2({dof})")
    ax.set_xlabel("chi2 of the fluxes")
    ax.legend(fontsize=7)
    ax.set_title("posterior predictive check", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_strata(table, path) -> Path:
    """Largest coverage error per parameter in each stratum bin (one panel per variable).

    ``table`` is :func:`sedscale.validate.calibration.stratified_summary`.
    """
    variables = list(dict.fromkeys(table["stratum"]))
    fig, axes = plt.subplots(1, len(variables), figsize=(4.2 * len(variables), 3.6), squeeze=False)
    for ax, var in zip(axes[0], variables):
        sub = table[table["stratum"] == var]
        for k, (param, rows) in enumerate(sub.groupby("parameter", sort=False)):
            centers = 0.5 * (rows["low"].to_numpy() + rows["high"].to_numpy())
            marker = ["o" if p else "x" for p in rows["passed"]]
            ax.plot(centers, rows["max_coverage_error"], lw=0.8, color=f"C{k % 10}", label=param)
            for c, e, mk in zip(centers, rows["max_coverage_error"], marker):
                ax.plot(c, e, mk, color=f"C{k % 10}", ms=4)
        ax.set_xlabel(var)
        ax.set_ylabel("max |coverage - level|")
        ax.set_title(f"by {var} (x: failed)", fontsize=9)
    axes[0][-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_corner(mcmc, anpe, names, path, truth=None, labels=None, use_corner: bool = True) -> Path:
    """Corner plot overlaying MCMC (black) and amortized (blue) posterior samples.

    Uses the ``corner`` package when installed and ``use_corner``; otherwise
    a small built-in version (1-d histograms, 2-d 68/95% density contours).
    """
    mcmc, anpe = np.asarray(mcmc, dtype=float), np.asarray(anpe, dtype=float)
    anpe = anpe[np.all(np.isfinite(anpe), axis=1)]
    labels = list(labels or names)
    ranges = [
        (min(np.percentile(mcmc[:, j], 0.5), np.percentile(anpe[:, j], 0.5)),
         max(np.percentile(mcmc[:, j], 99.5), np.percentile(anpe[:, j], 99.5)))
        for j in range(mcmc.shape[1])
    ]
    ranges = [(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5) for lo, hi in ranges]
    corner: ModuleType | None = None
    if use_corner:
        try:
            corner = importlib.import_module("corner")
        except ImportError:
            corner = None
    if corner is not None:
        def kw(color):
            # corner writes the colour into hist_kwargs: each call needs its own dict.
            return dict(range=ranges, bins=30, smooth=1.0, plot_datapoints=False, plot_density=False,
                        levels=(0.68, 0.95), color=color, hist_kwargs={"density": True, "color": color})

        fig = corner.corner(mcmc, labels=labels, truths=truth, truth_color="C3", **kw("k"))
        corner.corner(anpe, fig=fig, **kw("C0"))
    else:
        fig = corner_grid(((mcmc, "k"), (anpe, "C0")), labels, ranges, truth)
    fig.legend(
        handles=[plt.Line2D([], [], color="k", label="MCMC"), plt.Line2D([], [], color="C0", label="ANPE")],
        loc="upper right",
    )
    return save_figure(fig, path)


def _contour_levels(h: np.ndarray, masses=(0.95, 0.68)) -> list[float]:
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    return sorted({float(flat[min(np.searchsorted(cum, m), flat.size - 1)]) for m in masses})


def corner_grid(sets, labels, ranges, truth=None, smooth: float = 0.0, panel: float = 1.6, fontsize: int = 7):
    """A corner plot of one or more sample sets: 1-d histograms, 2-d 68/95% density contours.

    Parameters
    ----------
    sets : sequence of (ndarray (n, k), colour)
        Samples and their colour, drawn in order.
    labels : sequence of str
    ranges : sequence of (float, float)
        Axis range per quantity.
    truth : ndarray (k,), optional
        Marked with a red cross in the 2-d panels.
    smooth : float
        Gaussian smoothing (histogram bins) of the 2-d histograms before contouring; 0: none.
    panel, fontsize : float, int
        Panel size (inches) and axis-label font size.

    Returns
    -------
    matplotlib.figure.Figure
        Axes ``fig.axes`` in row-major order of the k x k grid (upper triangle hidden).
    """
    from scipy.ndimage import gaussian_filter

    k = len(labels)
    fig, axes = plt.subplots(k, k, figsize=(panel * k, panel * k), squeeze=False)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                for s, c in sets:
                    ax.hist(s[:, i], bins=30, range=ranges[i], density=True, histtype="step", color=c)
                ax.set_yticks([])
            else:
                for s, c in sets:
                    h, xe, ye = np.histogram2d(s[:, j], s[:, i], bins=25, range=[ranges[j], ranges[i]])
                    if smooth:
                        h = gaussian_filter(h, smooth)
                    levels = _contour_levels(h)
                    if len(levels) > 1 or (levels and levels[0] > 0):
                        ax.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), h.T, levels=levels,
                                   colors=c, linewidths=0.8)
                if truth is not None:
                    ax.plot(truth[j], truth[i], "+", color="C3")
            if i == k - 1:
                ax.set_xlabel(labels[j], fontsize=fontsize)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i], fontsize=fontsize)
            elif j > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=6)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig
