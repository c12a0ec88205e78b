"""A posterior catalog at a glance: what was served, why the rest was not, and what the masses look like.

:func:`plot_summary` writes one figure of four panels:

* galaxies by ``status`` (bar per status, counts on the bars);
* the flags: rows per reason (the check names of ``reason``, bands left out);
* colour-mass: observed g - r against log M*_total (median), coloured by z,
  for the ``ok`` rows (grey: the others);
* the masses against a reference (``reference``: a column of the catalog,
  e.g. a kept ``MASS``, or an array), with the one-to-one line, the median
  offset and NMAD; without one, the distribution of log M* by status.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..infer.quality import reason_counts

__all__ = ["plot_summary"]


def plot_summary(frame: pd.DataFrame, path: str | Path, reference: np.ndarray | None = None,
                 reference_label: str = "reference", title: str = "") -> Path:
    """Write the catalog's summary figure (module docstring) to ``path`` (PNG).

    Parameters
    ----------
    frame : pandas.DataFrame
        A posterior catalog (``status``, ``reason``, ``log_mstar_total_p50``, ``mag_g``, ``mag_r``, ``z``).
    path : path
    reference : ndarray, shape (n,), optional
        log10 M*/Msun of each row from another fit (NaN: none).
    reference_label : str
        Its name on the axis.
    title : str
    """
    import matplotlib.pyplot as plt

    from ..validate.plots import save_figure

    status = frame["status"].astype(str)
    mass = frame["log_mstar_total_p50"].to_numpy(float) if "log_mstar_total_p50" in frame else np.full(len(frame), np.nan)
    ok = (status == "ok").to_numpy()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))

    ax = axes[0, 0]
    counts = status.value_counts()
    bars = ax.bar(counts.index, counts.to_numpy(), color=["C2" if s == "ok" else "C3" for s in counts.index])
    ax.bar_label(bars, fontsize=8)
    ax.set_ylabel("galaxies")
    ax.set_title(f"status ({len(frame):,} galaxies, {ok.mean():.1%} ok)", fontsize=10)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)

    ax = axes[0, 1]
    reasons = reason_counts(frame["reason"].tolist()) if "reason" in frame else Counter()
    if reasons:
        names, values = zip(*reasons.most_common(12))
        bars = ax.barh(names[::-1], values[::-1], color="C1")
        ax.bar_label(bars, fontsize=8)
    ax.set_xlabel("rows (a row counts once per reason)")
    ax.set_title("reasons (flags and masked bands)", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)

    ax = axes[1, 0]
    if {"mag_g", "mag_r"} <= set(frame.columns):
        colour = (frame["mag_g"] - frame["mag_r"]).to_numpy(float)
        ax.scatter(mass[~ok], colour[~ok], s=3, color="0.7", label="not ok")
        points = ax.scatter(mass[ok], colour[ok], s=3, c=frame["z"].to_numpy(float)[ok], cmap="viridis", label="ok")
        fig.colorbar(points, ax=ax, label="z")
        ax.set_ylim(np.nanpercentile(colour, 0.5) - 0.1, np.nanpercentile(colour, 99.5) + 0.1)
        ax.legend(fontsize=7, markerscale=3)
    ax.set_xlabel(r"$\log M_\star$ [$M_\odot$] (posterior median)")
    ax.set_ylabel("observed g - r [mag]")
    ax.set_title("colour-mass", fontsize=10)

    ax = axes[1, 1]
    if reference is not None and np.isfinite(reference).any():
        ref = np.asarray(reference, dtype=float)
        use = ok & np.isfinite(ref) & np.isfinite(mass)
        diff = mass[use] - ref[use]
        offset = float(np.median(diff)) if diff.size else np.nan
        nmad = float(1.4826 * np.median(np.abs(diff - offset))) if diff.size else np.nan
        ax.scatter(ref[use], mass[use], s=3, color="C0")
        lims = [np.nanmin(np.r_[ref[use], mass[use]]), np.nanmax(np.r_[ref[use], mass[use]])] if use.any() else [8, 12]
        ax.plot(lims, lims, "k--", lw=0.8, label="one to one")
        ax.set_xlabel(rf"$\log M_\star$ [$M_\odot$], {reference_label}")
        ax.set_ylabel(r"$\log M_\star$ [$M_\odot$], sedscale")
        ax.set_title(f"masses: median offset {offset:+.3f} dex, NMAD {nmad:.3f} ({use.sum():,} ok rows)", fontsize=10)
        ax.legend(fontsize=7)
    else:
        finite = np.isfinite(mass)
        bins = np.linspace(np.nanmin(mass), np.nanmax(mass), 40) if finite.any() else 10
        ax.hist(mass[finite & ok], bins=bins, histtype="step", color="C2", label="ok")
        ax.hist(mass[finite & ~ok], bins=bins, histtype="step", color="C3", label="not ok")
        ax.set_xlabel(r"$\log M_\star$ [$M_\odot$] (posterior median)")
        ax.set_ylabel("galaxies")
        ax.set_title("masses (no reference given)", fontsize=10)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
