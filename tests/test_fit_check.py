"""Goodness of fit per galaxy: a posterior that reproduces the photometry passes, one that does not is poor_fit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sedscale.infer.fit_check import POOR_FIT_P, fit_check
from sedscale.units import POGSON, nanomaggies_to_mag


@pytest.fixture(scope="module")
def model_and_truth():
    from sedscale.infer.catalog_worker import model_for
    from sedscale.infer.posterior import Posterior
    from sedscale.shipped import default_flow

    post = Posterior.load(default_flow())
    model = model_for(post)
    rng = np.random.default_rng(2)
    theta = model.prior.sample(3, rng, z=np.full(3, 0.05))
    return model, theta


def test_the_true_model_fits_and_a_model_one_magnitude_off_does_not(model_and_truth):
    model, theta = model_and_truth
    z = np.full(3, 0.05)
    flux = model.photometry(theta, z, dtype=np.float64)
    sigma = 0.05 * flux / POGSON
    samples = np.repeat(theta[:, None, :], 40, axis=1)
    observed = flux.copy()
    observed[1] *= 10 ** (0.4 * 1.0)  # galaxy 1 measured one magnitude brighter than its posterior's model
    observed[2, 0] = np.nan  # galaxy 2: u not used
    fit = fit_check(model, samples, z, observed, np.where(np.isnan(observed), np.nan, sigma))
    np.testing.assert_allclose(fit.model_mag[0], nanomaggies_to_mag(flux[0]), atol=1e-6)
    assert fit.chi2_best[0] < 1e-8 and fit.ppc_p[0] > 0.99
    assert fit.chi2_best[1] > 100 and fit.ppc_p[1] < POOR_FIT_P
    assert list(fit.n_bands_fit) == [5, 5, 4] and fit.ppc_p[2] > 0.99


def test_the_p_value_is_uniform_for_noise_the_model_describes(model_and_truth):
    """Photometry drawn from the model with its own errors: p-values near uniform, almost never below the threshold."""
    model, theta = model_and_truth
    rng = np.random.default_rng(5)
    n = 400
    z = np.full(n, 0.05)
    truth = np.repeat(theta[:1], n, axis=0)
    flux = model.photometry(truth, z, dtype=np.float64)
    sigma = 0.1 * flux / POGSON
    observed = flux + sigma * rng.standard_normal(flux.shape)
    fit = fit_check(model, truth[:, None, :], z, observed, sigma, n_fit=1)
    assert 0.4 < np.mean(fit.ppc_p) < 0.6 and np.mean(fit.ppc_p < POOR_FIT_P) < 0.01


def test_catalog_rows_carry_the_fit_and_keep_their_status_when_it_is_good(tmp_path):
    """The shipped flow on MOCK galaxies of its own model reproduces their photometry."""
    from astropy.table import Table

    from sedscale.infer.catalog import CatalogOptions, plan_catalog, run_catalog
    from sedscale.infer.mock import write_mock_nsa
    from sedscale.shipped import default_flow

    catalog = write_mock_nsa(tmp_path / "mock.fits", n=30, seed=6, z_range=(0.02, 0.1), n_defects=2)
    # Galaxy 0's r band broken as in NSA Virgo galaxy 107638: 1/1000 of its flux, at S/N 0.5 (masked for the
    # flow as low_snr); the other bands fix a model whose r lies hundreds of sigma above it.
    table = Table.read(catalog)
    table["NMGY"][0, 4] *= 1e-3
    table["NMGY_IVAR"][0, 4] = (0.5 / table["NMGY"][0, 4]) ** 2
    table.write(catalog, overwrite=True)
    options = CatalogOptions(n_samples=100, partition_size=30, seed=2, fit_check=True)
    run_catalog(plan_catalog(catalog, default_flow(), tmp_path / "a.parquet", options))
    df = pd.read_parquet(tmp_path / "a.parquet")
    broken, df = df.iloc[0], df.iloc[1:]
    assert "low_snr:r" in broken["reason"] and broken["n_bands_fit"] == 5 and broken["status"] == "poor_fit"
    usable = df["status"] != "bad_input"
    assert {"model_mag_r", "chi2_best", "n_bands_fit", "ppc_p"} <= set(df.columns)
    assert df.loc[usable, "ppc_p"].between(0, 1).all() and df.loc[~usable, "ppc_p"].isna().all()
    assert (df.loc[usable, "status"] == "poor_fit").mean() < 0.1
    assert (df.loc[usable, "model_mag_r"] - df.loc[usable, "mag_r"]).abs().median() < 0.05
