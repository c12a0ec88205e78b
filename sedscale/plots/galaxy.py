"""One galaxy of a posterior catalog, as an astronomer first looks at a fit.

Two figures per galaxy (:func:`plot_galaxy`):

``<id>_fit.png``
    *Left*: the measured photometry (AB magnitudes with 1-sigma errors at each
    band's pivot wavelength; open symbols for bands the flow did not use),
    the posterior-predictive model magnitudes of the catalog
    (``model_mag_<band>``, the fit check's; recomputed from the samples when
    the catalog has none), and the model SED of posterior samples (median and
    16-84% band) through the SPS model.  *Right*: the star-formation history,
    SFR in each lookback-time bin of the model (median and 16-84%).  The
    title carries the id, z, status and reason.
``<id>_corner.png``
    The joint posterior of the main quantities (stellar mass, SFR, sSFR,
    metallicity, diffuse dust, mass-weighted age).

The samples are the catalog's own (``--save-samples``) when it has them;
otherwise they are drawn afresh from the catalog's flow (its checkpoint and
sha256 are in the catalog's metadata) for the galaxy's photometry as the
catalog recorded it: the same posterior, other draws.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..infer.catalog_worker import model_for
from ..infer.posterior import Posterior
from ..infer.rows import sample_quantities
from ..infer.summaries import clip_to_prior
from ..models.base import ForwardModel
from ..observe.layout import masked_photometry_x
from ..observe.spectra import FLAMBDA_UNIT_CGS, observed_flambda
from ..units import C_AA_S, NANOMAGGY_CGS, mag_sigma_to_flux_sigma, mag_to_nanomaggies, nanomaggies_to_mag

__all__ = ["CORNER_QUANTITIES", "GalaxyPosterior", "catalog_provenance", "galaxy_posterior", "model_photometry",
           "pivot_wavelengths", "plot_galaxy", "read_catalog_rows", "select_ids"]

#: Quantities of the corner plot (those present), with axis labels.
CORNER_QUANTITIES = {
    "log_mstar_total": r"$\log M_\star$ [$M_\odot$]",
    "log_sfr_100myr": r"$\log$ SFR$_{100}$ [$M_\odot$/yr]",
    "log_ssfr_100myr": r"$\log$ sSFR$_{100}$ [1/yr]",
    "log_zsol": r"$\log Z/Z_\odot$",
    "tau_ism": r"$\tau_{\rm ISM}$",
    "age_mw": "mass-weighted age [Gyr]",
}
#: Posterior samples whose SED is drawn (median and 16-84% band).
_SED_SAMPLES = 100


class GalaxyPosterior(NamedTuple):
    """One catalog row with the posterior samples behind it.

    Attributes
    ----------
    row : pandas.Series
        The catalog row.
    post : Posterior
        The catalog's flow.
    model : ForwardModel
        Its forward model (SEDs, SFH, derived properties).
    theta : ndarray, shape (k, d)
        Posterior samples of the model parameters (sampling space).
    quantities : dict of str to ndarray (k,)
        Parameters and derived properties of the samples.
    z : float
    source : str
        ``"catalog samples"`` or ``"drawn from the flow"``.
    """

    row: pd.Series
    post: Posterior
    model: ForwardModel
    theta: np.ndarray
    quantities: dict
    z: float
    source: str


def catalog_provenance(path: str | Path) -> dict[str, str]:
    """The checkpoint path and sha256 a posterior catalog (Parquet or FITS) records."""
    path = Path(path)
    if path.suffix.lower() in (".fits", ".fit", ".fz"):
        from astropy.io import fits

        header = fits.getheader(path, 1)
        return {"checkpoint": str(header.get("CKPTPATH", "")), "checkpoint_sha256": str(header.get("CKPTHASH", ""))}
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return {key: meta.get(f"sedscale.{key}".encode(), b"").decode() for key in ("checkpoint", "checkpoint_sha256")}


def read_catalog_rows(path: str | Path, ids: list | None = None) -> pd.DataFrame:
    """Rows of a posterior catalog (all, or those whose ``id`` is in ``ids``, compared as strings)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no catalog at {path}")
    if path.suffix.lower() in (".fits", ".fit", ".fz"):
        from astropy.table import Table

        table = Table.read(path, unit_parse_strict="silent")
        scalar = [c for c in table.colnames if table[c].ndim == 1]
        frame = table[scalar].to_pandas()
        for c in table.colnames:
            if table[c].ndim == 2:
                frame[c] = list(np.asarray(table[c]))
    else:
        frame = pd.read_parquet(path)
    if "id" not in frame.columns:
        raise ConfigError(f"{path} is not a sedscale posterior catalog (no id column)")
    return frame if ids is None else select_ids(frame, ids, path)


