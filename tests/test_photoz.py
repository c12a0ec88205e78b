"""Photometric redshifts: z as a flow parameter, given redshifts with uncertainties, and their catalogs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sedscale.errors import ConfigError
from sedscale.infer.catalog import CatalogOptions, plan_catalog, run_catalog
from sedscale.infer.quality import Z_GIVEN, Z_GIVEN_WITH_ERROR, Z_PHOTOMETRIC, check_photometry
from sedscale.io.catalog import write_canonical
from sedscale.models import get_model
from sedscale.models.redshift_prior import RedshiftParameterPrior
from sedscale.observe.redshift_input import REDSHIFT_X_COLUMNS, RedshiftInput, redshift_input
from sedscale.simulate.redshift import SurveyRedshift, UniformRedshift
from sedscale.train.data import prior_from_dict
from sedscale.units import mag_to_nanomaggies
from sedscale.validate.photoz import knn_photoz, photoz_metrics


def test_redshift_densities_are_normalised_and_match_their_draws():
    for dist in (UniformRedshift(0.002, 0.98), SurveyRedshift(0.002, 0.98)):
        z = np.geomspace(dist.low, dist.high, 200_001)
        assert np.trapezoid(np.exp(dist.log_prob(z)), z) == pytest.approx(1.0, abs=1e-4)
        draws = dist.sample(400_000, np.random.default_rng(1))
        for edge in (0.01, 0.1, 0.5):
            below = z <= edge
            assert np.mean(draws <= edge) == pytest.approx(np.trapezoid(np.exp(dist.log_prob(z[below])), z[below]),
                                                           abs=3e-3)
        assert dist.log_prob(np.array([0.001, 1.0])).tolist() == [-np.inf, -np.inf]


def test_joint_prior_of_parameters_and_redshift():
    base = get_model("dirichlet", prior="physical").prior
    prior = RedshiftParameterPrior(base, SurveyRedshift(0.002, 0.6))
    assert prior.names == (*base.names, "z") and prior.dim == base.dim + 1
    draws = prior.sample(3000, np.random.default_rng(2))
    assert prior.in_support(draws).all() and draws[:, -1].min() >= 0.002 and draws[:, -1].max() <= 0.6
    lp = prior.log_prob(draws[:10])
    expected = prior.redshift.log_prob(draws[:10, -1]) + base.log_prob(draws[:10, :-1], draws[:10, -1])
    np.testing.assert_allclose(lp, expected)
    outside = draws[:2].copy()
    outside[:, -1] = 0.7
    assert np.isneginf(prior.log_prob(outside)).all()
    back = prior_from_dict(prior.to_dict())
    assert isinstance(back, RedshiftParameterPrior) and back.to_dict() == prior.to_dict()
    assert prior.marginals()[-1] is None  # z is tabulated from the training rows


def test_redshift_inputs_encode_the_three_cases():
    ri = RedshiftInput()
    x = ri.encode([np.nan, 0.1, 0.1, 0.2], [np.nan, np.nan, 0.02, 5.0])
    np.testing.assert_allclose(x[0], [0, 0, 0])
    np.testing.assert_allclose(x[1], [0.1, np.log10(2 * ri.sigma_min), 1], rtol=1e-6)
    np.testing.assert_allclose(x[2], [0.1, np.log10(0.02), 1], rtol=1e-6)
    assert x[3, 1] == pytest.approx(np.log10(ri.sigma_max))
    z = np.full(100_000, 0.3)
    drawn = ri.draw(z, np.random.default_rng(3))
    known = drawn[:, 2] == 1
    assert known.mean() == pytest.approx(1 - ri.p_unknown, abs=0.01)
    pull = (drawn[known, 0] - 0.3) / 10 ** drawn[known, 1]
    assert np.std(pull) == pytest.approx(1.0, abs=0.02) and abs(np.mean(pull)) < 0.02
    assert redshift_input(None) is None and redshift_input("parameter") == ri
    with pytest.raises(ConfigError, match="sigma_min"):
        RedshiftInput(sigma_min=0.0)
    with pytest.raises(ConfigError, match="unknown"):
        redshift_input({"p_missing": 0.2})


def test_quality_checks_of_redshifts_for_photometric_redshift_flows():
    n = 8
    flux = np.full((n, 5), 100.0)
    ivar = np.full((n, 5), 1.0)
    z = np.array([np.nan, 0.1, 0.1, 0.1, 0.1, 0.1, np.nan, 0.002])
    z_err = np.array([np.nan, np.nan, 0.01, -0.1, 0.0, np.inf, 0.05, 0.5])
    checked = check_photometry(flux, ivar, z, (0.002, 0.6), masked=True, z_err=z_err, redshift=RedshiftInput())
    assert checked.bad.tolist() == [False, False, False, True, True, True, True, True]
    assert checked.reason[3] == checked.reason[4] == checked.reason[5] == "invalid_z_err"
    assert checked.reason[6] == "z_err_without_z" and checked.reason[7] == "z_err_outside_training_range"
    assert checked.z_source[:3].tolist() == [Z_PHOTOMETRIC, Z_GIVEN, Z_GIVEN_WITH_ERROR]
    assert checked.x.shape == (n, 15 + len(REDSHIFT_X_COLUMNS)) and np.isfinite(checked.x[:3]).all()
    # A spec-z flow still refuses a missing z.
    plain = check_photometry(flux, ivar, z, (0.002, 0.6), masked=True)
    assert plain.bad[0] and plain.reason[0] == "missing_z" and plain.z_source[1] == Z_GIVEN


def test_photoz_metrics_and_the_knn_baseline():
    rng = np.random.default_rng(4)
    z = rng.uniform(0.02, 0.3, 4000)
    m = photoz_metrics(z + 0.01 * (1 + z) * rng.standard_normal(z.size), z)
    assert m.sigma_nmad == pytest.approx(0.01, rel=0.05) and m.outlier_fraction == 0 and abs(m.bias) < 1e-3
    wild = z.copy()
    wild[:40] += 0.5
    assert photoz_metrics(wild, z, (z - 0.01, z + 0.01), (z - 0.01, z + 0.01)).outlier_fraction == 0.01
    # Colours that follow z: the neighbours' median recovers it, and no galaxy is its own neighbour.
    features = np.column_stack([z * 3 + 0.01 * rng.standard_normal(z.size), rng.standard_normal(z.size) * 0.01])
    knn = knn_photoz(features, z, k=5)
    assert photoz_metrics(knn, z).sigma_nmad < 0.01 and not np.any(knn == z)


def test_bpz_recovers_the_redshift_of_its_own_template():
    pytest.importorskip("desc_bpz")
    from sedscale.validate.bpz import bpz_photoz, template_grid

    grid = template_grid([f"sdss_{b}0" for b in "ugriz"], np.arange(0.005, 1.0, 0.005))
    rows = [(10, 0.1), (30, 0.15), (60, 0.3)]  # (z index, template index via t below)
    flux = np.array([grid.flux[i, t] * 1e3 for (i, _), t in zip(rows, (0, 1, 5))])
    result = bpz_photoz(grid, flux, 0.01 * flux, prior="flat")
    np.testing.assert_allclose(result.z_b, [grid.z[i] for i, _ in rows], atol=0.006)
    assert np.all(result.z_low <= result.z_b) and np.all(result.z_b <= result.z_high + 1e-9)


# ----------------------------------------------------------------- a trained photometric-redshift flow
@pytest.fixture(scope="module")
def photoz_flow(tmp_path_factory, train_masked_flow) -> Path:
    return train_masked_flow(tmp_path_factory.mktemp("photoz_flow"), seed=21, epochs=10, redshift="parameter")


@pytest.fixture(scope="module")
def spec_flow(tmp_path_factory, train_masked_flow) -> Path:
    return train_masked_flow(tmp_path_factory.mktemp("spec_flow"), seed=22, epochs=2)


def _catalog(n: int, seed: int) -> pd.DataFrame:
    """Rows of galaxy-like ugriz photometry (nanomaggies), 3% errors, in sedscale's own layout without z."""
    rng = np.random.default_rng(seed)
    colours = np.array([1.6, 0.8, 0.35, 0.25])  # u-g, g-r, r-i, i-z of a typical z ~ 0.1 galaxy
    r = rng.uniform(15.5, 17.5, n)
    mags = np.column_stack([r + colours[0] + colours[1], r + colours[1], r, r - colours[2],
                            r - colours[2] - colours[3]]) + 0.05 * rng.standard_normal((n, 5))
    flux = mag_to_nanomaggies(mags)
    cols = {"id": np.arange(n)}
    cols.update({f"flux_{b}": flux[:, k] for k, b in enumerate("ugriz")})
    cols.update({f"flux_ivar_{b}": 1.0 / (0.03 * flux[:, k]) ** 2 for k, b in enumerate("ugriz")})
    return pd.DataFrame(cols)


