"""MCMC reference posteriors (sedscale.validate.mcmc) with the real dirichlet forward model.

The end-to-end check samples a 2-parameter slice (log_mass, tau_ism; the
other nine held at the truth) of one simulated galaxy with zeus and compares
it with the posterior evaluated on a fine grid.  Chains are short (8 walkers
x 400 iterations) to stay well under a minute.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from sedscale.errors import ConfigError, ParameterError
from sedscale.models import get_model
from sedscale.validate.mcmc import (
    MCMCConfig,
    PhotometryLogPosterior,
    compare_marginals,
    grid_log_posterior,
    grid_moments,
    initial_walkers,
    photometry_chi2,
    run_mcmc,
    split_rhat,
)

THETA = np.array([10.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -0.3, 0.5, 0.4, -0.5])
Z = 0.05
FREE = [0, 9]  # log_mass, tau_ism: correlated through the dust-mass degeneracy


@pytest.fixture(scope="module")
def model():
    return get_model("dirichlet")


@pytest.fixture(scope="module")
def galaxy(model):
    """Noisy ugriz fluxes (nanomaggies) with 5% errors of one galaxy at z = 0.05."""
    flux_true = model.photometry(THETA[None, :], [Z])[0]
    sigma = 0.05 * flux_true
    flux = flux_true + sigma * np.random.default_rng(3).standard_normal(flux_true.size)
    return flux, sigma


def test_photometry_chi2_ignores_unusable_bands():
    model_flux = np.array([[1.0, 2.0, 3.0]])
    flux = np.array([2.0, np.nan, 1.0])
    sigma = np.array([1.0, 1.0, 0.0])
    assert photometry_chi2(model_flux, flux, sigma)[0] == pytest.approx(1.0)


def test_log_posterior_prior_support_and_errors(model, galaxy):
    flux, sigma = galaxy
    lp = PhotometryLogPosterior(model, flux, sigma, Z)
    outside = THETA.copy()
    outside[0] = 13.0  # log_mass prior is [7, 12.5]
    values = lp(np.vstack([THETA, outside]))
    assert np.isfinite(values[0]) and values[1] == -np.inf
    assert lp.n_model_evals == 1  # the out-of-prior point cost no model call
    # At the truth the log likelihood is -chi2/2 of pure noise (5 bands).
    assert -0.5 * 30 < values[0] - model.prior.log_prob(THETA)[0] <= 0
    with pytest.raises(ParameterError, match="no band"):
        PhotometryLogPosterior(model, flux, np.zeros(5), Z)
    with pytest.raises(ParameterError, match="theta_fixed"):
        PhotometryLogPosterior(model, flux, sigma, Z, free=FREE)
    with pytest.raises(ParameterError, match="redshift"):
        PhotometryLogPosterior(model, flux, sigma, 2.0)


def test_split_rhat_detects_disagreeing_chains():
    rng = np.random.default_rng(0)
    good = rng.standard_normal((1000, 8, 2))
    assert np.all(np.abs(split_rhat(good) - 1) < 0.01)
    bad = good.copy()
    bad[:, :4, 0] += 3.0  # half the walkers sit elsewhere in parameter 0
    rhat = split_rhat(bad)
    assert rhat[0] > 1.5 and rhat[1] < 1.01


def test_compare_marginals_measures_shift_and_width():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((4000, 2))
    same = compare_marginals(ref, rng.standard_normal((4000, 2)), ["a", "b"])
    assert np.all(np.abs(same["delta_median_sigma"]) < 0.1)
    assert np.all(np.abs(same["width_ratio"] - 1) < 0.1)
    assert np.all(same["ks_p"] > 1e-3)
    other = rng.standard_normal((4000, 2)) * [1.0, 0.5] + [0.5, 0.0]
    diff = compare_marginals(ref, other, ["a", "b"]).set_index("parameter")
    assert diff.loc["a", "delta_median_sigma"] == pytest.approx(0.5, abs=0.1)
    assert diff.loc["b", "width_ratio"] == pytest.approx(0.5, abs=0.05)
    assert diff["ks_p"].max() < 1e-6


def test_config_validation():
    with pytest.raises(ConfigError, match="burn_in"):
        MCMCConfig(n_iter=100, burn_in=100)
    with pytest.raises(ConfigError, match="sampler"):
        MCMCConfig(sampler="metropolis")
    with pytest.raises(ConfigError, match="n_init"):
        MCMCConfig(n_walkers=30, n_init=10)


def test_too_few_walkers_refused(model, galaxy):
    lp = PhotometryLogPosterior(model, *galaxy, Z)
    with pytest.raises(ConfigError, match="too few"):
        run_mcmc(lp, MCMCConfig(n_walkers=10, n_iter=10, burn_in=0, n_init=100))


@pytest.mark.skipif(importlib.util.find_spec("emcee") is not None, reason="emcee is installed")
def test_emcee_without_package_is_a_clear_error(model, galaxy):
    lp = PhotometryLogPosterior(model, *galaxy, Z, free=FREE, theta_fixed=THETA)
    with pytest.raises(ConfigError, match="emcee"):
        run_mcmc(lp, MCMCConfig(n_walkers=8, n_iter=10, burn_in=0, n_init=50, sampler="emcee"))


def test_initial_walkers_are_the_best_prior_draws(model, galaxy):
    lp = PhotometryLogPosterior(model, *galaxy, Z, free=FREE, theta_fixed=THETA)
    start = initial_walkers(lp, 8, 400, np.random.default_rng(0))
    assert start.shape == (8, 2)
    assert np.all((start >= lp.low) & (start <= lp.high))
    # The same 400 draws, evaluated as one batch as initial_walkers does (a batch of 8 may round
    # differently in the last digits, so the comparison is on the draws, not on re-evaluated values).
    draws = lp.low + (lp.high - lp.low) * np.random.default_rng(0).random((400, 2))
    best = draws[np.argsort(lp(draws))[-8:]]
    np.testing.assert_array_equal(np.sort(start, axis=0), np.sort(best, axis=0))


@pytest.mark.slow
def test_mcmc_converges_and_matches_grid_posterior(model, galaxy):
    flux, sigma = galaxy
    lp = PhotometryLogPosterior(model, flux, sigma, Z, free=FREE, theta_fixed=THETA)
    # Locate the posterior on a coarse grid, then integrate it on a fine one.
    coarse = [np.linspace(9.5, 10.5, 41), np.linspace(0.0, 3.0, 41)]
    mu0, sd0 = grid_moments(coarse, grid_log_posterior(lp, coarse))
    fine = [np.linspace(m - 6 * s, m + 6 * s, 81) for m, s in zip(mu0, np.maximum(sd0, [0.005, 0.01]))]
    fine[1] = np.clip(fine[1], 0.0, 3.0)
    mu, sd = grid_moments(fine, grid_log_posterior(lp, fine))

    result = run_mcmc(lp, MCMCConfig(n_walkers=8, n_iter=400, burn_in=80, n_init=400, seed=1, min_iter_per_tau=20))
    assert result.chain.shape == (320, 8, 2)
    assert result.converged, result.summary()
    assert np.all(result.rhat < 1.05)
    mc_mean, mc_sd = result.samples.mean(axis=0), result.samples.std(axis=0)
    # Monte Carlo error of the mean: sd / sqrt(ESS) ~ 0.05 sd for ESS ~ 500.
    np.testing.assert_array_less(np.abs(mc_mean - mu) / sd, 0.25)
    np.testing.assert_allclose(mc_sd / sd, 1.0, atol=0.2)
    # The truth is recovered within the posterior (5% flux errors).
    assert np.all(np.abs(mu - THETA[FREE]) < 4 * sd)
    s = result.summary()
    assert s["n_model_evals"] > 8 * 400 and s["evals_per_s"] > 0 and s["mcmc_cpu_s"] > 0


@pytest.mark.slow
def test_run_until_converged_stops_on_its_diagnostics(model, galaxy):
    """check_every: chunks until split-R-hat < 1.01 and enough effective samples, starting from given walkers."""
    flux, sigma = galaxy
    lp = PhotometryLogPosterior(model, flux, sigma, Z, free=FREE, theta_fixed=THETA)
    start = initial_walkers(lp, 8, 400, np.random.default_rng(2))
    config = MCMCConfig.until_converged(max_iter=6000, n_walkers=8, check_every=200, seed=1, min_iter_per_tau=20,
                                        min_ess=400.0)
    result = run_mcmc(lp, config, start)
    assert result.converged and np.all(result.rhat < 1.01) and np.min(result.ess) >= 400, result.summary()
    assert result.n_iter % 200 == 0 and result.n_iter < 6000  # stopped at the first check that passed
    assert result.chain.shape[0] == result.n_iter - result.n_iter // 2  # the first half is burn-in
    # A budget too small to converge: the run ends there and says so.
    short = run_mcmc(lp, MCMCConfig.until_converged(max_iter=200, n_walkers=8, check_every=100, seed=1), start)
    assert short.n_iter == 200 and not short.converged
    with pytest.raises(ParameterError, match="finite log posterior"):
        run_mcmc(lp, config, np.full((8, 2), 99.0))


def test_log_posterior_uses_the_prior_at_the_galaxy_redshift():
    """A physical (continuity SFH) prior depends on z: the MCMC target must evaluate it at the galaxy's z."""
    physical = get_model("dirichlet", prior="physical")
    flux_true = physical.photometry(THETA[None, :], [Z])[0]
    lp = PhotometryLogPosterior(physical, flux_true, 0.05 * flux_true, Z)
    theta = physical.prior.sample(5, np.random.default_rng(0), np.full(5, Z))
    chi2 = photometry_chi2(physical.photometry(theta, np.full(5, Z)), flux_true, 0.05 * flux_true)
    np.testing.assert_allclose(lp(theta), physical.prior.log_prob(theta, np.full(5, Z)) - 0.5 * chi2)
