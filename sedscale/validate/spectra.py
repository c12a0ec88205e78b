"""Validation of spectral flows (DIGS): calibration and accuracy on fresh simulated spectra, flows side by side.

:func:`run_spectral_validation` simulates one test set of noiseless
``delayed_tau`` spectra with a seed the training did not use, draws noise
and coverage once with the chosen :class:`~sedscale.observe.spectral_noise.SpectralNoiseModel`
(by default the first checkpoint's), and gives every flow the *same* noisy
spectra, so that the flows are compared on identical data.  Per flow and
parameter it reports the SBC/coverage diagnostics of
:mod:`sedscale.validate.calibration` (DIGS found mass, dust and
metallicity over-dispersed, i.e. under-confident) and the accuracy of the
posterior median: RMS and NMAD of (median - truth) for the parameters and
for the derived living stellar mass ``log_mstar`` (DIGS: 0.17 dex in
log M*, 0.26 dex in log Z).

``bin/run_validate --flow CKPT`` calls it for a spectral checkpoint;
``--compare LABEL=CKPT`` adds flows to the comparison.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, SedscaleError
from ..observe.layout import SPECTRUM_X_COLUMNS
from ..observe.spectral_noise import spectral_noise_model
from .calibration import CalibrationThresholds, compute_calibration, stratified_summary, summarize_calibration
from .diagnostics import posterior_contraction, posterior_percentiles, sample_test_set
from .render import markdown_table, write_parquet, write_text

#: NMAD: 1.4826 x median absolute deviation (= sigma for a Gaussian).
NMAD_SCALE = 1.4826


#: S/N per element (median over the normalization window) bins of the stratified calibration.
SNR_EDGES = np.array([0.0, 10.0, 30.0, 100.0, 1e4])


def simulate_spectral_test_set(model, n: int, seed: int, noise, redshift=None, sigma_star_max: float | None = None) -> dict:
    """Fresh prior draws, their noiseless spectra and one noisy, masked realization.

    Parameters
    ----------
    model : ForwardModel
    n, seed : int
    noise : SpectralNoiseModel
    redshift : UniformRedshift or SurveyRedshift, optional
        Redshift distribution (default U(0.01, 0.06), DIGS); drawn before
        the parameters, whose prior may depend on z.
    sigma_star_max : float, optional
        Stellar velocity dispersions drawn U(0, max) km/s, as the training
        set (None: the DIGS 350 km/s broadening).

    Returns
    -------
    dict
        ``theta`` (n, d), ``z`` (n,), ``spec_true`` (n, 138) in Lsun/A,
        ``x`` (n, 277) flow inputs, ``valid`` (n,), ``log_mstar`` (n,),
        ``snr`` (n,): median S/N per element in the normalization window.
    """
    from ..observe.layout import spectrum_x
    from ..simulate.config import model_spectra
    from ..simulate.redshift import UniformRedshift

    theta_rng, z_rng, noise_rng = (np.random.default_rng(c) for c in np.random.SeedSequence(seed).spawn(3))
    z = (redshift or UniformRedshift(0.01, 0.06)).sample(n, z_rng)
    theta = model.prior.sample(n, theta_rng, z)
    sigma_star = (None if sigma_star_max is None
                  else np.random.default_rng([seed, 17]).uniform(0.0, sigma_star_max, size=n))
    spec = model_spectra(model, theta, z, sigma_star)
    noisy = noise.apply(spec, noise_rng)
    x, valid = spectrum_x(noisy.flux, noisy.sigma, noisy.good)
    return {"theta": theta, "z": z, "spec_true": spec, "x": x, "valid": valid,
            "log_mstar": model.derived(theta, z)["log_mstar"], "snr": window_snr(noisy)}


def window_snr(noisy) -> np.ndarray:
    """Median S/N per observed element in the normalization window (n,); NaN without one."""
    from ..observe.layout import normalization_window
    from ..observe.spectra import DIGS_WAVELENGTH

    window = normalization_window(DIGS_WAVELENGTH)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(noisy.good[:, window], np.abs(noisy.flux[:, window]) / noisy.sigma[:, window], np.nan)
    out = np.full(snr.shape[0], np.nan)
    has = np.isfinite(snr).any(axis=1)
    out[has] = np.nanmedian(snr[has], axis=1)
    return out


def accuracy(median: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bias (median of median - truth), RMS and NMAD per column."""
    d = median - truth
    bias = np.median(d, axis=0)
    rms = np.sqrt(np.mean(d**2, axis=0))
    nmad = NMAD_SCALE * np.median(np.abs(d - bias), axis=0)
    return bias, rms, nmad


def _validate_flow(label: str, flow: str, test: dict, names, model, n_samples: int, seed: int, client, max_time,
                   thresholds, log) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    from ..infer import Posterior
    from ..infer.spectra import flow_inputs
    from ..infer.summaries import clip_to_prior, derived_quantities
    from ..train.flows import learned_theta

    post = Posterior.load(flow, x_columns=SPECTRUM_X_COLUMNS, param_names=names)
    use = np.flatnonzero(test["valid"])
    t0 = time.perf_counter()
    drawn = sample_test_set(client, flow, flow_inputs(post, test["x"][use]), test["theta"][use], n_samples, seed, max_time,
                            200, log)
    ok = drawn["complete"] & np.isfinite(drawn["logp_true"]) & np.all(np.isfinite(drawn["logp_samples"]), axis=1)
    rows = use[ok]
    if rows.size < 5 * thresholds.n_bins:
        raise SedscaleError(f"{label}: only {rows.size} test spectra were sampled completely")
    samples = drawn["samples"][ok].astype(float)
    truth = learned_theta(test["theta"][rows], post.prior.low, post.prior.high, post.metadata["theta_transform"],
                          post.flow.marginals)
    cal = compute_calibration(samples, truth, names, post.prior.low, post.prior.high,
                              np.random.default_rng([seed, 3]), drawn["logp_samples"][ok], drawn["logp_true"][ok])
    calib = summarize_calibration(cal, thresholds)
    z = test["z"][rows]
    strata = stratified_summary(cal, {"snr": (test["snr"][rows], SNR_EDGES), "z": z}, 3, thresholds)
    strata.insert(0, "flow", label)
    med, q16, q84 = posterior_percentiles(samples)
    bias, rms, nmad = accuracy(med, test["theta"][rows])
    contraction = posterior_contraction(samples, post.prior.low, post.prior.high)
    mstar = derived_quantities(model, clip_to_prior(samples[:, :200], post.prior.low, post.prior.high),
                               test["z"][rows])["log_mstar"]
    m_bias, m_rms, m_nmad = accuracy(np.median(mstar, axis=1)[:, None], test["log_mstar"][rows][:, None])
    per_param = calib[~calib["parameter"].str.startswith("joint")].copy()
    for col, values in (("bias", bias), ("rms", rms), ("nmad", nmad), ("contraction", contraction)):
        per_param[col] = per_param["parameter"].map(dict(zip(names, values)))
    mstar_row = {"parameter": "log_mstar (derived)", "bias": m_bias[0], "rms": m_rms[0], "nmad": m_nmad[0]}
    per_param = pd.concat([per_param, pd.DataFrame([mstar_row])], ignore_index=True)
    per_param.insert(0, "flow", label)
    joint = calib[calib["parameter"].str.startswith("joint")].set_index("parameter")
    info = {
        "flow": label, "checkpoint": str(flow), "kind": post.metadata["flow"]["kind"],
        "embedding": post.metadata["flow"].get("embedding"),
        "trained_noise": post.metadata.get("spectral_noise"),
        "n_used": int(rows.size), "n_samples": n_samples,
        "joint_hpd_passed": bool(joint.loc["joint_hpd", "passed"]) if "joint_hpd" in joint.index else None,
        "joint_tarp_passed": bool(joint.loc["joint_tarp", "passed"]),
        "sample_cpu_s_per_spectrum": drawn["sample_cpu_s"] / max(rows.size, 1),
        "wall_s": time.perf_counter() - t0,
    }
    return per_param, strata, info


def run_spectral_validation(flows: dict, out, n_test: int = 1000, n_samples: int = 1000, seed: int | None = None,
                            noise=None, client=None, max_time: float | None = 60.0,
                            thresholds: CalibrationThresholds | None = None, log=print) -> pd.DataFrame:
    """Compare spectral flows on one simulated test set and write ``spectral_validation.md`` / ``.parquet``.

    Parameters
    ----------
    flows : dict of str to path
        Label -> spectral checkpoint (same model and parameters).
    out : path
        Report directory.
    n_test, n_samples : int
        Test spectra and posterior samples per spectrum.
    seed : int, optional
        Test-set seed (default: the first checkpoint's training seed + 1).
    noise : str, dict or SpectralNoiseModel, optional
        Noise of the test spectra (default: the first checkpoint's).
    client : distributed.Client, optional
    max_time : float or None
        Seconds per sampling chunk for redrawing samples outside the prior.

    Returns
    -------
    pandas.DataFrame
        One row per flow and parameter (calibration and accuracy columns).
    """
    from ..infer import Posterior
    from ..models import get_model

    if not flows:
        raise ConfigError("no flows to validate")
    thresholds = thresholds or CalibrationThresholds()
    first = Posterior.load(next(iter(flows.values())))
    meta = first.metadata
    if meta.get("observable") != "spectrum":
        raise ConfigError(f"{first.path} is not a spectral checkpoint")
    model = get_model(first.model_name, **(meta["model"].get("options") or {}))
    names = list(first.param_names)
    noise_model = spectral_noise_model(noise if noise is not None else meta["spectral_noise"])
    seed = int(seed if seed is not None else int((meta.get("training_set") or {}).get("seed") or 0) + 1)
    redshift = training_redshift(meta)
    sigma_star = meta.get("sigma_star_kms")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    test = simulate_spectral_test_set(model, n_test, seed, noise_model, redshift,
                                      float(sigma_star[1]) if sigma_star else None)
    log(f"simulated {n_test} test spectra ({noise_model.describe()}; seed {seed}) in {time.perf_counter() - t0:.1f} s; "
        f"{int(test['valid'].sum())} with a usable normalization")
    tables, strata, infos = [], [], []
    for label, flow in flows.items():
        table, stratum, info = _validate_flow(label, str(flow), test, names, model, n_samples, seed, client,
                                              max_time, thresholds, log)
        tables.append(table)
        strata.append(stratum)
        infos.append(info)
        log(f"{label}: {int(table['passed'].fillna(True).astype(bool).sum()) - 1}/{len(names)} parameters pass SBC")
    result = pd.concat(tables, ignore_index=True)
    write_parquet(result, out / "spectral_validation.parquet")
    strata_table = pd.concat(strata, ignore_index=True)
    write_parquet(strata_table, out / "spectral_strata.parquet")
    header = {"n_test": n_test, "n_samples": n_samples, "seed": seed, "noise": noise_model.to_dict(), "flows": infos,
              "model": model.name, "redshift": redshift.to_dict(), "sigma_star_kms": sigma_star,
              "strata": strata_summary(strata_table)}
    write_text(out / "spectral_validation.json", json.dumps(header, indent=1, default=str) + "\n")
    write_text(out / "spectral_validation.md", render(result, header))
    log(f"report written to {out}/spectral_validation.md")
    return result


