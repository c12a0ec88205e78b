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

The pieces: :mod:`~sedscale.validate.test_set` (the fresh simulations),
:mod:`~sedscale.validate.diagnostics` (sampling, PPC, verdict),
:mod:`~sedscale.validate.calibration` (SBC, coverage, TARP, strata),
:mod:`~sedscale.validate.render` (tables and files), and
:mod:`~sedscale.validate.mcmc_benchmark` (the MCMC comparison).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ConfigError, SedscaleError
from ..observe.layout import (
    FLUX_COLUMNS,
    FLUX_SIGMA_COLUMNS,
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
from .diagnostics import (
    PPC_DRAWS,
    posterior_contraction,
    posterior_percentiles,
    ppc_chi2,
    ppc_pvalues,
    sample_test_set,
    verdict,
)
from .mcmc import MCMCConfig
from .mcmc_benchmark import GalaxyObservation, run_mcmc_benchmark
from .render import write_parquet, write_summary
from .test_set import (
    STRATA_BAND,
    derived_for_calibration,
    noise_for_checkpoint,
    observed_pattern,
    redshift_from_metadata,
    simulate_masked_test_set,
    simulate_test_set,
    strata_band,
    validation_streams,
    z_strata,
)


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
    redshift_case : {"photometric", "mixed"}
        Photometric-redshift flows: test every galaxy without a given
        redshift (photo-z, the default) or with the training mix of no
        redshift and redshifts with Gaussian uncertainties.
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
    redshift_case: str = "photometric"

    def __post_init__(self):
        if self.redshift_case not in REDSHIFT_CASES:
            raise ConfigError(f"redshift_case must be one of {REDSHIFT_CASES}, got {self.redshift_case!r}")
        for name in ("n_test", "n_samples", "chunk_size", "strata_bins", "anpe_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.mcmc < 0 or self.n_corner < 0:
            raise ConfigError("mcmc and n_corner must be >= 0")
        if self.n_test < 5 * self.thresholds.n_bins:
            raise ConfigError(f"n_test={self.n_test} is too small for a {self.thresholds.n_bins}-bin rank test "
                              f"(>= {5 * self.thresholds.n_bins})")


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


# ------------------------------------------------------------------ the run
#: Test cases of a photometric-redshift flow (:attr:`ValidationConfig.redshift_case`).
REDSHIFT_CASES = ("photometric", "mixed")


def redshift_test_x(z, redshift_input, case: str, rng: np.random.Generator) -> np.ndarray:
    """The redshift inputs (n, 3) of test galaxies at true redshifts ``z``: none given, or the training mix."""
    z = np.asarray(z, dtype=np.float64)
    if case == "photometric":
        return redshift_input.encode(np.full(z.shape, np.nan), np.full(z.shape, np.nan))
    return redshift_input.draw(z, rng)


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
    from ..train.flows import learned_theta
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
    # A photometric-redshift flow's last parameter is z, which is not a model parameter.
    d = post.n_model_params
    if names[:d] != list(model.param_names):
        raise ConfigError(f"{config.flow}: parameters {names} differ from model {model.name!r} {list(model.param_names)}")
    photoz = post.redshift_input is not None
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
        if photoz:
            x = np.concatenate([x[:, :-1], redshift_test_x(test[REDSHIFT_COLUMN], post.redshift_input,
                                                           config.redshift_case, streams[2])], axis=1)
            log(f"redshift inputs of the test galaxies: {config.redshift_case}")
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
    # Every sample's redshift: its own for a photometric-redshift flow, else the galaxy's.
    z_samples = samples[:, :, d] if photoz else np.repeat(z_used[:, None], samples.shape[1], axis=1)
    # Parameters, then derived log M* and log SFR (ranks need only samples and truths).
    d_names, d_samples, d_truth, d_low, d_high = derived_for_calibration(model, samples[:, :, :d], theta[used, :d],
                                                                         z_used, z_samples)
    truth = learned_theta(theta[used], post.prior.low, post.prior.high, meta["theta_transform"], post.flow.marginals)
    cal = compute_calibration(np.concatenate([samples, d_samples], axis=-1),
                              np.concatenate([truth, d_truth], axis=-1), names + d_names,
                              np.concatenate([post.prior.low, d_low]), np.concatenate([post.prior.high, d_high]),
                              streams[3], drawn["logp_samples"][used], drawn["logp_true"][used])
    calib = summarize_calibration(cal, config.thresholds)
    # Calibration alone does not tell an informative posterior from the prior (both pass).
    prior_var = None
    if photoz:
        prior_var = post.prior.sample(20000, np.random.default_rng([seed, 4])).var(axis=0)
    elif not getattr(model.prior, "is_uniform", True):
        # The variance of the prior itself, at the test set's redshifts.
        z_prior = np.random.default_rng([seed, 3]).choice(z_used, 20000)
        prior_var = model.prior.sample(20000, np.random.default_rng([seed, 4]), z_prior).var(axis=0)
    contraction = posterior_contraction(samples, post.prior.low, post.prior.high, prior_var)
    calib.insert(2, "contraction", calib["parameter"].map(dict(zip(names, contraction))))
    bands = model.bands
    sb = strata_band(sub, bands.bands if masked else (STRATA_BAND,))
    # A photo-z flow's z is a parameter: ranks conditioned on its true value are not uniform even for the exact
    # posterior, so its galaxies are binned by their posterior-median z (a function of the data) instead.
    z_key, z_values = ("z_p50", np.median(samples[:, :, d], axis=1)) if photoz else ("z", sub[REDSHIFT_COLUMN].to_numpy())
    strata_vars = {
        z_key: (z_values, z_strata(redshift.high)) if masked else z_values,
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
    chi2_med = ppc_chi2(model, med[:, :d], med[:, d] if photoz else z, flux, sigma)
    chi2_true = ppc_chi2(model, theta[used, :d], z, flux, sigma)
    dof = int(np.round(np.mean(np.sum(np.isfinite(sigma), axis=1))))
    p99 = stats.chi2.ppf(0.99, dof)
    p_ppc = ppc_pvalues(model, samples[:, :, :d], z_samples, flux, sigma, PPC_DRAWS, np.random.default_rng([seed, 2]))
    ppc = dict(dof=dof, median_chi2_median_sed=float(np.median(chi2_med)), median_chi2_true_sed=float(np.median(chi2_true)),
               frac_above_p99_median_sed=float(np.mean(chi2_med > p99)), frac_above_p99_true_sed=float(np.mean(chi2_true > p99)),
               ppc_draws=PPC_DRAWS, mean_p_ppc=float(np.mean(p_ppc)), median_p_ppc=float(np.median(p_ppc)),
               frac_p_ppc_below_0_01=float(np.mean(p_ppc < 0.01)))

    per_sim = sub[["sim_id", REDSHIFT_COLUMN]].copy()
    for var, values in strata_vars.items():
        if var != z_key:
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

    labels = [p.label or p.name for p in post.prior.parameters]
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
        redshift_case=config.redshift_case if photoz else None,
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
    write_summary(out, info, calib, strata, ppc, None, None)
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
        write_summary(out, info, calib, strata, ppc, mcmc_df, comparison)
    log(f"report written to {out}/summary.md")
    log(f"verdict: {info['verdict']['text']}")
    return info


def _describe_workers(client) -> str:
    if client is None:
        return "in process"
    n = len(client.scheduler_info()["workers"])
    return f"{n} Dask worker{'s' if n != 1 else ''}"
