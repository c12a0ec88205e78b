"""Importance sampling against the exact likelihood: exact on a toy, corrective for a shifted proposal,
honest (flagged) for a hopeless one, and wired into the catalog with the shipped flow."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sedscale.errors import ConfigError
from sedscale.infer.importance import (
    MIN_EFFICIENCY,
    MIN_ESS,
    defensive_proposal,
    importance_sample,
    log_likelihood,
    observed_photometry,
    systematic_resample,
    trusted,
    weigh,
)
from sedscale.observe.layout import masked_photometry_x
from sedscale.units import POGSON

# A 2-d toy with an exact posterior: prior N(0, tau^2) per dimension, one Gaussian measurement y of each.
TAU, SIGMA, Y = 2.0, 0.5, np.array([1.0, -0.7])
POST_VAR = 1 / (1 / TAU**2 + 1 / SIGMA**2)
POST_MEAN = POST_VAR * Y / SIGMA**2
LOG_EVIDENCE = stats.norm.logpdf(Y, 0, np.sqrt(TAU**2 + SIGMA**2)).sum()
BOX = (np.full(2, -20.0), np.full(2, 20.0))


def _toy_weights(shift: float, width: float, n: int = 40_000, defensive: float = 0.1, seed: int = 0):
    """Proposals from (1 - a) N(post + shift sd, (width sd)^2) + a t (the defensive component) and their weights."""
    rng = np.random.default_rng(seed)
    sd = np.sqrt(POST_VAR)
    flow = stats.multivariate_normal(POST_MEAN + shift * sd, (width * sd) ** 2 * np.eye(2))
    n_def = int(defensive * n)
    flow_draws = flow.rvs(n - n_def, random_state=rng)
    law = defensive_proposal(flow_draws, *BOX)
    theta = np.concatenate([flow_draws, law.rvs(n_def, random_state=rng)])
    log_mix = np.logaddexp(np.log1p(-defensive) + flow.logpdf(theta), np.log(defensive) + law.logpdf(theta))
    log_target = stats.norm.logpdf(theta, 0, TAU).sum(axis=1) + stats.norm.logpdf(Y, theta, SIGMA).sum(axis=1)
    return theta, weigh(log_target, log_mix)


def test_a_shifted_proposal_is_corrected_to_the_exact_posterior_and_evidence():
    theta, w = _toy_weights(shift=1.5, width=0.7)
    mean = w.weights @ theta
    sd = np.sqrt(w.weights @ (theta - mean) ** 2)
    np.testing.assert_allclose(mean, POST_MEAN, atol=0.03 * np.sqrt(POST_VAR))
    np.testing.assert_allclose(sd, np.sqrt(POST_VAR), rtol=0.03)
    assert abs(w.log_evidence - LOG_EVIDENCE) < 4 * w.log_evidence_err + 1e-3
    assert MIN_EFFICIENCY < w.efficiency < 0.9
    # The uncorrected proposal was 1.5 sigma off: the weights, not luck, moved it.
    assert np.all(np.abs(theta[: len(theta) * 9 // 10].mean(axis=0) - POST_MEAN) > np.sqrt(POST_VAR))


def test_the_exact_posterior_as_proposal_has_full_efficiency_up_to_the_defensive_share():
    _, w = _toy_weights(shift=0.0, width=1.0)
    assert w.efficiency > 0.85
    assert abs(w.log_evidence - LOG_EVIDENCE) < 4 * w.log_evidence_err + 1e-3


def test_a_hopeless_proposal_has_an_efficiency_below_the_threshold():
    _, w = _toy_weights(shift=15.0, width=0.1)
    assert w.efficiency < MIN_EFFICIENCY


def test_no_finite_weight_gives_zero_efficiency_not_nan():
    w = weigh(np.full(5, -np.inf), np.zeros(5))
    assert (w.ess, w.efficiency, w.log_evidence) == (0.0, 0.0, -np.inf) and not w.weights.any()


def test_systematic_resampling_follows_the_weights():
    rng = np.random.default_rng(3)
    weights = np.array([0.5, 0.0, 0.3, 0.2])
    counts = np.bincount(systematic_resample(weights, 1000, rng), minlength=4)
    np.testing.assert_array_equal(counts, [500, 0, 300, 200])


def test_observed_photometry_inverts_the_flow_inputs():
    rng = np.random.default_rng(1)
    flux = rng.uniform(5, 500, (6, 5))
    sigma = flux * rng.uniform(0.01, 0.3, (6, 5))
    flux[2, 1] = np.nan  # a masked band
    x, used, _ = masked_photometry_x(flux, sigma, np.full(6, 0.05), error_floor=0.02)
    obs = observed_photometry(x, 5, error_floor=0.02)
    np.testing.assert_array_equal(obs.used, used)
    np.testing.assert_allclose(obs.flux[used], flux[used], rtol=1e-5)
    np.testing.assert_allclose(obs.flux_sigma[used], sigma[used], rtol=1e-4)
    np.testing.assert_allclose(obs.z, 0.05, rtol=1e-6)


def test_the_likelihood_is_the_training_noise_models():
    """Gaussian in flux, variance = catalog error^2 + (floor x model flux / 1.0857)^2; zero outside the trained ranges."""
    obs, err = np.array([100.0, 50.0, np.nan]), np.array([5.0, 4.0, np.nan])
    model = np.array([[110.0, 45.0, 1.0], [100.0, 50.0, 1.0], [1e6, 50.0, 1.0]])
    floor = 0.05
    var = err[:2] ** 2 + (floor * model[:, :2] / POGSON) ** 2
    expected = stats.norm.logpdf(obs[:2], model[:, :2], np.sqrt(var)).sum(axis=1)
    got = log_likelihood(model, obs, err, floor)
    np.testing.assert_allclose(got, expected)
    # A model 10^4 times brighter implies a magnitude error (1.0857 x 5 / 1e6) below the trained 0.002...
    ranged = log_likelihood(model, obs, err, 0.0, sigma_range=(0.002, 1.0), mag_range=(5.0, 27.0))
    np.testing.assert_allclose(ranged[:2], log_likelihood(model, obs, err, 0.0)[:2])
    assert ranged[2] == -np.inf
    # ... unless the floor, which x carries in quadrature, lifts it into the trained range.
    assert np.isfinite(log_likelihood(model, obs, err, floor, sigma_range=(0.002, 1.0))[2])


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped default flow, its model and the x of a few mock galaxies."""
    import torch

    from sedscale.infer.catalog_plan import CatalogOptions, resolve_error_floor, training_z_range
    from sedscale.infer.catalog_worker import check_catalog_rows, model_for
    from sedscale.infer.mock import write_mock_nsa
    from sedscale.infer.posterior import Posterior
    from sedscale.io.catalog import read_catalog
    from sedscale.shipped import default_flow

    torch.set_num_threads(1)
    post = Posterior.load(default_flow())
    model = model_for(post)
    path = write_mock_nsa(tmp_path_factory.mktemp("is") / "mock.fits", n=3, seed=4, z_range=(0.02, 0.1), n_defects=0)
    frame = read_catalog(path)
    options = CatalogOptions(error_floor=resolve_error_floor(post, None))
    checked = check_catalog_rows(frame, post, options, training_z_range(post.metadata))
    return post, model, checked.x[~checked.bad], options.error_floor