def select_ids(frame: pd.DataFrame, ids: list, path: str | Path) -> pd.DataFrame:
    """The rows of a catalog frame whose ``id`` is in ``ids`` (compared as strings); a missing id is a ConfigError."""
    wanted = {str(i) for i in ids}
    found = frame[frame["id"].astype(str).isin(wanted)]
    missing = sorted(wanted - set(found["id"].astype(str)))
    if missing:
        raise ConfigError(f"{path}: no galaxy with id {', '.join(missing)}")
    return found


def _flow_x(row: pd.Series, post: Posterior) -> np.ndarray:
    """The flow's x of a catalog row, from the magnitudes and errors (floor included) it recorded."""
    bands = post.bands.bands
    mag = np.array([row.get(f"mag_{b}", np.nan) for b in bands], dtype=float)
    sigma = np.array([row.get(f"sigma_{b}", np.nan) for b in bands], dtype=float)
    flux = mag_to_nanomaggies(mag)
    if post.band_masked:
        used = np.array([b in str(row.get("bands_used", "")) for b in bands]) if all(len(b) == 1 for b in bands) \
            else np.isfinite(mag)
        flux = np.where(used, flux, np.nan)
        x, _, _ = masked_photometry_x(flux[None], mag_sigma_to_flux_sigma(flux, sigma)[None], np.array([row["z"]]))
        return x
    return np.concatenate([mag, sigma, [row["z"]]])[None].astype(np.float32)


def galaxy_posterior(catalog: str | Path, galaxy_id, flow: str | Path | None = None, n_samples: int = 2000,
                     seed: int = 0, row: pd.Series | None = None) -> GalaxyPosterior:
    """A galaxy's catalog row and posterior samples (the catalog's own, else drawn from its flow).

    Parameters
    ----------
    catalog : path
        A posterior catalog of ``bin/run_catalog`` (Parquet or FITS).
    galaxy_id
        Its ``id`` (compared as a string).
    flow : path or shipped name, optional
        The checkpoint; default the one the catalog records (its sha256 is checked).
    n_samples : int
        Samples drawn when the catalog stores none.
    seed : int
    row : pandas.Series, optional
        The row, when already read.
    """
    row = read_catalog_rows(catalog, [galaxy_id]).iloc[0] if row is None else row
    prov = catalog_provenance(catalog)
    post = Posterior.load(flow or prov["checkpoint"])
    if flow is None and prov["checkpoint_sha256"]:
        from ..io.runs import file_sha256

        if file_sha256(post.path) != prov["checkpoint_sha256"]:
            raise ConfigError(f"{post.path} changed since {catalog} was made (sha256 differs): give --flow")
    model = model_for(post)
    if post.redshift_input is not None and f"samples_{post.param_names[0]}" not in row.index:
        raise ConfigError(f"{catalog} comes from a photometric-redshift flow: plotting needs its samples "
                          "(run_catalog --save-samples)")
    if f"samples_{post.param_names[0]}" in row.index:
        theta = np.column_stack([np.asarray(row[f"samples_{p}"], dtype=float) for p in post.param_names])
        source = "catalog samples"
    else:
        drawn = post.draw(_flow_x(row, post), n_samples, seed=seed)
        theta = drawn.samples[0].astype(float)
        source = "drawn from the flow"
    theta = clip_to_prior(theta[np.all(np.isfinite(theta), axis=1)][None], post.prior.low, post.prior.high)[0]
    if theta.shape[0] == 0:
        raise ConfigError(f"galaxy {galaxy_id} has no posterior samples (status {row.get('status')})")
    z = float(np.median(theta[:, -1])) if post.redshift_input is not None else float(row["z"])
    values = sample_quantities(post, model, theta[None], np.array([z]), theta.shape[0]).values
    quantities = {k: np.asarray(v)[0] for k, v in values.items()}
    if "sfr_100myr" in quantities:
        with np.errstate(divide="ignore"):
            quantities["log_sfr_100myr"] = np.log10(quantities["sfr_100myr"])
    return GalaxyPosterior(row, post, model, theta, quantities, z, source)


