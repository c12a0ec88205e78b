"""Calibration diagnostics (sedscale.validate) and bin/run_validate.

The diagnostics are checked on a linear-Gaussian toy whose posterior is
known exactly: the exact posterior must pass, distorted ones must fail with
the right verdict.  The report runs end to end on a tiny checkpoint trained
here (1,000 simulations, 2 epochs), on a real 2-worker LocalCluster, with a
short MCMC on two test galaxies.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from sedscale.errors import ParameterError
from sedscale.validate.calibration import (
    CalibrationThresholds,
    central_levels,
    chi2_uniformity,
    compute_calibration,
    coverage_table,
    expected_coverage,
    fractional_ranks,
    hpd_levels,
    quantile_edges,
    rank_histogram,
    sbc_ranks,
    stratified_summary,
    stratify,
    summarize_calibration,
    tarp_levels,
    uniform_band,
)
from sedscale.validate.toy import LinearGaussianToy, ToyPosterior

N_SIMS, N_SAMPLES = 1000, 200
TOY = LinearGaussianToy(np.array([[1.0, 0.5], [0.2, 1.0], [0.3, -0.4]]), noise_sigma=0.5)
BOX = (np.full(2, -5.0), np.full(2, 5.0))


def toy_calibration(width_scale=1.0, shift=0.0, seed=0):
    """The calibration values of a (distorted) exact posterior on 1000 toy simulations."""
    theta, x = TOY.simulate(N_SIMS, np.random.default_rng(seed))
    post = ToyPosterior(TOY, width_scale, shift, seed=seed + 1)
    samples = post.sample(x, N_SAMPLES)
    cal = compute_calibration(samples, theta, TOY.names, *BOX, np.random.default_rng(seed + 2),
                              post.log_prob(samples, x), post.log_prob(theta, x))
    return cal, x


# ----------------------------------------------------------------- small pieces
def test_sbc_ranks_count_samples_below_truth():
    samples = np.array([[[0.0, 5.0], [1.0, 6.0], [2.0, 7.0]]])  # 1 sim, 3 samples, 2 params
    assert sbc_ranks(samples, [[1.5, 0.0]]).tolist() == [[2, 0]]
    with pytest.raises(ParameterError, match="theta_true"):
        sbc_ranks(samples, [[1.0, 2.0, 3.0]])
    with pytest.raises(ParameterError, match="finite"):
        sbc_ranks(np.full((1, 3, 2), np.nan), [[0.0, 0.0]])
    # A point mass (truth and 60% of the samples at a box edge): ties broken uniformly, not all counted above.
    edge = np.concatenate([np.linspace(0, 0.9, 400), np.ones(600)])[None, :, None].repeat(4000, axis=0)
    ranks = sbc_ranks(edge, np.ones((4000, 1)), np.random.default_rng(1))[:, 0]
    assert ranks.min() >= 400 and ranks.max() <= 1000
    assert stats.kstest((ranks - 400 + np.random.default_rng(2).random(4000)) / 601, "uniform").pvalue > 1e-3
    assert (sbc_ranks(edge[:1], np.ones((1, 1))) == 400).all()


def test_fractional_ranks_are_uniform_for_uniform_integer_ranks():
    rng = np.random.default_rng(0)
    u = fractional_ranks(rng.integers(0, 11, 20000), 10, rng)
    assert 0 < u.min() and u.max() < 1
    assert chi2_uniformity(rank_histogram(u, 20))[1] > 1e-3
    with pytest.raises(ParameterError):
        fractional_ranks([11], 10, rng)


def test_uniform_band_and_chi2():
    lo, hi = uniform_band(1000, 20, 0.99)
    assert lo < 50 < hi and hi - 50 == pytest.approx(50 - lo, abs=2)
    stat, p = chi2_uniformity(np.full(20, 50))
    assert stat == 0 and p == pytest.approx(1.0)


def test_coverage_curve_of_uniform_levels_is_the_diagonal():
    levels = np.linspace(0.0005, 0.9995, 1000)
    alphas = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(expected_coverage(levels, alphas), alphas, atol=1e-3)
    np.testing.assert_allclose(central_levels([0.5, 0.0, 1.0]), [0.0, 1.0, 1.0])


def test_hpd_and_tarp_levels():
    logp = np.array([[0.0, -1.0, -2.0, -3.0]])
    level = hpd_levels(logp, np.array([-1.5]), np.random.default_rng(0))
    assert 2 / 5 <= level[0] < 3 / 5  # two samples are denser than the truth
    samples = np.array([[[0.1], [0.2], [0.9]]])
    tarp = tarp_levels(samples, [[0.5]], [0.0], [1.0], np.random.default_rng(0), references=[[0.0]])
    assert 2 / 4 <= tarp[0] < 3 / 4  # 0.1 and 0.2 are closer to the reference than 0.5


def test_stratify_and_quantile_edges():
    values = np.array([0.0, 1.0, 2.0, 3.0, np.nan, 10.0])
    edges = quantile_edges(values, 2)
    assert edges[0] == 0.0 and edges[-1] == 10.0 and edges.size == 3
    labels = stratify(values, edges)
    assert edges[1] == 2.0 and labels.tolist() == [0, 0, 1, 1, -1, 1]  # bins [0, 2), [2, 10]
    with pytest.raises(ParameterError):
        stratify(values, [1.0])


# --------------------------------------------------------------------- the toy
def test_exact_posterior_passes():
    cal, x = toy_calibration()
    table = summarize_calibration(cal).set_index("parameter")
    assert table["passed"].all(), table
    assert (table["verdict"] == "ok").all()
    assert table.loc[list(TOY.names), "max_coverage_error"].max() < 0.06
    strata = stratified_summary(cal, {"x0": x[:, 0]}, n_bins=2)
    assert strata["passed"].all() and set(strata["bin"]) == {0, 1}


@pytest.mark.parametrize(
    "width_scale, shift, verdict",
    [(0.7, 0.0, "over-confident"), (1.5, 0.0, "under-confident"), (1.0, 0.4, "biased high")],
)
def test_distorted_posteriors_fail(width_scale, shift, verdict):
    cal, _ = toy_calibration(width_scale, shift)
    table = summarize_calibration(cal).set_index("parameter")
    for name in TOY.names:
        assert not table.loc[name, "passed"]
        assert table.loc[name, "verdict"] == verdict
    if shift == 0.0:
        assert not table.loc["joint_hpd", "passed"]
        expected = verdict
        assert table.loc["joint_hpd", "verdict"] == expected
        assert not table.loc["joint_tarp", "passed"]
    cov = coverage_table(cal)
    central = cov[(cov["kind"] == "central") & (cov["alpha"] == 0.5)]["coverage"]
    # A too narrow posterior covers less than its credibility, a too wide one more.
    if width_scale < 1:
        assert np.all(central < 0.45)
    elif width_scale > 1:
        assert np.all(central > 0.55)


def test_thresholds_validation():
    with pytest.raises(ParameterError):
        CalibrationThresholds(p_value=0.0)
    cal, _ = toy_calibration()
    with pytest.raises(ParameterError, match="too few"):
        summarize_calibration(cal.subset(np.arange(10)))


# ------------------------------------------------------------ the full report
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny dirichlet checkpoint (poorly trained: the report must run, not pass)."""
    from sedscale.simulate import SimulationConfig, run_simulation
    from sedscale.train import resolve_config, train

    root = tmp_path_factory.mktemp("validate")
    run_simulation(SimulationConfig("dirichlet", 1000, root / "sims", seed=3, partition_size=1000), None)
    config = resolve_config("default", flow={"num_transforms": 2, "hidden_features": 16}, max_epochs=2)
    train(root / "sims", root / "ckpt", config, progress=False, log=lambda s: None)
    return root / "ckpt"