def test_importance_sampling_with_the_shipped_flow_is_efficient_and_reproducible(shipped):
    post, model, x, floor = shipped
    first = importance_sample(post, model, x, n_samples=200, error_floor=floor, n_proposals=1500, seed=5)
    # DINGO-IS reports a median of ~10% on gravitational waves; one galaxy may fall below the threshold.
    assert np.median(first.efficiency) > MIN_EFFICIENCY and np.all(first.efficiency > 0), first.efficiency
    assert np.isfinite(first.samples).all() and np.all(np.isfinite(first.log_evidence))
    assert np.all(post.prior.in_support(first.samples.reshape(-1, first.samples.shape[-1])))
    again = importance_sample(post, model, x, n_samples=200, error_floor=floor, n_proposals=1500, seed=5)
    np.testing.assert_array_equal(first.samples, again.samples)


def test_a_flow_it_cannot_correct_is_refused(mock_catalog, tmp_path):
    from sedscale.infer.catalog import CatalogOptions, plan_catalog
    from sedscale.shipped import resolve_checkpoint

    with pytest.raises(ConfigError, match="importance sampling of photometric-redshift flows is not implemented"):
        plan_catalog(mock_catalog, resolve_checkpoint("photoz_ugriz"), tmp_path / "a.parquet",
                     CatalogOptions(importance_proposals=100))
    with pytest.raises(ConfigError, match="importance_proposals must be 0"):
        CatalogOptions(importance_proposals=5)