def pivot_wavelengths(model: ForwardModel) -> np.ndarray:
    """Pivot wavelength (Angstrom) of each band of the model's set."""
    out = []
    for f in model.sdss.filters:
        w, t = np.asarray(f.wavelength, float), np.asarray(f.transmission, float)
        out.append(np.sqrt(np.trapezoid(t * w, w) / np.trapezoid(t / w, w)))
    return np.array(out)


def _sed_mags(gp: GalaxyPosterior, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed wavelengths (Angstrom) and AB magnitudes (n, n_wave) of the first ``n`` samples' SEDs."""
    k = gp.post.n_model_params
    theta = gp.theta[:n, :k]
    z = np.full(theta.shape[0], gp.z) if gp.post.redshift_input is None else gp.theta[:n, -1]
    wave, lum = gp.model.rest_spectrum(theta, z, dtype=np.float64)
    wave_obs = wave[None] * (1 + z)[:, None]
    # f_nu = f_lambda lambda_obs^2 / c, in nanomaggies.
    fnu = observed_flambda(lum, z, gp.model.cosmology) * FLAMBDA_UNIT_CGS * wave_obs**2 / C_AA_S / NANOMAGGY_CGS
    with np.errstate(divide="ignore", invalid="ignore"):
        return wave * (1 + float(np.median(z))), nanomaggies_to_mag(np.where(fnu > 0, fnu, np.nan))


def _sfh(gp: GalaxyPosterior) -> tuple[np.ndarray, np.ndarray] | None:
    """Lookback-time bin edges (Gyr) and SFR per bin (Msun/yr, (k, n_bin)) of the samples, or None (no bins)."""
    k = gp.post.n_model_params
    phys = gp.model.physical(gp.theta[:, :k])
    z = np.full(gp.theta.shape[0], gp.z)
    bins = gp.model.binned_sfh(phys, gp.model.tage_yr(z))
    if bins is None:
        return None
    widths = np.diff(bins.edges, axis=1)
    sfr = bins.fraction * bins.mass_formed[:, None] / widths
    return bins.edges[0] / 1e9, sfr


def plot_galaxy(catalog: str | Path, galaxy_id, out_dir: str | Path, flow: str | Path | None = None,
                n_samples: int = 2000, seed: int = 0, row: pd.Series | None = None) -> tuple[Path, Path]:
    """Write ``<id>_fit.png`` and ``<id>_corner.png`` of one galaxy of a posterior catalog (module docstring).

    ``row``: the galaxy's catalog row when already read (:func:`read_catalog_rows`), else it is read here.

    Returns
    -------
    fit, corner : Path
    """
    import matplotlib.pyplot as plt

    from ..validate.plots import save_figure

    gp = galaxy_posterior(catalog, galaxy_id, flow=flow, n_samples=n_samples, seed=seed, row=row)
    row, bands = gp.row, gp.post.bands.bands
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(row["id"]))

    fig, (ax, ax_sfh) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    pivots = pivot_wavelengths(gp.model)
    wave, sed = _sed_mags(gp, _SED_SAMPLES)
    lo, mid, hi = np.nanpercentile(sed, [16, 50, 84], axis=0)
    window = (wave > 0.6 * pivots.min()) & (wave < 1.6 * pivots.max())
    ax.fill_between(wave[window], lo[window], hi[window], color="C0", alpha=0.25, lw=0, label="model SED, 16-84%")
    ax.plot(wave[window], mid[window], color="C0", lw=0.8, label="model SED, median")
    model_mag = model_photometry(gp)
    ax.plot(pivots, model_mag, "D", mfc="none", mec="C3", ms=8, label="posterior-predictive model")
    used = str(row.get("bands_used", ""))
    for j, b in enumerate(bands):
        mag, err = row.get(f"mag_{b}", np.nan), row.get(f"sigma_{b}", np.nan)
        if not np.isfinite(mag):
            continue
        fit_band = b in used if all(len(x) == 1 for x in bands) else True
        ax.errorbar(pivots[j], mag, yerr=err if np.isfinite(err) else None, fmt="o", color="k",
                    mfc="k" if fit_band else "none", ms=5, capsize=2,
                    label=("measured" if fit_band else "measured, not used by the flow")
                    if j == min(i for i, bb in enumerate(bands) if (bb in used) == fit_band) else None)
        ax.annotate(b, (pivots[j], mag), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("observed wavelength [Angstrom]")
    ax.set_ylabel("AB magnitude")
    ax.legend(fontsize=7, loc="best")
    sfh = _sfh(gp)
    if sfh is not None:
        edges, sfr = sfh
        p16, p50, p84 = np.percentile(sfr, [16, 50, 84], axis=0)
        left = np.maximum(edges, 1e-3)
        ax_sfh.stairs(p50, left, color="C2", label="median")
        ax_sfh.stairs(p84, left, baseline=p16, fill=True, color="C2", alpha=0.3, label="16-84%")
        ax_sfh.set_xscale("log")
        ax_sfh.set_yscale("log")
        ax_sfh.set_xlabel("lookback time [Gyr]")
        ax_sfh.set_ylabel("SFR [Msun/yr]")
        ax_sfh.legend(fontsize=7)
        ax_sfh.set_title("star-formation history (model bins)", fontsize=9)
    else:
        ax_sfh.set_visible(False)
    mass = gp.quantities.get("log_mstar_total")
    mass_txt = f"; log M* = {np.median(mass):.2f} [{np.percentile(mass, 16):.2f}, {np.percentile(mass, 84):.2f}]" \
        if mass is not None else ""
    reason = str(row.get("reason", "") or "")
    fig.suptitle(f"id {row['id']}  z = {gp.z:.4f}  status {row.get('status', '?')}{mass_txt}\n"
                 f"reason: {reason[:110] or '-'}   ({gp.source}, {gp.theta.shape[0]} samples)", fontsize=9)
    fig.tight_layout()
    fit_path = save_figure(fig, out_dir / f"{stem}_fit.png")

    names = [q for q in CORNER_QUANTITIES if q in gp.quantities and np.isfinite(gp.quantities[q]).any()]
    samples = np.column_stack([gp.quantities[q] for q in names])
    samples = samples[np.all(np.isfinite(samples), axis=1)]
    corner_path = save_figure(_corner(samples, [CORNER_QUANTITIES[q] for q in names],
                                      f"id {row['id']}: posterior ({gp.source})"), out_dir / f"{stem}_corner.png")
    return fit_path, corner_path


def model_photometry(gp: GalaxyPosterior) -> np.ndarray:
    """The posterior-predictive model magnitude per band: the catalog's ``model_mag_<band>`` (its fit check) if
    present, else the median model magnitude of the samples."""
    bands = gp.post.bands.bands
    if all(f"model_mag_{b}" in gp.row.index for b in bands):
        return np.array([gp.row[f"model_mag_{b}"] for b in bands], dtype=float)
    from ..infer.fit_check import FIT_SAMPLES, posterior_photometry

    z = np.array([gp.z]) if gp.post.redshift_input is None else gp.theta[None, :, -1]
    flux, _ = posterior_photometry(gp.model, gp.theta[None, :, : gp.post.n_model_params], z, FIT_SAMPLES)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nanmedian(nanomaggies_to_mag(np.where(flux[0] > 0, flux[0], np.nan)), axis=0)


def _corner(samples: np.ndarray, labels: list[str], title: str):
    """A corner plot (:func:`sedscale.validate.plots.corner_grid`) with the median and 16-84% on the diagonal."""
    from ..validate.plots import corner_grid

    ranges = []
    for j in range(samples.shape[1]):
        lo, hi = np.percentile(samples[:, j], [0.5, 99.5])
        ranges.append((lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
    # A few thousand samples: contours of the smoothed histograms.
    fig = corner_grid(((samples, "k"),), labels, ranges, smooth=1.0, panel=1.8, fontsize=8)
    k = samples.shape[1]
    for i, ax in enumerate(fig.axes[:: k + 1]):
        for q, style in zip(np.percentile(samples[:, i], [16, 50, 84]), (":", "-", ":")):
            ax.axvline(q, color="C0", ls=style, lw=0.8)
        ax.set_title(f"{np.median(samples[:, i]):.2f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig
