"""Posterior catalogs of galaxy spectra (DIGS): SDSS spectrum files or a spectra table through a spectral flow.

Example::

    from sedscale.infer.spectra import read_spectral_inputs, run_spectral_catalog

    obs = read_spectral_inputs(["../shared/data/sdss_spectra"])
    table = run_spectral_catalog(obs, "checkpoints/delayed_tau_spectra", n_samples=1000)

How it works
------------
* Inputs are SDSS ``spec-PLATE-MJD-FIBER.fits`` files (or directories of
  them), read onto the DIGS rest-frame grid by :mod:`sedscale.io.sdss`
  (de-redshifted, masked, smoothed to 350 km/s, ivar propagated), or a
  Parquet table written by :func:`sedscale.io.sdss.spectra_table` (``id``,
  ``z``, ``flux``, ``ivar``, ``good``: the same quantities).
* Fluxes become rest-frame L_lambda in Lsun/A with the luminosity distance
  (:func:`~sedscale.io.sdss.rest_luminosity`), uncertainties ``1/sqrt(ivar)``,
  and the flow inputs are made by :func:`~sedscale.observe.layout.spectrum_x`
  exactly as for the training spectra (normalization, masked elements).
* Galaxies are sampled in chunks on the Dask cluster (the flow loaded once
  per worker), with the photometric catalog's sampling, summaries and
  status rules (:mod:`sedscale.infer.catalog`).
* Per spectrum the posterior-predictive fit is reported: the chi2 of the
  model spectra of ``PPC_DRAWS`` posterior draws against the data over the
  good elements (``chi2_ppc``: their median; ``chi2_dof``: the number of
  good elements), and whether x lies in the training support.

Statuses are those of the photometric catalog: ``bad_input`` (the reader
flagged the spectrum: unreadable, no redshift, ``ZWARNING``, too few good
elements; or no usable normalization), ``out_of_support``,
``sampling_timeout`` and ``ok``.

Aperture: an SDSS spectrum is the light inside a 3-arcsec fiber, so its
L_lambda, and the mass and SFR inferred from it, refer to the part of the
galaxy inside the fiber (typically a third of the light at z ~ 0.05), not
to the whole galaxy; the fiber also samples the centre, which is older
and more metal-rich than the outskirts.  The spectrophotometric
calibration of SDSS-I/II is good to a few per cent, below the 5% DIGS noise
but above the 0.5-1% per element of the high-S/N spectra.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._version import __version__
from ..errors import ConfigError
from ..io.atomic import write_table
from ..io.catalog import META_PREFIX, with_units, write_catalog
from ..io.sdss import ALL_MASK_BITS, read_sdss_spectra, rest_luminosity
from ..observe.layout import LOG_NORM_COLUMN, MISSING_LOG_SIGMA, SPECTRUM_X_COLUMNS, drop_elements, spectrum_x
from ..observe.spectra import DIGS_WAVELENGTH
from ..observe.spectral_noise import SpectralNoiseModel, spectral_noise_model
from .catalog_output import CATALOG_FORMAT, output_units
from .catalog_plan import CatalogOptions
from .catalog_worker import load_posterior_cached, model_for
from .fit_check import POOR_FIT_P
from .posterior import Posterior
from .quality import STATUS_OUT_OF_SUPPORT, STATUSES
from .rows import flag_rows, posterior_rows
from .summaries import PERCENTILES, STAT_NAMES
from .support import XSupport, fit_support, support_path, training_set_mismatch, training_set_provenance

#: Good-element fraction below which a spectrum is not used (see read_spectral_inputs).
MIN_GOOD_FRACTION = 0.5
#: Posterior draws whose model spectra enter the posterior-predictive chi2.
PPC_DRAWS = 50
#: Spectra per Dask task.
CHUNK_SPECTRA = 256


@dataclass
class SpectralObservations:
    """Spectra on the DIGS grid in the model's units.

    Attributes
    ----------
    ids : ndarray of str (n,)
    z : ndarray (n,)
    lum, sigma : ndarray (n, 138)
        Rest-frame L_lambda and its 1-sigma uncertainty (Lsun/A); sigma is
        inf where the element is not good.
    good : ndarray of bool (n, 138)
    flagged : ndarray of bool (n,)
        The reader flagged the spectrum (``reason`` says why).
    reason : ndarray of object (n,)
    extra : dict of str to ndarray
        Reader diagnostics copied to the output (``good_fraction``, ``median_snr``).
    sources : list of str
    """

    ids: np.ndarray
    z: np.ndarray
    lum: np.ndarray
    sigma: np.ndarray
    good: np.ndarray
    flagged: np.ndarray
    reason: np.ndarray
    extra: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)

    def __len__(self) -> int:
        return self.ids.size

    def take(self, rows) -> SpectralObservations:
        return SpectralObservations(
            self.ids[rows], self.z[rows], self.lum[rows], self.sigma[rows], self.good[rows], self.flagged[rows],
            self.reason[rows], {k: v[rows] for k, v in self.extra.items()}, self.sources,
        )

    def x(self) -> tuple[np.ndarray, np.ndarray]:
        """Flow inputs ``(x, valid)`` (:func:`~sedscale.observe.layout.spectrum_x`)."""
        return spectrum_x(self.lum, self.sigma, self.good & ~self.flagged[:, None])


def _from_table(frame: pd.DataFrame, sources) -> SpectralObservations:
    """Observations from a :func:`~sedscale.io.sdss.spectra_table`-like frame (flux in 1e-17 erg/s/cm^2/A rest)."""
    from ..io.sdss import SDSSSpectrum

    missing = [c for c in ("id", "z", "flux", "ivar", "good") if c not in frame.columns]
    if missing:
        raise ConfigError(f"spectra table lacks columns {missing} (see sedscale.io.sdss.spectra_table)")
    spectra = []
    for row in frame.itertuples(index=False):
        spec = SDSSSpectrum(
            id=str(row.id), path=str(getattr(row, "path", "")), z=float(row.z),
            flux=np.asarray(row.flux, dtype=float), ivar=np.asarray(row.ivar, dtype=float),
            good=np.asarray(row.good, dtype=bool), flag=bool(getattr(row, "flag", False)),
            reason=str(getattr(row, "reason", "") or ""),
        )
        if spec.flux.shape != DIGS_WAVELENGTH.shape or spec.ivar.shape != spec.flux.shape or spec.good.shape != spec.flux.shape:
            spec = SDSSSpectrum(id=spec.id, path=spec.path, z=spec.z, flag=True,
                                reason=f"arrays of length {spec.flux.size}, expected {DIGS_WAVELENGTH.size}")
        spectra.append(spec)
    return observations_from_sdss(spectra, sources)


def observations_from_sdss(spectra, sources=()) -> SpectralObservations:
    """Convert :class:`~sedscale.io.sdss.SDSSSpectrum` objects to model units (Lsun/A)."""
    n, m = len(spectra), DIGS_WAVELENGTH.size
    lum = np.zeros((n, m))
    sigma = np.full((n, m), np.inf)
    good = np.zeros((n, m), dtype=bool)
    flagged = np.zeros(n, dtype=bool)
    reason = np.full(n, "", dtype=object)
    for i, s in enumerate(spectra):
        flagged[i], reason[i] = s.flag, s.reason
        if not np.isfinite(s.z) or s.z <= 0:
            flagged[i] = True
            reason[i] = reason[i] or f"no usable redshift (z={s.z})"
            continue
        li, ivar = rest_luminosity(s)
        ok = s.good & np.isfinite(li) & (ivar > 0)
        lum[i] = np.where(ok, li, 0.0)
        with np.errstate(divide="ignore"):
            sigma[i] = np.where(ok, 1.0 / np.sqrt(np.where(ok, ivar, 1.0)), np.inf)
        good[i] = ok
    return SpectralObservations(
        ids=np.array([s.id for s in spectra], dtype=object),
        z=np.array([s.z for s in spectra], dtype=float),
        lum=lum, sigma=sigma, good=good, flagged=flagged, reason=reason,
        extra={
            "good_fraction": np.array([s.good_fraction for s in spectra], dtype=float),
            "median_snr": np.array([s.median_snr for s in spectra], dtype=float),
        },
        sources=[str(p) for p in sources],
    )


def read_spectral_inputs(paths, min_good_fraction: float = MIN_GOOD_FRACTION,
                         mask_bits: int | None = None) -> SpectralObservations:
    """Spectra from SDSS spectrum files, DESI coadd files (with their redrock files) or directories of
    them, or from one Parquet spectra table.

    A directory stands for its ``*spec-*.fits`` and ``coadd-*.fits`` files
    (sorted); a DESI coadd gives one spectrum per target
    (:func:`~sedscale.io.desi.read_desi_coadd`).

    ``mask_bits``: SDSS ``and_mask`` bits that make a pixel bad (default:
    all; :func:`~sedscale.io.sdss.sppixmask`).  ``min_good_fraction``:
    spectra with fewer good elements are flagged by the reader.  0.5 by default, below the reader's own 0.7: the ``survey``
    training noise masks the elements an SDSS spectrum misses up to z = 0.3
    (38% of the grid), so the flow has seen such coverage.

    Raises
    ------
    ConfigError
        No input, or a table without the required columns.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise ConfigError("no spectrum files given")
    if len(paths) == 1 and paths[0].suffix.lower() == ".parquet":
        return _from_table(pd.read_parquet(paths[0]), paths)
    from ..io.desi import is_desi_coadd, read_desi_coadd

    files: list[Path] = []
    for p in paths:
        files.extend(sorted([*p.glob("*spec-*.fits"), *p.glob("coadd-*.fits")]) if p.is_dir() else [p])
    spectra = []
    for f in files:
        if is_desi_coadd(f):
            spectra.extend(read_desi_coadd(f, min_good_fraction=min_good_fraction))
        else:
            spectra.extend(read_sdss_spectra([f], min_good_fraction=min_good_fraction,
                                             mask_bits=ALL_MASK_BITS if mask_bits is None else mask_bits))
    if not spectra:
        raise ConfigError(f"no spectrum files (*spec-*.fits, coadd-*.fits) found in {[str(p) for p in paths]}")
    return observations_from_sdss(spectra, [s.path for s in spectra])