def training_redshift(meta: dict):
    """The redshift distribution of a checkpoint's training set (DIGS default U(0.01, 0.06) when unrecorded)."""
    from ..simulate.redshift import SurveyRedshift, UniformRedshift

    redshift = (meta.get("training_set") or {}).get("redshift") or {}
    if isinstance(redshift, str):
        redshift = json.loads(redshift)
    kind = SurveyRedshift if redshift.get("kind") == "survey" else UniformRedshift
    return kind(float(redshift.get("low", 0.01)), float(redshift.get("high", 0.06)))


def strata_summary(strata: pd.DataFrame) -> list[dict]:
    """Per flow, stratum and bin: parameters passing SBC and the failures."""
    rows = []
    for (flow, var, b), g in strata.groupby(["flow", "stratum", "bin"], sort=False):
        params = g[~g["parameter"].str.startswith("joint")]
        rows.append({"flow": flow, "stratum": var, "low": float(g["low"].iloc[0]), "high": float(g["high"].iloc[0]),
                     "n": int(g["n"].iloc[0]), "passed": int(params["passed"].sum()), "of": int(len(params)),
                     "failed": ", ".join(params.loc[~params["passed"].astype(bool), "parameter"])})
    return rows


def render(result: pd.DataFrame, header: dict) -> str:
    """Markdown report of :func:`run_spectral_validation`."""
    lines = [
        "# Spectral flows: calibration and accuracy on one simulated test set",
        "",
        f"{header['n_test']} fresh `{header.get('model', 'delayed_tau')}` spectra (seed {header['seed']}, redshifts "
        f"`{json.dumps(header.get('redshift'))}`, sigma_star {header.get('sigma_star_kms') or 'none'} km/s), "
        f"{header['n_samples']} posterior "
        f"samples each; test noise: `{json.dumps(header['noise'])}`.",
        "",
        "Calibration: `passed` = SBC ranks uniform (chi2 and KS p >= threshold); `mean_width_level` is 0.5 when "
        "calibrated, larger when over-confident, smaller when under-confident (over-dispersed, as DIGS found for "
        "mass, dust and metallicity). Accuracy of the posterior median: bias, RMS and NMAD of (median - truth); "
        "DIGS reported 0.17 dex in log M* and 0.26 dex in log Z.",
        "",
        markdown_table(result, ["flow", "parameter", "passed", "verdict", "mean_width_level", "max_coverage_error",
                                "bias", "rms", "nmad", "contraction"]),
        "",
        "| flow | checkpoint | flow kind | embedding | joint HPD | joint TARP | CPU-s per spectrum |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in header["flows"]:
        lines.append(f"| {f['flow']} | {f['checkpoint']} | {f['kind']} | {f['embedding']} | {f['joint_hpd_passed']} | "
                     f"{f['joint_tarp_passed']} | {f['sample_cpu_s_per_spectrum']:.4f} |")
    lines += ["", "Calibration by S/N per element (median in 4500-6500 A) and by redshift (`spectral_strata.parquet`):",
              "", "| flow | stratum | bin | n | parameters passing | failed |", "|---|---|---|---|---|---|"]
    for r in header.get("strata", []):
        lines.append(f"| {r['flow']} | {r['stratum']} | [{r['low']:.3g}, {r['high']:.3g}] | {r['n']} | "
                     f"{r['passed']}/{r['of']} | {r['failed'] or '-'} |")
    return "\n".join(lines) + "\n"