def test_photoz_checkpoint_records_redshift_as_its_last_parameter(photoz_flow):
    from sedscale.infer import Posterior

    post = Posterior.load(photoz_flow)
    assert post.param_names[-1] == "z" and post.n_model_params == len(post.param_names) - 1
    assert post.x_columns[-3:] == REDSHIFT_X_COLUMNS and post.band_masked
    assert post.redshift_input == RedshiftInput() and post.metadata["prior"]["type"] == "RedshiftParameterPrior"
    assert post.metadata["theta_marginals"][-1]["kind"] == "tabulated"


def test_catalog_without_a_redshift_column_gets_photometric_redshifts(photoz_flow, tmp_path):
    df = _catalog(40, seed=5)
    write_canonical(df, tmp_path / "noz.parquet")
    # The test flow is trained for seconds: the fit check would find most of its fits poor (the shipped
    # photo-z flow's are checked on the real MGS, docs/photoz.md).
    plan = plan_catalog(tmp_path / "noz.parquet", photoz_flow, [tmp_path / "out.parquet"],
                        CatalogOptions(n_samples=100, seed=1, fit_check=False), work_dir=tmp_path / "parts")
    run_catalog(plan)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert (out["z_source"] == Z_PHOTOMETRIC).all() and out["z"].isna().all() and out["z_err"].isna().all()
    assert plan.spec.options.z_prior == "uniform" and (out["z_prior_ess"] > 10).all()
    ok = out["status"] == "ok"
    assert ok.mean() > 0.9
    for q in ("z", "log_mstar_total", "sfr_100myr", "age_mw"):
        assert np.isfinite(out.loc[ok, f"{q}_p50"]).all()
    assert (out.loc[ok, "z_p025"] >= 0.002 - 1e-6).all() and (out.loc[ok, "z_p975"] <= 0.6 + 1e-6).all()
    assert (out.loc[ok, "z_p16"] < out.loc[ok, "z_p84"]).all()


