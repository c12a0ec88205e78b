"""``bin/run_validate``: calibration report of a trained checkpoint, and the MCMC benchmark.

:func:`run_validation` simulates a fresh test set with the checkpoint's
model, prior, noise model and redshift distribution (a seed the training
set never used), samples the amortized posterior of every test galaxy (on
Dask workers when a client is given), and writes a report directory:

``summary.md``
    Pass/fail table per parameter with the numbers, joint HPD / TARP rows,
    calibration by redshift, r magnitude and r-band S/N, the posterior
    predictive check, and (with ``mcmc > 0``) the MCMC comparison and the
    speed-up table.
``*.png``
    Rank histograms, p-p plot, expected coverage, true vs recovered,
    PPC chi2, calibration by stratum, MCMC-vs-ANPE corner plots.
``ranks.parquet``
    One row per test galaxy: truth, posterior median / 16% / 84%, SBC ranks
    and fractional ranks, HPD and TARP levels, PPC chi2, strata variables.
``coverage.parquet``, ``calibration.parquet``, ``strata.parquet``
    Coverage curves (long form), the pass/fail table, the stratified table.
``mcmc.parquet``, ``mcmc_comparison.parquet``, ``mcmc_samples.parquet``
    Per-galaxy MCMC diagnostics and timings, per-parameter agreement with
    the amortized posterior, thinned MCMC samples.
``validation.json``
    Settings, timings and headline numbers (machine-readable).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from ..errors import ConfigError, SedscaleError
from ..io.atomic import atomic_write_bytes
from ..observe.layout import (
    FLUX_COLUMNS,
    FLUX_SIGMA_COLUMNS,
    MAG_COLUMNS,
    MAG_SIGMA_COLUMNS,
    PHOTOMETRY_X_COLUMNS,
    REDSHIFT_COLUMN,
)
from .calibration import (
    CalibrationThresholds,
    compute_calibration,
    coverage_table,
    stratified_summary,
    summarize_calibration,
)
from .mcmc import MCMCConfig, photometry_chi2
from .mcmc_benchmark import GalaxyObservation, run_mcmc_benchmark

#: Spawn key of the test-set random streams: far above any training partition index.
TEST_STREAM_KEY = 2**31 - 1
#: Posterior samples per galaxy in the posterior predictive p-value.
PPC_DRAWS = 20
#: Band of the magnitude and S/N strata.
STRATA_BAND = "r"
#: Redshift strata of band-masked (survey) flows.
Z_STRATA = np.array([0.002, 0.05, 0.15, 0.3, 0.6])


@dataclass(frozen=True)
class ValidationConfig:
    """Options of :func:`run_validation` (see ``bin/run_validate --help``).

    Attributes
    ----------
    flow : str
        Checkpoint directory.
    out : str
        Report directory (created; files in it are replaced).
    n_test : int
        Test simulations.
    n_samples : int
        Posterior samples per test simulation.
    seed : int or None
        Test-set seed; None: the training seed + 1 (the streams never
        coincide with training partitions, see :data:`TEST_STREAM_KEY`).
    noise_model : str or None
        Noise-model JSON; None: the shipped NSA model (checked against the
        checkpoint's training-set hash).
    z_range : (float, float) or None
        Test redshift range; None: the training set's distribution.
    max_time : float or None
        Seconds a sampling batch may spend redrawing out-of-prior samples.
    chunk_size : int
        Test galaxies per sampling task.
    strata_bins : int
        Quantile bins per stratifying variable.
    thresholds : CalibrationThresholds
    mcmc : int
        Galaxies for the MCMC comparison (0: none).
    mcmc_config : MCMCConfig
    catalog : str or None
        Draw the MCMC galaxies from this catalog instead of the test set.
    anpe_samples : int
        Amortized samples per MCMC galaxy (timed against the MCMC).
    n_corner : int
        Corner plots drawn (first MCMC galaxies).
    observed_bands : tuple of str or None
        Band-masked flows: test every galaxy in exactly these bands of the
        flow's set (one survey's pattern, e.g. DESI's ``decam_g decam_r
        decam_z w1 w2`` for the ``all_surveys`` flow); None: the training
        noise's mix of patterns and masks.
    """

    flow: str
    out: str
    n_test: int = 1000
    n_samples: int = 1000
    seed: int | None = None
    noise_model: str | None = None
    z_range: tuple | None = None
    max_time: float | None = 60.0
    chunk_size: int = 50
    strata_bins: int = 3
    thresholds: CalibrationThresholds = field(default_factory=CalibrationThresholds)
    mcmc: int = 0
    mcmc_config: MCMCConfig = field(default_factory=MCMCConfig)
    catalog: str | None = None
    anpe_samples: int = 10_000
    n_corner: int = 3
    observed_bands: tuple[str, ...] | None = None

    def __post_init__(self):
        for name in ("n_test", "n_samples", "chunk_size", "strata_bins", "anpe_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.mcmc < 0 or self.n_corner < 0:
            raise ConfigError("mcmc and n_corner must be >= 0")
        if self.n_test < 5 * self.thresholds.n_bins:
            raise ConfigError(f"n_test={self.n_test} is too small for a {self.thresholds.n_bins}-bin rank test "
                              f"(>= {5 * self.thresholds.n_bins})")


# ------------------------------------------------------------------ test set
def validation_streams(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent (theta, z, noise, rank) generators of a test set."""
    children = np.random.SeedSequence(entropy=seed, spawn_key=(TEST_STREAM_KEY,)).spawn(4)
    return tuple(np.random.default_rng(c) for c in children)