@pytest.mark.slow
def test_run_validate_report_with_mcmc_on_dask(checkpoint, tmp_path):
    from sedscale.cli.validate import main

    out = tmp_path / "report"
    argv = [
        "--flow", str(checkpoint), "--out", str(out), "--n-test", "100", "--n-samples", "100",
        "--strata-bins", "2", "--mcmc", "2", "--mcmc-walkers", "22", "--mcmc-iter", "30", "--mcmc-burn-in", "10",
        "--mcmc-init", "200", "--anpe-samples", "500", "--corner", "0", "--n-workers", "2",
    ]
    # A 2-epoch flow of 2 x 16 units is not fit for use, and the verdict (and the exit status) say so.
    assert main(argv) == 1
    for name in ("summary.md", "validation.json", "rank_histograms.png", "pp_plot.png", "coverage.png",
                 "true_vs_recovered.png", "ppc_chi2.png", "strata.png", "ranks.parquet", "coverage.parquet",
                 "calibration.parquet", "strata.parquet", "mcmc.parquet", "mcmc_comparison.parquet",
                 "mcmc_samples.parquet"):
        assert (out / name).is_file(), name

    ranks = pq.read_table(out / "ranks.parquet").to_pandas()
    assert len(ranks) == 100 and ranks["sim_id"].is_unique
    for col in ("rank_log_mass", "u_n_dust", "hpd_level", "tarp_level", "chi2_ppc", "p_ppc", "median_log_mass", "mag_r",
                "snr_r"):
        assert col in ranks
    assert ranks["rank_log_mass"].between(0, 100).all()
    assert ranks[["hpd_level", "tarp_level", "p_ppc"]].stack().between(0, 1).all()

    calib = pq.read_table(out / "calibration.parquet").to_pandas()
    assert list(calib["parameter"][:11]) == ["log_mass"] + [f"frac_u{i}" for i in range(1, 7)] + [
        "log_zsol", "tau_bc", "tau_ism", "n_dust"]
    assert {"joint_hpd", "joint_tarp"} <= set(calib["parameter"])
    assert calib["passed"].dtype == bool
    strata = pq.read_table(out / "strata.parquet").to_pandas()
    assert set(strata["stratum"]) == {"z", "mag_r", "snr_r"}

    mcmc = pq.read_table(out / "mcmc.parquet").to_pandas()
    assert len(mcmc) == 2 and set(mcmc["galaxy_id"]) <= set(ranks["sim_id"])
    assert (mcmc["n_model_evals"] > 22 * 30).all()
    assert (mcmc["mcmc_cpu_s"] > 0).all() and (mcmc["anpe_cpu_s"] > 0).all()
    assert (mcmc["speedup_cpu"] > 0).all()
    comparison = pq.read_table(out / "mcmc_comparison.parquet").to_pandas()
    assert len(comparison) == 2 * 11 and comparison["width_ratio"].gt(0).all()

    summary = (out / "summary.md").read_text()
    assert "## Calibration per parameter" in summary and "| log_mass |" in summary
    assert "Speed-up" in summary and "Dask workers" in summary
    info = json.loads((out / "validation.json").read_text())
    assert info["n_test"] == 100 and info["seed"] != 3  # a fresh seed, not the training one
    assert not info["verdict"]["usable"] and "uninformative" in info["verdict"]["text"]
    assert "**Verdict: NOT USABLE (" in summary