def test_mixed_redshift_cases_domain_edges_and_bad_uncertainties(photoz_flow, tmp_path):
    df = _catalog(60, seed=6)
    z = np.full(60, np.nan)
    z_err = np.full(60, np.nan)
    z[10:20] = 0.1                         # spectroscopic
    z[20:30] = 0.1
    z_err[20:30] = 0.05                    # with an uncertainty
    z[30:35] = 0.002                       # the training range's edges
    z[35:40] = 0.6
    z[40:43] = 0.1
    z_err[40:43] = [-0.01, 0.0, np.inf]    # bad uncertainties
    df["z"] = z
    df["z_err"] = z_err
    write_canonical(df, tmp_path / "mixed.parquet")
    # The training z prior: re-weighting to a flat one would magnify this 10-epoch flow's tails at the
    # low edge, which is not what this test is about (tests/test_photoz.py: the re-weighting's own test).
    plan = plan_catalog(tmp_path / "mixed.parquet", photoz_flow, [tmp_path / "out.parquet"],
                        CatalogOptions(n_samples=200, seed=2, z_prior="training"), work_dir=tmp_path / "parts")
    run_catalog(plan)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert (out["z_source"].iloc[:10] == Z_PHOTOMETRIC).all() and (out["z_source"].iloc[10:20] == Z_GIVEN).all()
    assert (out["z_source"].iloc[20:30] == Z_GIVEN_WITH_ERROR).all()
    assert (out["status"].iloc[40:43] == "bad_input").all() and (out["reason"].iloc[40:43] == "invalid_z_err").all()
    assert (out["status"].iloc[:40] != "bad_input").all()
    width = (out["z_p84"] - out["z_p16"]).to_numpy()
    # A spectroscopic z pins the posterior's z far tighter than photometry or a 0.05 uncertainty does.
    assert np.median(width[10:20]) < 0.5 * np.median(width[:10])
    assert np.median(width[10:20]) < np.median(width[20:30])
    assert np.all(np.abs(out["z_p50"].iloc[30:35] - 0.002) < 0.05) and np.all(np.abs(out["z_p50"].iloc[35:40] - 0.6) < 0.1)