@dataclass(frozen=True)
class SpectralLikelihood:
    """How a spectral flow's model spectra meet data: the data model it was trained with.

    Built from a checkpoint's sidecar (:meth:`of`): its training noise
    (:class:`~sedscale.observe.spectral_noise.SpectralNoiseModel`: error
    floor, calibration polynomial, emission-line mask, observed elements)
    and the range of stellar velocity dispersions of its training spectra.
    The posterior-predictive chi2 and the best fit use it, so that a flow
    trained with a 2% floor and a calibration polynomial is judged by the
    likelihood it was trained for.

    Attributes
    ----------
    noise : SpectralNoiseModel
    wave : ndarray (m,)
    sigma_star_kms : (float, float) or None
        Uniform range of sigma_star (km/s), None: fixed 350 km/s broadening.
    """

    noise: SpectralNoiseModel
    wave: np.ndarray
    sigma_star_kms: tuple[float, float] | None = None

    @classmethod
    def of(cls, post: Posterior) -> SpectralLikelihood:
        sigma_star = post.metadata.get("sigma_star_kms")
        return cls(spectral_noise_model(post.metadata["spectral_noise"]), np.asarray(post.metadata["wavelength"]),
                   (float(sigma_star[0]), float(sigma_star[1])) if sigma_star else None)

    @property
    def n_nuisance(self) -> int:
        """Fitted nuisance parameters: calibration coefficients and sigma_star."""
        return self.noise.calibration_order + (self.sigma_star_kms is not None)

    def usable(self, good: np.ndarray) -> np.ndarray:
        """Good elements the flow uses (emission lines and never-observed elements dropped)."""
        return good & self.noise.observable_elements(self.wave)[None, :]

    def model_spectra(self, model, theta, z, sigma_star=None, dtype=np.float64) -> np.ndarray:
        """Model spectra (n, m) in Lsun/A; ``sigma_star`` (n,) km/s when the flow has a range.

        float64 for the least-squares fit (finite-difference Jacobians);
        float32, the precision of the training spectra and 2.3x faster, is
        enough for the posterior-predictive chi2.
        """
        from ..simulate.config import model_spectra

        return model_spectra(model, theta, z, sigma_star if self.sigma_star_kms is not None else None, dtype)

    def chi2(self, model_lum, lum, sigma, good) -> np.ndarray:
        """Chi2 (n,) over ``good`` after the best calibration polynomial; ``sigma`` includes the floor."""
        calibrated = self.noise.calibrate(model_lum, lum, sigma, good, self.wave)
        with np.errstate(invalid="ignore", divide="ignore"):
            resid = np.where(good, (lum - calibrated) / sigma, 0.0)
        return np.sum(resid**2, axis=1)