def test_run_validate_reports_bad_checkpoint_in_one_line(tmp_path, capsys):
    from sedscale.cli.validate import main

    assert main(["--flow", str(tmp_path / "missing"), "--out", str(tmp_path / "r"), "--cluster", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("run_validate: error:") and err.count("\n") == 1


@pytest.mark.parametrize("use_corner", [True, False])
def test_plot_corner(tmp_path, use_corner):
    from sedscale.validate.plots import plot_corner

    rng = np.random.default_rng(0)
    path = plot_corner(rng.standard_normal((500, 3)), rng.standard_normal((500, 3)) * 1.2, ["a", "b", "c"],
                       tmp_path / "c.png", truth=[0, 0, 0], use_corner=use_corner)
    assert path.stat().st_size > 1000 and not list(tmp_path.glob(".*"))  # no temporary file left


def test_verdict_needs_calibration_information_and_fit():
    from sedscale.validate.diagnostics import verdict

    def calib(contraction, passed):
        names = ["log_mass", "log_zsol", "tau_ism", "joint_hpd", "joint_tarp"]
        return pd.DataFrame({"parameter": names, "contraction": [contraction, 0.3, 0.6, np.nan, np.nan],
                             "passed": [passed, True, True, True, True]})

    good = verdict(calib(0.97, True), {"mean_p_ppc": 0.12, "frac_p_ppc_below_0_01": 0.08})
    assert good["usable"] and good["text"].startswith("USABLE: calibrated 3/3")
    prior_like = verdict(calib(0.40, True), {"mean_p_ppc": 0.12, "frac_p_ppc_below_0_01": 0.08})
    assert not prior_like["usable"] and prior_like["problems"] == ["uninformative: log_mass contraction 0.40 < 0.93"]
    misfit = verdict(calib(0.97, True), {"mean_p_ppc": 0.01, "frac_p_ppc_below_0_01": 0.6})
    assert not misfit["usable"] and "posterior SEDs misfit" in misfit["text"]
    one_off = verdict(calib(0.97, False), {"mean_p_ppc": 0.12, "frac_p_ppc_below_0_01": 0.08})
    assert not one_off["usable"] and "miscalibrated: 1/3" in one_off["text"]


def test_ranks_use_the_parameters_the_flow_learned():
    """A logit flow learns the box position clamped to [1e-6, 1 - 1e-6]: truths are ranked after the same clamp."""
    import torch

    from sedscale.train.flows import LOGIT_EPS, learned_theta, pretransform_theta

    low, high = np.array([0.0, 7.0]), np.array([1.0, 12.5])
    theta = np.array([[1 - 1e-8, 7.0], [0.3, 12.5 - 1e-9], [0.5, 9.0]])
    learned = learned_theta(theta, low, high, "logit")
    np.testing.assert_allclose(learned[0, 0], 1 - LOGIT_EPS, rtol=0, atol=1e-15)
    np.testing.assert_allclose(learned[1, 1], 12.5 - 5.5 * LOGIT_EPS, rtol=0, atol=1e-12)
    assert learned[2].tolist() == [0.5, 9.0] and learned[1, 0] == 0.3
    np.testing.assert_array_equal(learned_theta(theta, low, high, "zscore"), theta)
    # The flow's input (and so its training target and log_prob) cannot tell the two apart.
    t_raw, j_raw = pretransform_theta(torch.tensor(theta), torch.tensor(low), torch.tensor(high), "logit")
    t_learned, j_learned = pretransform_theta(torch.tensor(learned), torch.tensor(low), torch.tensor(high), "logit")
    torch.testing.assert_close(t_raw, t_learned)
    torch.testing.assert_close(j_raw, j_learned)
    # Samples spread around the clamped value (as a flow trained on it draws them): the raw truth sits above all.
    rng = np.random.default_rng(0)
    logit = np.log(LOGIT_EPS) - np.log1p(-LOGIT_EPS)
    samples = 1.0 / (1.0 + np.exp(-(-logit + 0.3 * rng.standard_normal((1, 1000, 1)))))
    assert sbc_ranks(samples, theta[:1, :1])[0, 0] == 1000
    assert 300 < sbc_ranks(samples, learned[:1, :1])[0, 0] < 700