def test_spec_z_flows_refuse_catalogs_without_redshifts_or_with_uncertainties(spec_flow, tmp_path):
    df = _catalog(5, seed=7)
    df["z"] = 0.1
    df["Z_ERR"] = 0.01
    df.to_csv(tmp_path / "cat.csv", index=False)
    base = ["id=id", "flux=flux_{band}", "flux_ivar=flux_ivar_{band}", "flux_unit=nanomaggy"]
    for extra in (["z=none"], ["z=z", "z_err=Z_ERR"]):
        with pytest.raises(ConfigError, match="photometric-redshift flow"):
            plan_catalog(tmp_path / "cat.csv", spec_flow, [tmp_path / "o.parquet"], CatalogOptions(n_samples=10),
                         mapping=base + extra)
    with pytest.raises(ConfigError, match="z_err"):
        plan_catalog(tmp_path / "cat.csv", spec_flow, [tmp_path / "o.parquet"], CatalogOptions(n_samples=10),
                     mapping=base + ["z=none", "z_err=Z_ERR"])
    with pytest.raises(ConfigError, match="takes z as an input; a redshift prior"):
        plan_catalog(tmp_path / "cat.csv", spec_flow, [tmp_path / "o.parquet"],
                     CatalogOptions(n_samples=10, z_prior="uniform"), mapping=base + ["z=z"])
    with pytest.raises(ConfigError, match="unknown redshift prior 'flat'"):
        CatalogOptions(z_prior="flat")


def test_validation_report_of_a_photometric_redshift_flow(photoz_flow, tmp_path):
    from sedscale.validate.report import ValidationConfig, run_validation

    info = run_validation(ValidationConfig(flow=str(photoz_flow), out=str(tmp_path / "val"), n_test=120,
                                           n_samples=100, strata_bins=2), log=lambda line: None)
    assert {"z", "log_mstar_total", "log_sfr_100myr"} <= set(info["passed"]) and info["redshift_case"] == "photometric"
    strata = pd.read_parquet(tmp_path / "val" / "strata.parquet")
    assert strata.loc[strata["stratum"] == "z_p50", "high"].max() == pytest.approx(0.6)  # binned by posterior z


#: DR9-like 5-sigma point-source depths (AB) of Legacy g r z and unWISE W1 W2 (the DESI BGS README's), and a
#: 2% calibration term: the shared DESI rows carry no flux errors.
DESI_DEPTHS = (24.0, 23.4, 22.5, 20.7, 20.0)