def redshift_from_metadata(redshift: dict | None, z_max: float, z_range=None, log=print):
    """The training set's redshift distribution (or ``z_range`` when given).

    A catalog distribution whose file is no longer readable falls back to a
    uniform one over the catalog's redshift range, with a message.
    """
    from ..simulate.redshift import SurveyRedshift, UniformRedshift, redshift_from_catalog

    if z_range is not None:
        return UniformRedshift(float(z_range[0]), float(z_range[1]))
    if not redshift:
        raise ConfigError("the checkpoint does not record its training redshifts; give --z-range")
    if redshift.get("kind") == "uniform":
        return UniformRedshift(float(redshift["low"]), float(redshift["high"]))
    if redshift.get("kind") == "survey":
        return SurveyRedshift(float(redshift["low"]), float(redshift["high"]))
    if redshift.get("kind") == "catalog":
        try:
            dist = redshift_from_catalog(redshift["path"], redshift["column"], z_max=z_max)
        except SedscaleError as exc:
            log(f"training redshift catalog unusable ({exc}); drawing z ~ U[{redshift['low']}, {redshift['high']}]")
            return UniformRedshift(float(redshift["low"]), float(redshift["high"]))
        if dist.sha256 != redshift.get("sha256"):
            log(f"warning: {redshift['path']} changed since training (redshift checksum differs)")
        return dist
    raise ConfigError(f"unknown training redshift distribution {redshift!r}")


def noise_for_checkpoint(metadata: dict, path: str | None = None, log=print):
    """The noise model to simulate with, compared with the training set's."""
    import hashlib

    from ..simulate.config import load_noise_model

    noise = load_noise_model(path)
    want = (metadata.get("training_set") or {}).get("noise_model_sha256")
    have = hashlib.sha256(json.dumps(noise.to_dict(), sort_keys=True).encode()).hexdigest()
    if want and want != have:
        log("warning: the noise model differs from the one of the training set (sha256 mismatch)")
    return noise


def simulate_test_set(model, noise, redshift, n: int, streams) -> pd.DataFrame:
    """``n`` valid test simulations as a frame in the training-set column layout.

    Columns: ``sim_id``, the parameters, ``z``, ``flux_*``,
    ``flux_sigma_*`` (nanomaggies), ``mag_*``, ``sigma_*`` (mag).
    """
    from ..simulate.partition import draw_valid

    draws = draw_valid(model, noise, redshift, n, streams[:3])
    cols = {"sim_id": np.arange(n, dtype=np.int64)}
    cols.update({p: draws.theta[:, j] for j, p in enumerate(model.param_names)})
    cols[REDSHIFT_COLUMN] = draws.z
    for names, arr in (
        (FLUX_COLUMNS, draws.flux),
        (FLUX_SIGMA_COLUMNS, draws.flux_sigma),
        (MAG_COLUMNS, draws.mag),
        (MAG_SIGMA_COLUMNS, draws.mag_sigma),
    ):
        cols.update({c: arr[:, k] for k, c in enumerate(names)})
    return pd.DataFrame(cols)