def ppc_chi2(lik: SpectralLikelihood, model, theta: np.ndarray, z: np.ndarray, lum: np.ndarray, sigma: np.ndarray,
             good: np.ndarray, rng: np.random.Generator):
    """Chi2 of model spectra against data over the good elements.

    Parameters
    ----------
    lik : SpectralLikelihood
    theta : ndarray (n, k, d)
        k posterior draws per spectrum (NaN rows are skipped).
    z : ndarray (n,)
    lum, sigma : ndarray (n, m)
        Data and uncertainties (Lsun/A; sigma with the flow's error floor).
    good : ndarray of bool (n, m)
    rng : numpy.random.Generator
        Draws sigma_star from its training range (the flow marginalises it).

    Returns
    -------
    ndarray (n,)
        Median chi2 over the draws (NaN without draws).
    """
    n, k, d = theta.shape
    flat = theta.reshape(n * k, d)
    ok = np.isfinite(flat).all(axis=1)
    chi2 = np.full(n * k, np.nan)
    if ok.any():
        sigma_star = rng.uniform(*lik.sigma_star_kms, size=int(ok.sum())) if lik.sigma_star_kms else None
        model_lum = lik.model_spectra(model, flat[ok], np.repeat(z, k)[ok], sigma_star, np.float32).astype(np.float64)
        rows = np.repeat(np.arange(n), k)[ok]
        chi2[ok] = lik.chi2(model_lum, lum[rows], sigma[rows], good[rows])
    chi2 = chi2.reshape(n, k)
    out = np.full(n, np.nan)
    has = np.isfinite(chi2).any(axis=1)
    out[has] = np.nanmedian(chi2[has], axis=1)
    return out