def test_the_fallback_serves_galaxies_outside_the_support_of_a_sedflow_flow(tiny_flow, mock_catalog, tmp_path):
    """--fallback is: only the out-of-support rows are importance-sampled, with the likelihood of their photometry
    given its reported errors; a row passes (ok, method is) exactly when its efficiency passes the threshold."""
    from astropy.table import Table

    from sedscale.infer.catalog import CatalogOptions, plan_catalog, run_catalog

    table = Table.read(mock_catalog)[:40]
    # Errors 30x the NSA's: outside the SEDflow noise model's support, but the photometry still constrains.
    table["NMGY_IVAR"][:12] = table["NMGY_IVAR"][:12] / 900.0
    catalog = tmp_path / "wide_errors.fits"
    table.write(catalog)
    options = CatalogOptions(n_samples=60, partition_size=20, importance_fallback=True, importance_proposals=400)
    run_catalog(plan_catalog(catalog, tiny_flow, tmp_path / "a.parquet", options))
    df = pd.read_parquet(tmp_path / "a.parquet")
    usable = df["status"] != "bad_input"
    sampled = df["is_efficiency"].notna()
    assert usable.all() and sampled.sum() >= 10, df["reason"].tolist()
    assert df["reason"][sampled].str.contains("outside|low_training_density|support").all()
    assert df.loc[~sampled, "method"].eq("anpe").all() and df.loc[~sampled, "is_ess"].isna().all()
    passed = trusted(df["is_efficiency"], df["is_ess"])
    assert ((df["is_efficiency"] >= MIN_EFFICIENCY) & (df["is_ess"] >= MIN_ESS) == passed).all()
    assert (df.loc[sampled & passed, "method"] == "is").all() and (df.loc[sampled & passed, "status"] == "ok").all()
    assert (df.loc[sampled & ~passed, "status"] == "low_is_efficiency").all()
    assert df.loc[sampled & ~passed, "reason"].str.contains(r"low_is_efficiency:[\d.e-]+,ess=\d+").all()
    assert not (df["status"].eq("ok") & df["method"].eq("anpe") & sampled).any()


def test_catalog_rows_carry_the_weights_and_a_low_efficiency_is_never_ok(shipped, tmp_path, monkeypatch):
    """Every usable row gets is_ess/is_efficiency/log_evidence; below the threshold its status says so."""
    from sedscale.infer import importance
    from sedscale.infer.catalog import CatalogOptions, plan_catalog, run_catalog
    from sedscale.infer.mock import write_mock_nsa
    from sedscale.shipped import default_flow

    catalog = write_mock_nsa(tmp_path / "mock_is.fits", n=6, seed=8, z_range=(0.02, 0.1), n_defects=1)
    options = CatalogOptions(n_samples=100, partition_size=3, importance_proposals=600)
    plan = plan_catalog(catalog, default_flow(), tmp_path / "a.parquet", options)
    run_catalog(plan)
    df = pd.read_parquet(tmp_path / "a.parquet")
    usable = df["status"] != "bad_input"
    assert usable.sum() >= 5 and df.loc[usable, "is_efficiency"].gt(0).all()
    assert df.loc[~usable, ["is_ess", "log_evidence"]].isna().all().all()
    # Resumable like the rest: a lost partition is recomputed identically, the other kept.
    (plan.work_dir / "part-000001.parquet").unlink()
    again = run_catalog(plan, resume=True)
    assert (again.partitions_run, again.partitions_skipped) == (1, 1)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), df)
    monkeypatch.setattr(importance, "MIN_EFFICIENCY", 1.01)  # every efficiency is "too low"
    run_catalog(plan_catalog(catalog, default_flow(), tmp_path / "b.parquet", options))
    flagged = pd.read_parquet(tmp_path / "b.parquet")
    assert (flagged.loc[usable, "status"] == "low_is_efficiency").all()
    assert flagged.loc[usable, "reason"].str.contains("low_is_efficiency:").all()


def test_weights_are_trusted_only_with_enough_efficiency_and_effective_samples():
    eff = np.array([0.5, 0.5, 0.005, np.nan])
    ess = np.array([500.0, 50.0, 500.0, np.nan])
    assert trusted(eff, ess).tolist() == [True, False, False, False]