def desi_errors(flux: np.ndarray, frac: float = 0.02) -> np.ndarray:
    """1-sigma flux errors (nanomaggies) of survey depths plus a fractional term."""
    floor = mag_to_nanomaggies(np.asarray(DESI_DEPTHS)) / 5.0
    return np.sqrt(floor[None, :] ** 2 + (frac * flux) ** 2)


def test_real_desi_galaxies_through_the_legacy_wise_photoz_flow(repo_root, shared_data, tmp_path):
    """The shipped grz W1 W2 photo-z flow on 150 real DESI BGS galaxies, z withheld, as a user runs it."""
    from sedscale.cli.catalog import main

    df = pd.read_csv(shared_data / "desi_bgs" / "rosette3.csv").iloc[:150]
    names = ("G", "R", "Z", "W1", "W2")
    flux = df[[f"FLUX_{b}_DERED" for b in names]].to_numpy(dtype=float)
    err = desi_errors(flux)
    table = pd.DataFrame({"TARGET_ID": df["TARGET_ID"], "ZSPEC": df["Z"],
                          **{f"F_{b}": flux[:, k] for k, b in enumerate(names)},
                          **{f"E_{b}": err[:, k] for k, b in enumerate(names)}})
    table.to_csv(tmp_path / "desi.csv", index=False)
    argv = [str(tmp_path / "desi.csv"), "--flow", str(repo_root / "checkpoints" / "photoz_legacy_wise"),
            "--out", str(tmp_path / "desi.parquet"), "--cluster", "none", "--no-progress", "--n-samples", "300",
            "--columns", "id=TARGET_ID", "z=none", "keep=ZSPEC", "flux=" + ",".join(f"F_{b}" for b in names),
            "flux_err=" + ",".join(f"E_{b}" for b in names), "flux_unit=nanomaggy"]
    assert main(argv) == 0
    out = pd.read_parquet(tmp_path / "desi.parquet")
    ok = out["status"] == "ok"
    assert ok.mean() >= 0.95 and (out["z_source"] == Z_PHOTOMETRIC).all()
    m = photoz_metrics(out.loc[ok, "z_p50"], out.loc[ok, "zspec"], (out.loc[ok, "z_p16"], out.loc[ok, "z_p84"]))
    assert m.sigma_nmad < 0.05 and m.outlier_fraction < 0.05 and abs(m.bias) < 0.02
    # Not over-confident; on real galaxies the intervals are measured too wide (94% in 68%: docs/photoz.md).
    assert m.coverage_68 > 0.6


def test_redshift_prior_reweighting_turns_training_draws_into_the_run_prior():
    from sedscale.infer.zprior import reweight_redshift_prior

    training = SurveyRedshift(0.002, 0.98)
    rng = np.random.default_rng(8)
    z = training.sample(40 * 5000, rng).reshape(40, 5000)
    theta = np.stack([np.arange(z.size, dtype=float).reshape(z.shape), z], axis=-1)
    theta[0, 100:] = np.nan  # a galaxy with few samples keeps only finite ones
    out, ess = reweight_redshift_prior(theta, training, "uniform", np.random.default_rng(9))
    counts = np.histogram(out[1:, :, 1].ravel(), bins=7, range=(0.002, 0.98))[0]
    assert np.all(np.abs(counts / counts.mean() - 1) < 0.03)  # flat in z, from a log-heavy training mix
    assert 0.6 < np.median(ess[1:]) / 5000 < 0.9 and np.isfinite(out[0]).all()
    # Resampled rows are whole samples (parameters stay with their z), in shuffled order.
    index = out[1:, :, 0].astype(int)
    np.testing.assert_array_equal(theta[1:, :, 1].ravel()[index.ravel() - 5000], out[1:, :, 1].ravel())
    assert not np.all(np.diff(index[0]) >= 0)
    same, full = reweight_redshift_prior(theta, training, "training", rng)
    assert same is theta and full[1] == 5000 and full[0] == 100