def simulate_masked_test_set(model, noise, redshift, n: int, streams) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` test simulations of a band-masked flow, with the checkpoint's training noise.

    Draws as ``bin/run_simulate --noise-model none`` does, then uncertainties,
    noise and band masks as training does (rows outside the noise model's
    magnitude range or with fewer than three usable bands are replaced).

    Returns
    -------
    test : pandas.DataFrame
        ``sim_id``, the parameters, ``z``, and per band of the model's set
        ``flux_<b>`` and ``flux_sigma_<b>`` (nanomaggies; NaN sigma for
        masked bands), ``mag_<b>`` (NaN where masked), ``observed_<b>``
        (0/1); ``n_bands``.
    x : ndarray, shape (n, 3 n_band + 1), float32
    """
    from ..observe.layout import masked_photometry_x
    from ..simulate.partition import draw_photometry

    bands = model.bands
    parts, xs, have = [], [], 0
    while have < n:
        theta, z, flux_true = draw_photometry(model, redshift, 2 * (n - have) + 16, streams[:3])
        flux, sigma = noise.draw(flux_true, streams[2])
        x, used, valid = masked_photometry_x(flux, sigma, z, noise.error_floor)
        keep = np.flatnonzero(valid & noise.usable(flux_true))[: n - have]
        cols = {p: theta[keep, j] for j, p in enumerate(model.param_names)}
        cols[REDSHIFT_COLUMN] = z[keep]
        cols.update({c: flux[keep, k] for k, c in enumerate(bands.columns("flux_"))})
        cols.update({c: np.where(used[keep, k], sigma[keep, k], np.nan)
                     for k, c in enumerate(bands.columns("flux_sigma_"))})
        cols.update({c: np.where(used[keep, k], x[keep, k], np.nan) for k, c in enumerate(bands.columns("mag_"))})
        cols.update({c: used[keep, k].astype(np.int8) for k, c in enumerate(bands.columns("observed_"))})
        cols["n_bands"] = used[keep].sum(axis=1)
        parts.append(pd.DataFrame(cols))
        xs.append(x[keep])
        have += keep.size
    test = pd.concat(parts, ignore_index=True)
    test.insert(0, "sim_id", np.arange(n, dtype=np.int64))
    return test, np.concatenate(xs)


def observed_pattern(bands, observed) -> tuple[bool, ...]:
    """Presence per band of ``bands`` (a BandSet) of the labels ``observed``; a one-line error for unknown ones."""
    from ..observe.layout import MIN_BANDS

    unknown = sorted(set(observed) - set(bands.bands))
    if unknown:
        raise ConfigError(f"--observed-bands {unknown} not in band set {bands.name!r} {bands.bands}")
    if len(set(observed)) < MIN_BANDS:
        raise ConfigError(f"--observed-bands needs >= {MIN_BANDS} bands, got {list(observed)}")
    return tuple(b in observed for b in bands.bands)


def strata_band(test: pd.DataFrame, bands) -> str:
    """Band of the magnitude and S/N strata: :data:`STRATA_BAND` if the test set measured it, else the most measured."""
    counts = {b: int(np.isfinite(test[f"mag_{b}"]).sum()) for b in bands if f"mag_{b}" in test}
    if counts.get(STRATA_BAND, 0) >= len(test) // 2:
        return STRATA_BAND
    return max(counts, key=counts.get)


#: Derived properties calibrated beside the parameters: name, function of ``model.derived``, rank range.
DERIVED_CHECKS = (
    ("log_mstar_total", lambda d: d["log_mstar_total"], (4.0, 13.0)),
    ("log_sfr_100myr", lambda d: np.log10(np.maximum(d["sfr_100myr"], 1e-8)), (-8.0, 4.0)),
    ("log_sfr_1gyr", lambda d: np.log10(np.maximum(d["sfr_1gyr"], 1e-8)), (-8.0, 4.0)),
    ("log_z_mw", lambda d: np.log10(np.maximum(d["z_mw"], 1e-6)), (-6.0, -1.0)),
    ("age_mw", lambda d: d["age_mw"], (0.0, 14.0)),
)


def derived_for_calibration(model, samples, theta_true, z) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Derived quantities of the samples and of the truths (:data:`DERIVED_CHECKS`: log M* of living stars
    + remnants, log SFR over 100 Myr and 1 Gyr, mass-weighted log Z and age).

    Returns
    -------
    names : list of str
    samples_d : ndarray, shape (n, L, k)
    truth_d : ndarray, shape (n, k)
    low, high : ndarray, shape (k,)
        Ranges used for the TARP distance scale.
    """
    n, L, d = samples.shape
    theta = np.clip(samples.reshape(n * L, d), model.prior.low, model.prior.high)
    drawn = model.derived(theta, np.repeat(z, L))
    truth = model.derived(np.asarray(theta_true, dtype=float), z)
    names = [c[0] for c in DERIVED_CHECKS]
    samples_d = np.stack([f(drawn).reshape(n, L) for _, f, _ in DERIVED_CHECKS], axis=-1)
    truth_d = np.stack([f(truth) for _, f, _ in DERIVED_CHECKS], axis=-1)
    low = np.array([r[0] for _, _, r in DERIVED_CHECKS])
    high = np.array([r[1] for _, _, r in DERIVED_CHECKS])
    return names, samples_d, truth_d, low, high


# ------------------------------------------------------------------ sampling
def posterior_chunk_task(flow_path: str, x: np.ndarray, theta_true: np.ndarray, n_samples: int, seed: int,
                         max_time: float | None) -> dict:
    """Samples and log densities of a chunk of test galaxies (runs on a worker).

    Returns
    -------
    dict
        ``samples`` (n, L, d), ``complete`` (n,), ``logp_samples`` (n, L),
        ``logp_true`` (n,), and ``sample_wall_s`` / ``sample_cpu_s`` /
        ``logp_cpu_s`` of this chunk.
    """
    from .mcmc_benchmark import load_posterior as _load_posterior

    post = _load_posterior(str(flow_path))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    draw = post.draw(x, n_samples, max_time=max_time, seed=seed)
    wall1, cpu1 = time.perf_counter(), time.process_time()
    n, L, d = draw.samples.shape
    flat = draw.samples.reshape(n * L, d)
    logp = np.full(n * L, np.nan)
    finite = np.all(np.isfinite(flat), axis=1)
    logp[finite] = post.log_prob(flat[finite], np.repeat(x, L, axis=0)[finite])
    logp_true = post.log_prob(theta_true, x)
    return dict(
        samples=draw.samples,
        complete=draw.complete,
        logp_samples=logp.reshape(n, L),
        logp_true=logp_true,
        sample_wall_s=wall1 - wall0,
        sample_cpu_s=cpu1 - cpu0,
        logp_cpu_s=time.process_time() - cpu1,
    )


def sample_test_set(client, flow_path: str, x, theta_true, n_samples: int, seed: int, max_time, chunk_size: int,
                    log=print) -> dict:
    """:func:`posterior_chunk_task` over chunks of the test set, merged (Dask when ``client``)."""
    starts = list(range(0, x.shape[0], chunk_size))
    args = [(x[s : s + chunk_size], theta_true[s : s + chunk_size], seed + k) for k, s in enumerate(starts)]
    wall0 = time.perf_counter()
    if client is None:
        parts = [posterior_chunk_task(flow_path, xc, tc, n_samples, sd, max_time) for xc, tc, sd in args]
    else:
        futures = [
            client.submit(posterior_chunk_task, str(flow_path), xc, tc, n_samples, sd, max_time, pure=False)
            for xc, tc, sd in args
        ]
        parts = client.gather(futures)
    wall = time.perf_counter() - wall0
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("samples", "complete", "logp_samples", "logp_true")}
    for k in ("sample_wall_s", "sample_cpu_s", "logp_cpu_s"):
        out[k] = float(sum(p[k] for p in parts))
    out["wall_s"] = wall
    log(f"sampled {x.shape[0]} test galaxies x {n_samples} samples in {wall:.1f} s wall "
        f"({out['sample_cpu_s']:.1f} CPU-s sampling, {out['logp_cpu_s']:.1f} CPU-s log-densities)")
    return out


def posterior_percentiles(samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, 16th and 84th percentiles per galaxy and parameter ((n, d) each)."""
    q16, q50, q84 = np.percentile(np.asarray(samples, dtype=float), [16.0, 50.0, 84.0], axis=1)
    return q50, q16, q84


def posterior_contraction(samples, low, high, prior_var=None) -> np.ndarray:
    """``1 - mean posterior variance / prior variance`` per parameter (0: prior, 1: exact).

    Parameters
    ----------
    samples : array_like, shape (n, L, d)
    low, high : array_like, shape (d,)
        Box-uniform prior bounds (variance ``(high - low)^2 / 12``).
    prior_var : array_like, shape (d,), optional
        The prior variance, for priors that are not box-uniform.
    """
    var = np.var(np.asarray(samples, dtype=float), axis=1).mean(axis=0)
    if prior_var is None:
        prior_var = (np.asarray(high) - np.asarray(low)) ** 2 / 12.0
    return 1.0 - var / np.asarray(prior_var)


def ppc_pvalues(model, samples, z, flux, flux_sigma, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Posterior predictive p-values of the flux chi2 (Gelman et al. 1996), one per galaxy.

    For ``n_draws`` posterior samples theta_k of each galaxy, replicated
    fluxes ``F(theta_k) + sigma N(0, 1)`` are drawn; the p-value is the
    randomized fraction ``(#{replicated chi2 >= observed chi2} + U) / (n_draws + 1)``,
    both chi2 against ``F(theta_k)``.  Uniform when the observed chi2 is
    exchangeable with the replicated ones (e.g. samples at the truth); near 0
    when the posterior SEDs miss the observations.

    Parameters
    ----------
    model : ForwardModel
    samples : array_like, shape (n, L, d)
    z : array_like, shape (n,)
    flux, flux_sigma : array_like, shape (n, n_band)
        Observed fluxes and errors, nanomaggies.
    n_draws : int
        Posterior samples used per galaxy (the first ``n_draws``).
    rng : numpy.random.Generator
    """
    samples = np.asarray(samples, dtype=float)[:, :n_draws]
    n, k, d = samples.shape
    theta = np.clip(samples.reshape(n * k, d), model.prior.low, model.prior.high)
    model_flux = model.photometry(theta, np.repeat(z, k)).reshape(n, k, -1)
    sigma = np.asarray(flux_sigma, dtype=float)[:, None, :]
    # Masked bands (sigma NaN) count neither in the observed nor in the replicated chi2.
    used = np.isfinite(sigma) & (sigma > 0)
    residual = np.where(used, (model_flux - np.asarray(flux, dtype=float)[:, None, :]) / np.where(used, sigma, 1.0), 0.0)
    observed = np.sum(residual**2, axis=-1)
    replicated = np.sum(np.where(used, rng.standard_normal(model_flux.shape), 0.0) ** 2, axis=-1)
    return (np.sum(replicated >= observed, axis=1) + rng.random(n)) / (k + 1)


def ppc_chi2(model, theta, z, flux, flux_sigma) -> np.ndarray:
    """chi2 of the fluxes of ``theta`` (n, d) at ``z`` against observed fluxes (n, 5)."""
    theta = np.clip(np.asarray(theta, dtype=float), model.prior.low, model.prior.high)
    return photometry_chi2(model.photometry(theta, z), flux, flux_sigma)


# ------------------------------------------------------------- MCMC galaxies
def observations_from_test_set(test: pd.DataFrame, param_names, rows) -> list[GalaxyObservation]:
    """MCMC work items for rows of the simulated test set."""
    out = []
    for r in rows:
        row = test.iloc[int(r)]
        out.append(
            GalaxyObservation(
                galaxy_id=int(row["sim_id"]),
                flux=tuple(float(row[c]) for c in FLUX_COLUMNS),
                flux_sigma=tuple(float(row[c]) for c in FLUX_SIGMA_COLUMNS),
                z=float(row[REDSHIFT_COLUMN]),
                x=tuple(float(row[c]) for c in PHOTOMETRY_X_COLUMNS),
                theta_true=tuple(float(row[p]) for p in param_names),
            )
        )
    return out


def training_z_range(meta: dict) -> tuple[float, float] | None:
    """The redshift range a checkpoint was trained on (its metadata), or None when unrecorded."""
    z_train = (meta.get("training_set") or {}).get("redshift") or {}
    return (z_train["low"], z_train["high"]) if "low" in z_train else None


def catalog_observations(path, n: int, rng: np.random.Generator, z_range) -> list[GalaxyObservation]:
    """``n`` random galaxies with usable photometry from survey catalog file(s) (read with :func:`read_catalog`)."""
    from ..infer.quality import check_photometry
    from ..io.catalog import FLUX_COLUMNS as CAT_FLUX
    from ..io.catalog import FLUX_IVAR_COLUMNS as CAT_IVAR
    from ..io.catalog import read_catalog
    from ..units import ivar_to_sigma

    df = read_catalog(path)
    flux = df[list(CAT_FLUX)].to_numpy(dtype=float)
    ivar = df[list(CAT_IVAR)].to_numpy(dtype=float)
    z = df["z"].to_numpy(dtype=float)
    checked = check_photometry(flux, ivar, z, z_range=z_range)
    good = np.flatnonzero(~checked.bad)
    if good.size < n:
        raise ConfigError(f"{path}: only {good.size} galaxies with usable photometry, {n} requested")
    pick = np.sort(rng.choice(good, size=n, replace=False))
    sigma = ivar_to_sigma(ivar)
    return [
        GalaxyObservation(
            galaxy_id=int(df["id"].iloc[i]),
            flux=tuple(flux[i].tolist()),
            flux_sigma=tuple(sigma[i].tolist()),
            z=float(z[i]),
            x=tuple(checked.x[i].tolist()),
        )
        for i in pick
    ]


# ------------------------------------------------------------------ writing
def write_parquet(df: pd.DataFrame, path: Path, metadata: dict | None = None) -> Path:
    """Write a frame as Parquet atomically (temporary file + rename)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(Path(path), sink.getvalue().to_pybytes())
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(Path(path), text.encode())
    return Path(path)


def _fmt(v, spec=".3g") -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "-" if not np.isfinite(v) else format(float(v), spec)
    return str(v)


def markdown_table(df: pd.DataFrame, columns, formats=None) -> str:
    """A pipe table of ``columns`` of ``df`` (``formats``: column -> format spec)."""
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], formats.get(c, ".3g")) for c in columns) + " |")
    return "\n".join(lines)


def speedup_table(mcmc: pd.DataFrame) -> pd.DataFrame:
    """The MCMC vs ANPE cost table, one row per galaxy plus the median."""
    cols = ["galaxy_id", "n_walkers", "n_iter", "n_model_evals", "evals_per_s", "evals_per_cpu_s", "mcmc_wall_s", "mcmc_cpu_s",
            "extrapolated_sedflow_wall_s", "anpe_samples", "anpe_wall_s", "anpe_cpu_s", "speedup_cpu", "speedup_wall"]
    table = mcmc[cols].astype({"galaxy_id": str})
    med = table.drop(columns="galaxy_id").median().to_frame().T.assign(galaxy_id="median")
    return pd.concat([table, med[cols]], ignore_index=True)


def _strata_digest(strata: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (var, b), sub in strata.groupby(["stratum", "bin"], sort=False):
        params = sub[~sub["parameter"].str.startswith("joint_")]
        failed = params.loc[~params["passed"], "parameter"].tolist()
        worst = params.loc[params["max_coverage_error"].idxmax()]
        rows.append(dict(stratum=var, bin=f"[{sub['low'].iloc[0]:.3g}, {sub['high'].iloc[0]:.3g}]",
                         n=int(sub["n"].iloc[0]), passed=f"{len(params) - len(failed)}/{len(params)}",
                         failed=", ".join(failed) or "-",
                         worst=f"{worst['parameter']} ({worst['max_coverage_error']:.3f})"))
    return pd.DataFrame(rows)


#: Verdict thresholds.  Calibration alone passes a flow that returns the prior; a flow must also
#: be informative -- its mass posterior (the first parameter, which every band constrains) must
#: contract -- and its posterior SEDs must fit the data.  Measured (docs/validation.md): shipped
#: flows 0.97 and a PPC mean p of 0.10-0.13; a 6-epoch flow on 2,000 simulations 0.89 and 0.025.
MIN_MASS_CONTRACTION = 0.93
MIN_MEAN_PPC_P = 0.05
#: Fraction of parameters (and derived properties) that must pass SBC and coverage.
MIN_CALIBRATED_FRACTION = 0.8


def verdict(calib: pd.DataFrame, ppc: dict) -> dict:
    """Usable or not, and why: calibration, informativeness and the fit of the posterior SEDs.

    Returns
    -------
    dict
        ``usable`` (bool), ``problems`` (list of str) and ``text`` (one line).
    """
    params = calib[~calib["parameter"].str.startswith("joint_")]
    joint = calib[calib["parameter"].str.startswith("joint_")]
    n_pass, n = int(params["passed"].sum()), len(params)
    failed = params.loc[~params["passed"].astype(bool), "parameter"].tolist()
    mass = float(params["contraction"].iloc[0]) if len(params) else float("nan")
    mean_p = float(ppc.get("mean_p_ppc", float("nan")))
    problems = []
    if n_pass < MIN_CALIBRATED_FRACTION * n:
        problems.append(f"miscalibrated: {n - n_pass}/{n} quantities fail SBC/coverage")
    if len(joint) and not joint["passed"].astype(bool).all():
        problems.append("joint HPD/TARP coverage fails")
    if not mass >= MIN_MASS_CONTRACTION:
        problems.append(f"uninformative: {params['parameter'].iloc[0]} contraction {mass:.2f} < {MIN_MASS_CONTRACTION}")
    if not mean_p >= MIN_MEAN_PPC_P:
        problems.append(f"posterior SEDs misfit: mean PPC p {mean_p:.3f} < {MIN_MEAN_PPC_P}")
    calibrated = f"calibrated {n_pass}/{n}" + (f" ({', '.join(failed)} fail)" if failed else "")
    detail = (f"{calibrated}; {params['parameter'].iloc[0] if len(params) else 'mass'} contraction {mass:.2f}; "
              f"PPC mean p {mean_p:.3f}, {ppc.get('frac_p_ppc_below_0_01', float('nan')):.3f} of galaxies below 0.01; "
              f"joint HPD/TARP {'pass' if len(joint) and joint['passed'].astype(bool).all() else 'fail'}")
    usable = not problems
    text = ("USABLE: " + detail) if usable else ("NOT USABLE (" + "; ".join(problems) + "): " + detail)
    return {"usable": usable, "problems": problems, "text": text}


def render_summary(info: dict, calib: pd.DataFrame, strata: pd.DataFrame, ppc: dict, mcmc: pd.DataFrame | None,
                   comparison: pd.DataFrame | None) -> str:
    """The markdown summary of a validation run."""
    th = info["thresholds"]
    n_params = int((~calib["parameter"].str.startswith("joint_")).sum())
    n_pass = int(calib.loc[~calib["parameter"].str.startswith("joint_"), "passed"].sum())
    out = [
        f"# Validation of `{info['flow']}`",
        "",
        (f"- model `{info['model']}`, flow `{info['flow_kind']}`, {info['n_params']} parameters; "
        f"x = {', '.join(info['x_columns'])}"),
        (f"- test set: {info['n_test']} fresh simulations (seed {info['seed']}, redshifts {info['redshift']}), "
        f"{info['n_samples']} posterior samples each; {info['n_used']} used "
        f"({info['n_test'] - info['n_used']} dropped: incomplete sampling)"
        + (f"; observed in {', '.join(info['observed_bands'])} only" if info.get("observed_bands") else "")),
        (f"- amortized sampling: {info['anpe_wall_s']:.1f} s wall, {info['anpe_cpu_s_per_galaxy'] * 1e3:.1f} CPU-ms per "
        f"galaxy for {info['n_samples']} samples (batched, {info['workers']})"),
        f"- **Verdict: {verdict(calib, ppc)['text']}**",
        (f"- **{n_pass}/{n_params} parameters pass** (p >= {th['p_value']:g} for the chi2 test of the "
        f"{th['n_bins']}-bin rank histogram, the KS test of the fractional ranks and the KS test of the central "
        "credibility levels; see docs/validation.md)"),
        "",
        "## Calibration per parameter",
        "",
        markdown_table(calib, ["parameter", "n", "contraction", "p_chi2", "p_ks", "p_ks_width", "max_coverage_error", "mean_u",
                               "mean_width_level", "passed", "verdict"]),
        "",
        ("`mean_u` > 0.5: posterior below the truth; `mean_width_level` > 0.5: over-confident (too narrow); "
        "`contraction`: 1 - posterior/prior variance (0: the posterior is the prior, which is calibrated too)."),
        "Plots: `rank_histograms.png`, `pp_plot.png`, `coverage.png`, `true_vs_recovered.png`.",
        "",
        "## Calibration by redshift, magnitude, S/N (and number of bands)",
        "",
        markdown_table(_strata_digest(strata), ["stratum", "bin", "n", "passed", "failed", "worst"]),
        "",
        "Full table: `strata.parquet`; plot: `strata.png` (largest coverage error per bin).",
        "",
        "## Posterior predictive check",
        "",
        (f"chi2 over {ppc['dof']} bands of the posterior-median SED against the observed fluxes: median "
        f"{ppc['median_chi2_median_sed']:.2f} (true SED: {ppc['median_chi2_true_sed']:.2f}; chi2({ppc['dof']}) median "
        f"{stats.chi2.median(ppc['dof']):.2f}); fraction above the chi2({ppc['dof']}) 99th percentile: "
        f"{ppc['frac_above_p99_median_sed']:.3f} (true SED: {ppc['frac_above_p99_true_sed']:.3f}). Plot: `ppc_chi2.png`. "
        "The median SED combines per-parameter medians and misfits when parameters are degenerate (e.g. SFH "
        "fractions that photometry does not constrain)."),
        "",
        (f"Posterior predictive p-value of the chi2 ({ppc['ppc_draws']} posterior draws per galaxy, replicated "
        f"fluxes with the observed errors): mean {ppc['mean_p_ppc']:.3f}, median {ppc['median_p_ppc']:.3f}, "
        f"fraction of galaxies with p < 0.01: {ppc['frac_p_ppc_below_0_01']:.3f}. Over a test set the mean is 0.5 "
        "for the exact posterior; lower means the posterior's SEDs fit the data worse than the truth's."),
    ]
    if mcmc is not None and len(mcmc):
        cfg = info["mcmc_config"]
        out += [
            "",
            "## MCMC comparison",
            "",
            (f"{cfg['sampler']}: {cfg['n_walkers']} walkers x {cfg['n_iter']} iterations, {cfg['burn_in']} burn-in "
            f"(SEDflow: 30 x 10,000, 2,000), same forward model, prior, Gaussian flux likelihood; one task per "
            f"galaxy ({info['workers']}), amortized posterior ({info['anpe_samples']} samples) timed in the same task. "
            f"Galaxies: {info['mcmc_source']}."),
            "",
            markdown_table(mcmc, ["galaxy_id", "max_rhat", "max_tau", "iter_per_tau", "converged",
                                  "max_abs_delta_median_sigma", "min_width_ratio", "max_width_ratio", "min_ks_p"]),
            "",
            "Per parameter (median over galaxies) of ANPE vs MCMC: (median difference / MCMC sigma, width ratio):",
            "",
            markdown_table(
                comparison.groupby("parameter", sort=False)[["delta_median_sigma", "width_ratio", "ks_p"]]
                .median().reset_index(),
                ["parameter", "delta_median_sigma", "width_ratio", "ks_p"],
            ),
            "",
            "### Speed-up (measured side by side on the same worker)",
            "",
            markdown_table(speedup_table(mcmc), ["galaxy_id", "n_walkers", "n_iter", "n_model_evals", "evals_per_s",
                                                 "evals_per_cpu_s", "mcmc_wall_s", "mcmc_cpu_s", "extrapolated_sedflow_wall_s",
                                                 "anpe_samples", "anpe_wall_s", "anpe_cpu_s", "speedup_cpu"]),
            "",
            "`extrapolated_sedflow_wall_s`: this run's cost per walker-step scaled to 30 walkers x 10,000 iterations.",
            "Corner plots: `corner_<galaxy_id>.png` (black MCMC, blue ANPE, red truth).",
        ]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ the run
def run_validation(config: ValidationConfig, client=None, log=print) -> dict:
    """Simulate, sample, diagnose and write the report (see the module docstring).

    Parameters
    ----------
    config : ValidationConfig
    client : distributed.Client, optional
        Sampling chunks and MCMC galaxies run on its workers; None runs
        everything in this process.
    log : callable

    Returns
    -------
    dict
        The content of ``validation.json``.
    """
    from ..infer import Posterior
    from ..models import get_model
    from . import plots

    post = Posterior.load(config.flow)
    meta = post.metadata
    masked = post.band_masked
    if not masked and tuple(post.x_columns) != tuple(PHOTOMETRY_X_COLUMNS):
        raise ConfigError(f"{config.flow}: run_validate handles photometric checkpoints (x = {list(PHOTOMETRY_X_COLUMNS)} "
                          "or the band-masked layout)")
    if config.observed_bands and not masked:
        raise ConfigError(f"{config.flow}: --observed-bands needs a band-masked checkpoint")
    if masked and (config.mcmc or config.noise_model):
        raise ConfigError(f"{config.flow}: band-masked checkpoints draw their test noise from the checkpoint; "
                          "--noise-model and the MCMC comparison are not available for them")
    model = get_model(post.model_name, **(meta["model"].get("options") or {}))
    names = list(post.param_names)
    if names != list(model.param_names):
        raise ConfigError(f"{config.flow}: parameters {names} differ from model {model.name!r} {list(model.param_names)}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    train_seed = (meta.get("training_set") or {}).get("seed")
    seed = config.seed if config.seed is not None else int(train_seed or 0) + 1
    streams = validation_streams(seed)
    redshift = redshift_from_metadata((meta.get("training_set") or {}).get("redshift"), model.z_max, config.z_range, log)
    t0 = time.perf_counter()
    if masked:
        from ..observe.survey_noise import photometric_noise_model

        noise = photometric_noise_model(meta["photometric_noise"])
        if config.observed_bands:
            noise = noise.observing(observed_pattern(model.bands, config.observed_bands))
            log(f"test galaxies observed in {', '.join(config.observed_bands)} only")
        test, x = simulate_masked_test_set(model, noise, redshift, config.n_test, streams)
    else:
        noise = noise_for_checkpoint(meta, config.noise_model, log)
        test = simulate_test_set(model, noise, redshift, config.n_test, streams)
        x = test[list(PHOTOMETRY_X_COLUMNS)].to_numpy(dtype=np.float32)
    log(f"simulated {config.n_test} test galaxies ({model.name}, seed {seed}) in {time.perf_counter() - t0:.1f} s")
    theta = test[names].to_numpy(dtype=float)
    drawn = sample_test_set(client, config.flow, x, theta, config.n_samples, seed, config.max_time,
                            config.chunk_size, log)

    ok = drawn["complete"] & np.isfinite(drawn["logp_true"]) & np.all(np.isfinite(drawn["logp_samples"]), axis=1)
    used = np.flatnonzero(ok)
    if used.size < 5 * config.thresholds.n_bins:
        raise SedscaleError(f"only {used.size} of {config.n_test} test galaxies were sampled completely")
    samples = drawn["samples"][used].astype(float)
    sub = test.iloc[used].reset_index(drop=True)
    z_used = sub[REDSHIFT_COLUMN].to_numpy(dtype=float)
    # Parameters, then derived log M* and log SFR (ranks need only samples and truths).
    d_names, d_samples, d_truth, d_low, d_high = derived_for_calibration(model, samples, theta[used], z_used)
    cal = compute_calibration(np.concatenate([samples, d_samples], axis=-1),
                              np.concatenate([theta[used], d_truth], axis=-1), names + d_names,
                              np.concatenate([model.prior.low, d_low]), np.concatenate([model.prior.high, d_high]),
                              streams[3], drawn["logp_samples"][used], drawn["logp_true"][used])
    calib = summarize_calibration(cal, config.thresholds)
    # Calibration alone does not tell an informative posterior from the prior (both pass).
    prior_var = None
    if not getattr(model.prior, "is_uniform", True):
        # The variance of the prior itself, at the test set's redshifts.
        z_prior = np.random.default_rng([seed, 3]).choice(z_used, 20000)
        prior_var = model.prior.sample(20000, np.random.default_rng([seed, 4]), z_prior).var(axis=0)
    contraction = posterior_contraction(samples, model.prior.low, model.prior.high, prior_var)
    calib.insert(2, "contraction", calib["parameter"].map(dict(zip(names, contraction))))
    bands = model.bands
    sb = strata_band(sub, bands.bands if masked else (STRATA_BAND,))
    strata_vars = {
        "z": (sub[REDSHIFT_COLUMN].to_numpy(), Z_STRATA) if masked else sub[REDSHIFT_COLUMN].to_numpy(),
        f"mag_{sb}": sub[f"mag_{sb}"].to_numpy(),
        f"snr_{sb}": (sub[f"flux_{sb}"] / sub[f"flux_sigma_{sb}"]).to_numpy(),
    }
    if masked:
        strata_vars["n_bands"] = (sub["n_bands"].to_numpy(), np.arange(2.5, len(bands) + 1))
        # Bands missing by design (GALEX in NSA rows): calibration with and without each.
        for b, p_missing in zip(bands.bands, noise.p_missing or ()):
            if p_missing > 0:
                strata_vars[f"observed_{b}"] = (sub[f"observed_{b}"].to_numpy(), np.array([-0.5, 0.5, 1.5]))
    strata = stratified_summary(cal, strata_vars, config.strata_bins, config.thresholds)

    med, q16, q84 = posterior_percentiles(samples)
    flux = sub[list(bands.columns("flux_"))].to_numpy(dtype=float)
    sigma = sub[list(bands.columns("flux_sigma_"))].to_numpy(dtype=float)
    z = sub[REDSHIFT_COLUMN].to_numpy(dtype=float)
    chi2_med = ppc_chi2(model, med, z, flux, sigma)
    chi2_true = ppc_chi2(model, theta[used], z, flux, sigma)
    dof = int(np.round(np.mean(np.sum(np.isfinite(sigma), axis=1))))
    p99 = stats.chi2.ppf(0.99, dof)
    p_ppc = ppc_pvalues(model, samples, z, flux, sigma, PPC_DRAWS, np.random.default_rng([seed, 2]))
    ppc = dict(dof=dof, median_chi2_median_sed=float(np.median(chi2_med)), median_chi2_true_sed=float(np.median(chi2_true)),
               frac_above_p99_median_sed=float(np.mean(chi2_med > p99)), frac_above_p99_true_sed=float(np.mean(chi2_true > p99)),
               ppc_draws=PPC_DRAWS, mean_p_ppc=float(np.mean(p_ppc)), median_p_ppc=float(np.median(p_ppc)),
               frac_p_ppc_below_0_01=float(np.mean(p_ppc < 0.01)))

    per_sim = sub[["sim_id", REDSHIFT_COLUMN]].copy()
    for var, values in strata_vars.items():
        if var != "z":
            per_sim[var] = values[0] if isinstance(values, tuple) else values
    for j, p in enumerate(names):
        per_sim[f"true_{p}"] = theta[used, j]
        per_sim[f"median_{p}"] = med[:, j]
        per_sim[f"q16_{p}"] = q16[:, j]
        per_sim[f"q84_{p}"] = q84[:, j]
    per_sim = pd.concat([per_sim, cal.to_frame()], axis=1)
    per_sim["chi2_ppc"] = chi2_med
    per_sim["chi2_true"] = chi2_true
    per_sim["p_ppc"] = p_ppc

    labels = [p.label or p.name for p in model.prior.parameters]
    plots.plot_rank_histograms(cal.u, names, out / "rank_histograms.png", config.thresholds.n_bins,
                               config.thresholds.band_level, labels)
    plots.plot_pp(cal.u, names, out / "pp_plot.png", labels)
    plots.plot_coverage(cal.u, names, out / "coverage.png", cal.hpd, cal.tarp, labels)
    plots.plot_true_vs_recovered(theta[used], med, q16, q84, names, out / "true_vs_recovered.png", labels)
    plots.plot_ppc(chi2_med, out / "ppc_chi2.png", dof, chi2_true)
    plots.plot_strata(strata, out / "strata.png")

    info = dict(
        flow=str(config.flow), model=model.name, flow_kind=meta.get("flow", {}).get("kind", "?"), n_params=len(names),
        x_columns=list(post.x_columns), n_test=config.n_test, n_used=int(used.size), n_samples=config.n_samples,
        seed=seed, redshift=redshift.to_dict() if hasattr(redshift, "to_dict") else str(redshift),
        thresholds=asdict(config.thresholds), observed_bands=list(config.observed_bands or []) or None,
        anpe_wall_s=drawn["wall_s"], anpe_sample_cpu_s=drawn["sample_cpu_s"], anpe_logp_cpu_s=drawn["logp_cpu_s"],
        anpe_cpu_s_per_galaxy=drawn["sample_cpu_s"] / config.n_test,
        workers=_describe_workers(client),
        ppc=ppc, passed=calib.set_index("parameter")["passed"].to_dict(),
        anpe_samples=config.anpe_samples, mcmc_config=config.mcmc_config.to_dict(),
        verdict=verdict(calib, ppc),
    )

    # Calibration results go out before the MCMC, which may run for hours.
    write_parquet(per_sim, out / "ranks.parquet")
    write_parquet(coverage_table(cal), out / "coverage.parquet")
    write_parquet(calib, out / "calibration.parquet")
    write_parquet(strata, out / "strata.parquet")
    _write_summary(out, info, calib, strata, ppc, None, None)
    if config.mcmc:
        rng = np.random.default_rng([seed, 1])
        if config.catalog:
            galaxies = catalog_observations(config.catalog, config.mcmc, rng, training_z_range(meta))
        else:
            rows = np.sort(rng.choice(used.size, size=min(config.mcmc, used.size), replace=False))
            galaxies = observations_from_test_set(sub, names, rows)
        info["mcmc_source"] = f"catalog {config.catalog}" if config.catalog else "test set"
        log(f"MCMC for {len(galaxies)} galaxies: {config.mcmc_config}")
        results = run_mcmc_benchmark(client, galaxies, config.flow, config.mcmc_config, config.anpe_samples, log)
        mcmc_df = pd.DataFrame([r.summary for r in results])
        comparison = pd.concat([r.comparison.assign(galaxy_id=r.galaxy_id) for r in results], ignore_index=True)
        thinned = pd.concat(
            [pd.DataFrame(r.mcmc_samples, columns=names).assign(galaxy_id=r.galaxy_id) for r in results],
            ignore_index=True,
        )
        for g, r in zip(galaxies[: config.n_corner], results):
            plots.plot_corner(r.mcmc_plot_samples, r.anpe_samples, names, out / f"corner_{r.galaxy_id}.png",
                              truth=g.theta_true, labels=labels)
        write_parquet(mcmc_df, out / "mcmc.parquet")
        write_parquet(comparison, out / "mcmc_comparison.parquet")
        write_parquet(thinned, out / "mcmc_samples.parquet")
        info["mcmc"] = mcmc_df.to_dict(orient="list")
        _write_summary(out, info, calib, strata, ppc, mcmc_df, comparison)
    log(f"report written to {out}/summary.md")
    log(f"verdict: {info['verdict']['text']}")
    return info


def _write_summary(out: Path, info, calib, strata, ppc, mcmc_df, comparison) -> None:
    write_text(out / "summary.md", render_summary(info, calib, strata, ppc, mcmc_df, comparison))
    write_text(out / "validation.json", json.dumps(info, indent=1, default=_json_default) + "\n")


def _describe_workers(client) -> str:
    if client is None:
        return "in process"
    n = len(client.scheduler_info()["workers"])
    return f"{n} Dask worker{'s' if n != 1 else ''}"


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