def flow_inputs(post: Posterior, x: np.ndarray) -> np.ndarray:
    """Spectral x as the flow was trained to see it: elements its training noise never observed are dropped.

    A ``survey`` flow never saw an element above 9200 A rest observed; fed
    one (a spectrum covering it, or DIGS-like full coverage) it extrapolates
    (+0.3 dex in log M* on 5% DIGS spectra), so such elements are treated
    as missing.
    """
    lik = SpectralLikelihood.of(post)
    return drop_elements(x, lik.noise.observable_elements(lik.wave))


def best_fit(lik: SpectralLikelihood, model, theta0: np.ndarray, z: float, lum: np.ndarray, sigma: np.ndarray,
             good: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Least-squares fit of one spectrum inside the prior box, started from ``theta0``.

    Tells a spectrum the model cannot reproduce (chi2 >> dof) from a
    posterior that is merely wide: at S/N ~ 100 the model spectra of
    posterior draws miss the data by chi2/dof ~ 20-600 even for simulated
    spectra, while the best fit of those reaches chi2 ~ dof.  The
    calibration polynomial is solved for at every step (linear); sigma_star,
    when the flow marginalises it, is fitted with the parameters.

    Returns
    -------
    theta : ndarray (d,)
    chi2 : float
        Over the good elements.
    sigma_star : float
        Best-fit stellar velocity dispersion (km/s; NaN without a range).
    """
    from scipy.optimize import least_squares

    zz = np.array([z])
    d = theta0.size
    if lik.sigma_star_kms is not None:
        low = np.append(low, lik.sigma_star_kms[0])
        high = np.append(high, lik.sigma_star_kms[1])
        theta0 = np.append(theta0, np.mean(lik.sigma_star_kms))

    def residuals(p):
        m = lik.model_spectra(model, p[None, :d], zz, p[d:] if p.size > d else None)
        calibrated = lik.noise.calibrate(m, lum[None], sigma[None], good[None], lik.wave)[0]
        return ((lum - calibrated) / sigma)[good]

    span = high - low
    start = np.clip(theta0, low + 1e-6 * span, high - 1e-6 * span)
    fit = least_squares(residuals, start, bounds=(low, high), x_scale=0.01 * span, diff_step=1e-4)
    return fit.x[:d], float(2 * fit.cost), float(fit.x[d]) if fit.x.size > d else float("nan")


#: A best-fit parameter within this fraction of its prior width from a bound is "at the edge".
EDGE_FRACTION = 0.005


def edge_parameters(theta: np.ndarray, prior, names) -> np.ndarray:
    """Per row, the physical parameters of ``theta`` (n, d) at a bound of the prior box (``"log_mass=7.00"``).

    The unit-cube coordinates of a non-parametric SFH (``frac_u*``) are left
    out: their bounds are ordinary SFHs (all mass before or after a bin edge).
    """
    width = prior.high - prior.low
    near = (theta - prior.low < EDGE_FRACTION * width) | (prior.high - theta < EDGE_FRACTION * width)
    out = np.full(theta.shape[0], "", dtype=object)
    for i in range(theta.shape[0]):
        out[i] = ",".join(f"{n}={theta[i, k]:.2f}" for k, n in enumerate(names)
                          if near[i, k] and not n.startswith("frac_u"))
    return out


def flag_poor_fits(table: pa.Table, chi2_best: np.ndarray, dof: np.ndarray, p_min: float = POOR_FIT_P,
                   at_edge: np.ndarray | None = None) -> pa.Table:
    """Mark ``out_of_support`` the spectra whose best fit has a chi2 p-value below ``p_min``.

    No parameters inside the prior reproduce such a spectrum within its
    uncertainties: the posterior is computed but describes a galaxy the
    model cannot make (reason ``poor_fit:chi2/dof=<value>``).  ``at_edge``
    (n,) of str names the best-fit parameters pressed against the prior box
    (``at_prior_edge:log_mass=7.00``), the usual physical reason: e.g. a
    fiber holding less than the prior's smallest mass.
    """
    from scipy import stats

    with np.errstate(invalid="ignore", divide="ignore"):
        poor = np.isfinite(chi2_best) & (dof > 0) & (stats.chi2.sf(chi2_best, np.maximum(dof, 1)) < p_min)
    labels = np.full(len(poor), "", dtype=object)
    for i in np.flatnonzero(poor):
        edge = f"at_prior_edge:{at_edge[i]}" if at_edge is not None and at_edge[i] else ""
        labels[i] = ";".join(filter(None, [f"poor_fit:chi2/dof={chi2_best[i] / dof[i]:.2f}", edge]))
    return flag_rows(table, labels, STATUS_OUT_OF_SUPPORT)


def infer_spectra_chunk(obs: SpectralObservations, flow: str, flow_sha256: str, support: XSupport | None,
                        options: CatalogOptions, chunk: int, fit: bool = False) -> pa.Table:
    """Posterior-catalog rows of a chunk of spectra (runs on a worker); ``fit``: add the best fit."""
    post = load_posterior_cached(flow, flow_sha256, SPECTRUM_X_COLUMNS)
    model = model_for(post)
    lik = SpectralLikelihood.of(post)
    # The flow was trained on uncertainties with its error floor: the data get the same.
    obs = replace(obs, sigma=np.where(obs.good, lik.noise.observed_sigma(obs.lum, obs.sigma), np.inf))
    x, valid = obs.x()
    x = flow_inputs(post, x)
    used = lik.usable(obs.good)
    bad = obs.flagged | ~valid
    reason = obs.reason.copy()
    reason[~obs.flagged & ~valid] = "no_normalization:too_few_good_elements_in_4500-6500A"
    table, theta = posterior_rows(post, model, x, obs.z, bad, reason, support, options, chunk,
                                  support_x=None if support is None else support_features(x, support.columns))
    n = len(obs)
    chi2 = np.full(n, np.nan)
    good = np.flatnonzero(~bad)
    if good.size:
        draws = theta[:, : min(PPC_DRAWS, theta.shape[1])]
        chi2[good] = ppc_chi2(lik, model, draws, obs.z[good], obs.lum[good], obs.sigma[good], used[good],
                              np.random.default_rng([options.seed, chunk, 5]))
    fits = {}
    if fit:
        d = len(post.param_names)
        best = np.full((n, d), np.nan)
        chi2_best = np.full(n, np.nan)
        sigma_star = np.full(n, np.nan)
        for j, i in enumerate(good):
            start = np.nanmedian(theta[j], axis=0)
            if np.isfinite(start).all():
                best[i], chi2_best[i], sigma_star[i] = best_fit(lik, model, start, obs.z[i], obs.lum[i], obs.sigma[i],
                                                                used[i], post.prior.low, post.prior.high)
        fits = {"chi2_best": chi2_best, **{f"bestfit_{p}": best[:, k] for k, p in enumerate(post.param_names)}}
        if lik.sigma_star_kms is not None:
            fits["bestfit_sigma_star"] = sigma_star
        table = flag_poor_fits(table, chi2_best, used.sum(axis=1) - d - lik.n_nuisance,
                               at_edge=edge_parameters(best, post.prior, post.param_names))
    columns = {
        "id": pa.array(obs.ids.astype(str).tolist(), pa.string()),
        "z": pa.array(obs.z),
        LOG_NORM_COLUMN: pa.array(x[:, 0]),
        **{k: pa.array(v.astype(np.float32)) for k, v in obs.extra.items()},
        "chi2_ppc": pa.array(chi2.astype(np.float32)),
        "chi2_dof": pa.array(np.where(bad, 0, used.sum(axis=1)).astype(np.int32)),
        **{k: pa.array(v.astype(np.float32)) for k, v in fits.items()},
    }
    for name in table.column_names:
        columns[name] = table.column(name)
    return pa.table(columns)


def support_features(x: np.ndarray, columns=None) -> np.ndarray:
    """What the x-support of spectra compares: log10 normalization, normalized spectrum, median log uncertainty.

    The 138 log-uncertainties of a simulated spectrum follow from two
    numbers (S/N and tilt), so their covariance is singular; their median
    over the observed elements stands for them.  ``columns`` (names of
    :data:`SUPPORT_COLUMNS`) selects features: elements never observed in
    training (rest-frame > 9200 A for SDSS coverage) carry no variance
    and are left out of the fit.
    """
    x = np.asarray(x, dtype=np.float64)
    m = (x.shape[1] - 1) // 2
    lsig = x[:, 1 + m :]
    observed = lsig < MISSING_LOG_SIGMA
    med = np.full(x.shape[0], np.nan)
    some = observed.any(axis=1)
    med[some] = np.nanmedian(np.where(observed[some], lsig[some], np.nan), axis=1)
    features = np.column_stack([x[:, : 1 + m], med])
    if columns is None:
        return features
    index = {c: i for i, c in enumerate(SUPPORT_COLUMNS)}
    return features[:, [index[c] for c in columns]]


#: Column names of :func:`support_features`.
SUPPORT_COLUMNS = SPECTRUM_X_COLUMNS[: 1 + DIGS_WAVELENGTH.size] + ("median_lsig",)


#: Training spectra behind a spectral x-support (reference + calibration):
#: 140 features each, so the file stays ~2 MB.
SUPPORT_REFERENCE = 4000
SUPPORT_CALIBRATION = 4000


def spectral_support(post: Posterior) -> XSupport | None:
    """The x-support of a spectral checkpoint: ``x_support.npz`` beside it, else fitted from its training set.

    The fit uses validation rows of the training set with the checkpoint's
    noise (fixed draws) and records the training set's digests, so that a
    file left beside a retrained checkpoint is refitted (or refused when the
    training set is not on this machine) instead of silently used.  Returns
    None when neither exists (no out-of-support check).

    Raises
    ------
    ConfigError
        ``x_support.npz`` belongs to another training set, which is not here to refit from.
    """
    path = support_path(post.path)
    training_set = post.metadata.get("training_set") or {}
    sims = Path(training_set["path"]) if training_set.get("path") else None
    if sims is not None and not sims.exists():
        sims = None
    if path.exists():
        found = XSupport.load(path)
        mismatch = training_set_mismatch(found, training_set)
        if not mismatch:
            return found
        if sims is None:
            raise ConfigError(f"{path} was built from another training set than the checkpoint's ({mismatch}) "
                              f"and {training_set.get('path') or 'its training set'} is not here to refit it: "
                              "delete it, or pass --no-support-check")
    if sims is None:
        return None
    from ..train.data import open_training_set, reference_x

    ts = open_training_set(sims).with_noise(post.metadata["spectral_noise"], None)
    features = support_features(reference_x(ts, SUPPORT_REFERENCE + SUPPORT_CALIBRATION))
    varies = features.std(axis=0) > 0
    provenance = dict(training_set_provenance(sims), features="sedscale.infer.spectra.support_features")
    support = fit_support(features[:, varies], [c for c, v in zip(SUPPORT_COLUMNS, varies) if v],
                          n_reference=SUPPORT_REFERENCE, n_calibration=SUPPORT_CALIBRATION, provenance=provenance)
    support.save(path)
    return support


def run_spectral_catalog(obs: SpectralObservations, flow, options: CatalogOptions | None = None, client=None,
                         check_support: bool = True, progress: bool = False, fit: bool = False,
                         work_dir=None, resume: bool = False) -> pa.Table:
    """Posterior catalog of spectra, in input order.

    Parameters
    ----------
    obs : SpectralObservations
    flow : str or Path
        Spectral checkpoint directory.
    options : CatalogOptions, optional
        ``n_samples``, ``seed``, ``max_time``, ``save_samples``, ``derived_samples``.
    client : distributed.Client, optional
        Chunks of :data:`CHUNK_SPECTRA` run as tasks (else in this process).
    check_support : bool
    progress : bool
    fit : bool
        Also fit every spectrum by least squares from its posterior median
        (``chi2_best``, ``bestfit_<param>``; ~1-5 s per spectrum).
    work_dir : path, optional
        Keep every finished chunk there (one Parquet file each, written
        atomically, listed in ``_manifest.json`` with its sha256), so that a
        killed run continues with ``resume``.  None: in memory only.
    resume : bool
        Continue the unfinished run of the same inputs and options in
        ``work_dir`` (verified chunks are kept, not recomputed).

    Returns
    -------
    pyarrow.Table
        With units and provenance metadata.

    Raises
    ------
    CheckpointError
        Not a spectral checkpoint.
    ConfigError
        ``work_dir`` holds another run, or an unfinished one without ``resume``.
    """
    from ..train.checkpoint import CheckpointError

    options = options or CatalogOptions()
    post = Posterior.load(flow)
    if post.metadata.get("observable") != "spectrum":
        raise CheckpointError(f"{post.path} is a {post.metadata.get('observable', 'photometry')} checkpoint; "
                              "spectra need a flow trained on spectra (bin/run_simulate --observable spectrum)")
    sha = post.metadata["weights"]["sha256"]
    support = spectral_support(post) if check_support else None
    chunks = [obs.take(slice(s, s + CHUNK_SPECTRA)) for s in range(0, len(obs), CHUNK_SPECTRA)]
    args = (str(post.path), sha, support, options)
    tables: dict[int, pa.Table] = {}
    identity = run_identity(sha, support, options, fit, obs)
    record = _chunk_recorder(tables, work_dir, identity, len(chunks), resume)
    todo = [i for i in range(len(chunks)) if i not in tables]
    import dask
    from tqdm.auto import tqdm

    from ..cluster.execute import run_tasks

    tasks = [dask.delayed(infer_spectra_chunk, pure=False)(chunks[i], *args, i, fit) for i in todo]
    with tqdm(total=sum(len(chunks[i]) for i in todo), unit="spectrum", disable=not progress) as bar:

        def record_chunk(k: int, table: pa.Table) -> None:
            record(todo[k], table)
            bar.update(len(chunks[todo[k]]))

        run_tasks(tasks, client, record_chunk)
    table = pa.concat_tables([tables[i] for i in range(len(chunks))])
    base = {LOG_NORM_COLUMN: "dex(Lsun/Angstrom)", "bestfit_sigma_star": "km/s",
            **{f"bestfit_{p.name}": p.unit for p in post.prior.parameters}}
    units = output_units(post, table.column_names, base)
    return with_units(table, units, catalog_provenance(post, sha, support, options, obs, identity["inputs_sha256"]))


def run_identity(sha: str, support, options: CatalogOptions, fit: bool, obs: SpectralObservations) -> dict:
    """What determines a spectral catalog's content (its work directory's identity)."""
    inputs = hashlib.sha256()
    for a in (obs.ids.astype(str), obs.z, obs.lum, obs.sigma, obs.good, obs.flagged):
        inputs.update(np.ascontiguousarray(a).tobytes() if a.dtype != object else "\n".join(a).encode())
    return {
        "observable": "spectrum",
        "checkpoint_sha256": sha,
        "support": None if support is None else support.describe(),
        "options": asdict(options),
        "best_fit": fit,
        "chunk_spectra": CHUNK_SPECTRA,
        "inputs_sha256": inputs.hexdigest(),
    }


def _chunk_recorder(tables: dict, work_dir, identity: dict, n_chunks: int, resume: bool):
    """Load the verified chunks of ``work_dir`` into ``tables``; return ``record(i, table)`` for new ones."""
    if work_dir is None:
        return tables.__setitem__
    from ..io.runs import partition_filename
    from .catalog_workdir import open_work_dir, write_run_manifest

    work = Path(work_dir)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    manifest = open_work_dir(work, digest, identity, n_chunks, resume)
    for key, entry in manifest["partitions"].items():
        tables[int(key)] = pq.read_table(work / entry["file"]).replace_schema_metadata(None)

    def record(i: int, table: pa.Table) -> None:
        manifest["partitions"][str(i)] = write_table(work / partition_filename(i), table)
        write_run_manifest(work, manifest)
        tables[i] = table

    return record


def catalog_provenance(post: Posterior, sha: str, support, options: CatalogOptions, obs,
                       inputs_sha256: str) -> dict[str, str]:
    """``sedscale.*`` metadata of a spectral posterior catalog."""
    training_set = post.metadata.get("training_set") or {}
    entries = {
        "format": CATALOG_FORMAT,
        "observable": "spectrum",
        "version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(post.path),
        "checkpoint_sha256": sha,
        "training_set_sha256": training_set.get("manifest_sha256") or "",
        "model": post.model_name,
        "flow": json.dumps(post.metadata["flow"], sort_keys=True),
        "prior": json.dumps(post.metadata["prior"], sort_keys=True),
        "spectral_noise": json.dumps(post.metadata.get("spectral_noise"), sort_keys=True),
        "param_names": json.dumps(list(post.param_names)),
        "options": json.dumps(asdict(options), sort_keys=True),
        "percentiles": json.dumps(list(PERCENTILES)),
        "stats": json.dumps(list(STAT_NAMES)),
        "statuses": json.dumps(list(STATUSES)),
        "support": json.dumps(support.describe() if support else None, sort_keys=True),
        "sources": json.dumps(list(obs.sources)),
        "inputs_sha256": inputs_sha256,
    }
    return {META_PREFIX + k: v for k, v in entries.items()}


def write_spectral_catalog(table: pa.Table, outputs) -> list[Path]:
    """Write the catalog to every output (``.parquet`` / ``.fits``), each atomically."""
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    header = {"ORIGIN": "sedscale", "SEDSCVER": (__version__, "sedscale version"),
              "OBSERVBL": ("spectrum", "flow inputs"), "MODEL": (meta.get(META_PREFIX + "model", ""), "forward model"),
              "CKPTHASH": (meta.get(META_PREFIX + "checkpoint_sha256", ""), "sha256 of the checkpoint weights")}
    return [write_catalog(table, out, header) for out in outputs]


def status_counts(table: pa.Table) -> dict[str, int]:
    values, counts = np.unique(table.column("status").to_numpy(zero_copy_only=False), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))
