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
import math
import numbers
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..io.atomic import atomic_write_bytes
from ..io.catalog import read_table_columns

__all__ = ["COLOUR_BINS", "REF_DUPLICATES", "MassComparison", "compare_masses", "join_ids", "nmad",
           "read_posterior_catalog"]

#: g - r bin edges (the five bins of the real-catalog checks).
COLOUR_BINS = (-np.inf, 0.4, 0.6, 0.7, 0.8, np.inf)
MASS_BINS = (-np.inf, 9.0, 9.5, 10.0, 10.5, 11.0, np.inf)
Z_BINS = (0.0, 0.01, 0.05, 0.15, 0.3, 0.6)
#: Reference masses outside this range (log Msun) are failed fits (iSEDfit: -1, GSWLC: 0 where unmatched).
VALID_RANGE = (6.0, 13.0)
#: What :func:`join_ids` does with an id on several reference rows: refuse, or take the first row.
REF_DUPLICATES = ("error", "first")
_INTEGER = re.compile(r"[+-]?[0-9]+")


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


def _id_kind(values: np.ndarray) -> str:
    """``"integer"``, ``"float"``, ``"string"`` or ``"mixed"``: what the ids of a column are (missing ones aside)."""
    if values.dtype.kind in "iub":
        return "integer"
    if values.dtype.kind in "fUS":
        return {"f": "float", "U": "string", "S": "string"}[values.dtype.kind]
    kinds = {"string" if isinstance(v, (str, bytes)) else "integer" if isinstance(v, numbers.Integral) else "float"
             for v in values.tolist() if v is not None}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _id_key(value, numeric: bool):
    """The join key of one id: None if missing; with ``numeric``, integer-valued floats and strings as ``int``."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        value = value.strip()
        return int(value) if numeric and _INTEGER.fullmatch(value) else value or None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            return None
        number = float(value)
        return int(number) if numeric and number.is_integer() else number
    return value


def _examples(keys, n: int = 3) -> str:
    return ", ".join(repr(k) for k in list(dict.fromkeys(k for k in keys if k is not None))[:n]) or "none"


def join_ids(ids, ref_ids, column: str, duplicates: str = "error") -> tuple[np.ndarray, str]:
    """The reference row of each catalog id.

    Strings are compared without surrounding blanks.  When the two columns
    hold different kinds of ids (integers in one, strings or floats in the
    other), integer-valued strings and floats are read as integers on both
    sides, so that ``"123"``, ``123`` and ``123.0`` match.  Missing ids
    (None, NaN, empty strings) match nothing.

    Parameters
    ----------
    ids : array_like, shape (n,)
        The catalog's ids.
    ref_ids : array_like, shape (m,)
        The reference's id column.
    column : str
        Name of the reference's id column (for messages).
    duplicates : {"error", "first"}
        A catalog id on several reference rows: refuse, or take the first of them.

    Returns
    -------
    rows : ndarray of int, shape (n,)
        Reference row of each catalog id; -1 where none.
    description : str
        One line: how many ids matched, and how they were compared.

    Raises
    ------
    ConfigError
        No id matches, a catalog id repeats in the catalog, or (with
        ``duplicates="error"``) a catalog id is on several reference rows.
    """
    if duplicates not in REF_DUPLICATES:
        raise ConfigError(f"duplicates must be one of {', '.join(REF_DUPLICATES)}, got {duplicates!r}")
    ids, ref_ids = np.asarray(ids), np.asarray(ref_ids)
    kinds = _id_kind(ids), _id_kind(ref_ids)
    numeric = kinds[0] != kinds[1]
    keys = [_id_key(v, numeric) for v in ids.tolist()]
    ref_keys = [_id_key(v, numeric) for v in ref_ids.tolist()]
    repeated = {k: c for k, c in Counter(k for k in keys if k is not None).items() if c > 1}
    if repeated:
        raise ConfigError(f"{len(repeated)} ids occur more than once in the catalog (e.g. {_examples(repeated)}): "
                          "each galaxy must be on one row (bin/run_catalog writes each id once; are two runs "
                          "concatenated?)")
    index: dict = {}
    for row, key in enumerate(ref_keys):
        if key is not None:
            index.setdefault(key, row)
    rows = np.array([index.get(k, -1) if k is not None else -1 for k in keys], dtype=np.int64)
    n_found = int((rows >= 0).sum())
    compared = (f" ({kinds[0]} catalog ids, {kinds[1]} reference ids: integer-valued ones compared as integers)"
                if numeric else "")
    if n_found == 0:
        raise ConfigError(f"--match {column}: none of the catalog's {ids.size} ids is in the reference's {column} "
                          f"column ({ref_ids.size} rows){compared}; catalog ids: {_examples(keys)}; reference ids: "
                          f"{_examples(ref_keys)}")
    wanted = set(keys)
    counts = Counter(k for k in ref_keys if k in wanted)
    ambiguous = {k: c for k, c in counts.items() if c > 1}
    if ambiguous and duplicates == "error":
        shown = ", ".join(f"{k!r} ({c} rows)" for k, c in list(ambiguous.items())[:3])
        raise ConfigError(f"--match {column}: {len(ambiguous)} of the catalog's ids occur more than once in the "
                          f"reference (e.g. {shown}): the reference is ambiguous; pass --ref-duplicates first to "
                          "use the first row of each")
    taken = f"; {len(ambiguous)} ids on several reference rows: first row used" if ambiguous else ""
    return rows, f"{n_found} of {ids.size} catalog ids found in the reference's {column} column{compared}{taken}"


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


def comparison_figure(catalog: pd.DataFrame, reference: np.ndarray, result: MassComparison):
    """Ours vs reference coloured by g - r (with a colour bar), and the offset vs g - r.

    Parameters
    ----------
    catalog : pandas.DataFrame
        The catalog given to :func:`compare_masses`.
    reference : ndarray, shape (n,)
        The reference log10 masses given to :func:`compare_masses`.
    result : MassComparison
        What :func:`compare_masses` returned.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels (and the colour bar); close it when done.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = np.asarray(reference, dtype=float)
    ours = catalog[result.column].to_numpy(dtype=float)
    ok = (catalog["status"].to_numpy() == "ok") & np.isfinite(ours) & np.isfinite(ref)
    ok &= (ref > VALID_RANGE[0]) & (ref < VALID_RANGE[1])
    colour = catalog["mag_g"].to_numpy(dtype=float) - catalog["mag_r"].to_numpy(dtype=float)
    log_mass = r"$\log_{10}\,M_\ast\,/\,M_\odot$"
    fig, axes = plt.subplots(1, 2, figsize=(10.8, 4.2))
    ax = axes[0]
    points = ax.scatter(ref[ok], ours[ok], s=3, c=colour[ok], cmap="coolwarm", vmin=0.2, vmax=1.0)
    fig.colorbar(points, ax=ax, label="g - r (observed)")
    lim = [np.nanmin(ref[ok]) - 0.2, np.nanmax(ref[ok]) + 0.2] if ok.any() else [8, 12]
    ax.plot(lim, lim, "k-", lw=0.8)
    ax.set(xlabel=f"{result.reference}: {log_mass}", ylabel=f"{result.column}: {log_mass}", xlim=lim, ylim=lim)
    ax = axes[1]
    ax.scatter(colour[ok], ours[ok] - ref[ok], s=3, color="0.6")
    mid = [r for r in result.by["g-r"] if r["n"]]
    centres = [np.clip(0.5 * (r["low"] + r["high"]), 0.2, 1.0) if np.isfinite(r["low"] + r["high"])
               else (0.3 if not np.isfinite(r["low"]) else 0.9) for r in mid]
    ax.errorbar(centres, [r["median"] for r in mid], yerr=[r["nmad"] for r in mid], fmt="o", color="k")
    ax.axhline(0, color="k", lw=0.8)
    for y in (-0.15, 0.15):
        ax.axhline(y, color="k", lw=0.5, ls=":")
    ax.set(xlabel="g - r (observed)", ylabel=r"ours - reference: $\Delta\log_{10}\,M_\ast$ (dex)", ylim=(-1, 1),
           xlim=(0.0, 1.2))
    o = result.overall
    fig.suptitle(f"{result.n_ok} galaxies: median {o['median']:+.3f} dex, NMAD {o['nmad']:.3f} dex")
    fig.tight_layout()
    return fig


def plot_comparison(catalog: pd.DataFrame, reference: np.ndarray, result: MassComparison, path: str | os.PathLike):
    """:func:`comparison_figure` as a PNG, written atomically."""
    import io

    fig = comparison_figure(catalog, reference, result)
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def _strict_json(value):
    """``value`` with non-finite floats as None, recursively (strict JSON has no NaN or Infinity)."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(result: MassComparison, out: str | os.PathLike) -> None:
    """``<out>.md`` and ``<out>.json`` (atomic).

    The JSON is strict: non-finite numbers (the open ends of the outer bins,
    the median of an empty bin) are ``null``.
    """
    out = Path(out)
    atomic_write_bytes(out.with_suffix(".md"), (result.format() + "\n").encode())
    text = json.dumps(_strict_json(result.to_dict()), indent=1, allow_nan=False)
    atomic_write_bytes(out.with_suffix(".json"), (text + "\n").encode())
