"""Compare a posterior catalog's stellar masses with an independent reference catalog.

What an astronomer does first with a new mass catalog: join it with masses
from another SED code (iSEDfit, GSWLC, the NSA's kcorrect ``MASS``) and
look at the median offset and the scatter, overall and in bins of colour,
of mass and of redshift.  The reference is not a truth: SED codes differ by
~0.1 dex among themselves through their modelling choices.

Statistics of ``d = ours - reference`` (dex): the median, the normalized
median absolute deviation ``NMAD = 1.4826 median(|d - median(d)|)``, and
the count, over galaxies with ``status == "ok"`` and a valid reference
mass.  Colour is the observed g - r of the posterior catalog (``mag_g -
mag_r``, as given to the flow).

Example::

    bin/compare_masses virgo.parquet --reference nsa_mstar.virgo.fits --ref-mass MSTAR_50 \\
        --match ISEDFIT_ID --out virgo_vs_isedfit
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..io.atomic import atomic_write_bytes
from ..io.catalog import read_table_columns

__all__ = ["COLOUR_BINS", "MassComparison", "compare_masses", "nmad", "read_posterior_catalog"]

#: g - r bin edges (the five bins of the real-catalog checks).
COLOUR_BINS = (-np.inf, 0.4, 0.6, 0.7, 0.8, np.inf)
MASS_BINS = (-np.inf, 9.0, 9.5, 10.0, 10.5, 11.0, np.inf)
Z_BINS = (0.0, 0.01, 0.05, 0.15, 0.3, 0.6)
#: Reference masses outside this range (log Msun) are failed fits (iSEDfit: -1, GSWLC: 0 where unmatched).
VALID_RANGE = (6.0, 13.0)


def nmad(d) -> float:
    """Normalized median absolute deviation (= sigma for a Gaussian); NaN for no values."""
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    return float(1.4826 * np.median(np.abs(d - np.median(d)))) if d.size else float("nan")


@dataclass(frozen=True)
class MassComparison:
    """Offsets of a posterior catalog's masses from a reference.

    Attributes
    ----------
    column, reference : str
        Our mass column and the reference's description.
    overall : dict
        ``n``, ``median`` (dex), ``nmad`` (dex).
    by : dict
        ``"g-r"``, ``"ref_mass"``, ``"z"`` -> list of per-bin dicts
        (``low``, ``high``, ``n``, ``median``, ``nmad``).
    n_matched, n_ok : int
        Rows joined with a valid reference mass; of those with status ok.
    """

    column: str
    reference: str
    overall: dict
    by: dict
    n_matched: int
    n_ok: int

    def to_dict(self) -> dict:
        return {"column": self.column, "reference": self.reference, "overall": self.overall, "by": self.by,
                "n_matched": self.n_matched, "n_ok": self.n_ok}

    def format(self) -> str:
        """A plain-text report (Markdown tables)."""
        o = self.overall
        lines = [
            f"{self.column} - {self.reference}: {self.n_ok} galaxies with status ok "
            f"({self.n_matched} matched with a valid reference mass)",
            f"median offset {o['median']:+.3f} dex, NMAD {o['nmad']:.3f} dex",
        ]
        for name, rows in self.by.items():
            lines += ["", f"| {name} bin | n | median offset (dex) | NMAD (dex) |", "|---|---:|---:|---:|"]
            for r in (r for r in rows if r["n"]):
                lines.append(f"| {_fmt_edge(r['low'])} - {_fmt_edge(r['high'])} | {r['n']} | "
                             f"{r['median']:+.3f} | {r['nmad']:.3f} |")
        return "\n".join(lines)


def _fmt_edge(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:g}"


def _stats(d: np.ndarray) -> dict:
    return {"n": int(d.size), "median": float(np.median(d)) if d.size else float("nan"), "nmad": nmad(d)}


def _binned(d: np.ndarray, x: np.ndarray, edges) -> list[dict]:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (x >= lo) & (x < hi)
        rows.append({"low": float(lo), "high": float(hi), **_stats(d[sel])})
    return rows


def read_posterior_catalog(path: str | os.PathLike, columns) -> pd.DataFrame:
    """The given columns of a posterior catalog (Parquet or FITS written by ``bin/run_catalog``)."""
    raw = read_table_columns(path, list(columns))
    # FITS strings come back as bytes.
    return pd.DataFrame({c: (np.char.decode(v).astype(object) if v.dtype.kind == "S" else v) for c, v in raw.items()})


def compare_masses(
    catalog: pd.DataFrame,
    reference: np.ndarray,
    column: str = "log_mstar_total_p50",
    label: str = "reference",
    valid_range: tuple[float, float] = VALID_RANGE,
) -> MassComparison:
    """Offsets of ``catalog[column]`` from row-aligned reference masses.

    Parameters
    ----------
    catalog : pandas.DataFrame
        Posterior-catalog rows with ``status``, ``z``, ``mag_g``, ``mag_r``
        and ``column``.
    reference : ndarray, shape (n,)
        Reference log10 masses (Msun), aligned with ``catalog``; NaN where none.
    column : str
    label : str
        What the reference is (for the report).
    valid_range : (float, float)
        Reference masses outside it are failed fits and ignored.

    Returns
    -------
    MassComparison
    """
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (len(catalog),):
        raise ConfigError(f"reference masses must align with the catalog ({len(catalog)} rows), got {ref.shape}")
    valid = np.isfinite(ref) & (ref > valid_range[0]) & (ref < valid_range[1])
    ok = valid & (catalog["status"].to_numpy() == "ok") & np.isfinite(catalog[column].to_numpy(dtype=float))
    d = catalog[column].to_numpy(dtype=float)[ok] - ref[ok]
    colour = (catalog["mag_g"].to_numpy(dtype=float) - catalog["mag_r"].to_numpy(dtype=float))[ok]
    by = {
        "g-r": _binned(d, colour, COLOUR_BINS),
        "ref_mass": _binned(d, ref[ok], MASS_BINS),
        "z": _binned(d, catalog["z"].to_numpy(dtype=float)[ok], Z_BINS),
    }
    return MassComparison(column=column, reference=label, overall=_stats(d), by=by, n_matched=int(valid.sum()),
                          n_ok=int(ok.sum()))


def plot_comparison(catalog: pd.DataFrame, reference: np.ndarray, result: MassComparison, path: str | os.PathLike):
    """Ours vs reference, and the offset vs g - r (PNG, written atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = np.asarray(reference, dtype=float)
    ours = catalog[result.column].to_numpy(dtype=float)
    ok = (catalog["status"].to_numpy() == "ok") & np.isfinite(ours) & np.isfinite(ref)
    ok &= (ref > VALID_RANGE[0]) & (ref < VALID_RANGE[1])
    colour = catalog["mag_g"].to_numpy(dtype=float) - catalog["mag_r"].to_numpy(dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    ax.scatter(ref[ok], ours[ok], s=3, c=colour[ok], cmap="coolwarm", vmin=0.2, vmax=1.0)
    lim = [np.nanmin(ref[ok]) - 0.2, np.nanmax(ref[ok]) + 0.2] if ok.any() else [8, 12]
    ax.plot(lim, lim, "k-", lw=0.8)
    ax.set(xlabel=f"{result.reference} log M* [Msun]", ylabel=f"{result.column} [Msun]", xlim=lim, ylim=lim)
    ax = axes[1]
    ax.scatter(colour[ok], ours[ok] - ref[ok], s=3, color="0.6")
    mid = [r for r in result.by["g-r"] if r["n"]]
    centres = [np.clip(0.5 * (r["low"] + r["high"]), 0.2, 1.0) if np.isfinite(r["low"] + r["high"])
               else (0.3 if not np.isfinite(r["low"]) else 0.9) for r in mid]
    ax.errorbar(centres, [r["median"] for r in mid], yerr=[r["nmad"] for r in mid], fmt="o", color="k")
    ax.axhline(0, color="k", lw=0.8)
    for y in (-0.15, 0.15):
        ax.axhline(y, color="k", lw=0.5, ls=":")
    ax.set(xlabel="g - r (observed)", ylabel="ours - reference [dex]", ylim=(-1, 1), xlim=(0.0, 1.2))
    o = result.overall
    fig.suptitle(f"{result.n_ok} galaxies: median {o['median']:+.3f} dex, NMAD {o['nmad']:.3f} dex")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def write_report(result: MassComparison, out: str | os.PathLike) -> None:
    """``<out>.md`` and ``<out>.json`` (atomic)."""
    out = Path(out)
    atomic_write_bytes(out.with_suffix(".md"), (result.format() + "\n").encode())
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(result.to_dict(), indent=1) + "\n").encode())
