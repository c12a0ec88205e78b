"""Survey flows: physical priors, remnant masses, band-masked x, survey noise and redshifts, the reference comparison.

A tiny band-masked flow is trained once per module on a few thousand
noiseless simulations under the ``physical`` prior (real simulator and
trainer); the catalog tests run real NSA / SDSS rows from ``../shared/data``
through it where that folder exists.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from sedscale.errors import ConfigError, ParameterError
from sedscale.infer.catalog import CatalogOptions, plan_catalog, run_catalog
from sedscale.infer.quality import check_photometry
from sedscale.io.catalog import CatalogFormatError, ColumnMapping, read_catalog, write_canonical
from sedscale.models import get_model
from sedscale.models.physical_prior import GALLAZZI05, load_prior_config, mass_metallicity_relation
from sedscale.observe.layout import MASKED_PHOTOMETRY_X_COLUMNS, MISSING_LOG_SIGMA_MAG, masked_photometry_x
from sedscale.observe.survey_noise import SurveyNoise, photometric_noise_model
from sedscale.simulate.redshift import SurveyRedshift
from sedscale.sps.remnants import chabrier_imf, remnant_mass, remnant_mass_fraction
from sedscale.validate.reference import compare_masses, nmad

Z_RANGE = (0.002, 0.6)


# ----------------------------------------------------------------------------- priors
@pytest.fixture(scope="module")
def physical():
    return get_model("dirichlet", prior="physical")


def test_flat_preset_is_the_old_box_uniform_prior():
    flat = get_model("dirichlet").prior
    assert flat.to_dict()["type"] == "BoxUniform"
    assert flat.is_uniform and not flat.needs_z
    theta = flat.sample(5, np.random.default_rng(0))
    np.testing.assert_allclose(flat.log_prob(theta), -np.sum(np.log(flat.high - flat.low)))
    assert get_model("dirichlet", prior="continuity").prior.to_dict()["type"] == "PhysicalPrior"


def test_prior_samples_stay_in_the_box_and_need_z(physical):
    prior = physical.prior
    z = np.random.default_rng(1).uniform(*Z_RANGE, 4000)
    theta = prior.sample(4000, np.random.default_rng(2), z)
    assert prior.in_support(theta).all()
    assert np.isfinite(prior.log_prob(theta, z)).all()
    with pytest.raises(ParameterError, match="depends on z"):
        prior.sample(3, np.random.default_rng(0))
    assert prior.log_prob(prior.high + 1, z[:1])[0] == -np.inf


def test_continuity_ratios_follow_the_student_t(physical):
    """Draws -> unit cube -> back to log SFR ratios: Student-t(2, 0.6) truncated at 5."""
    prior = physical.prior
    z = np.full(20000, 0.1)
    theta = prior.sample(20000, np.random.default_rng(3), z)
    ratios = prior.log_sfr_ratios(theta[:, 1:7], z)
    t = stats.t(2.0, scale=0.6)
    for k in range(6):
        r = ratios[:, k]
        assert np.abs(r).max() <= 5.0 + 1e-6
        lo, hi = t.cdf(-5), t.cdf(5)
        assert stats.kstest(r, lambda v: (t.cdf(v) - lo) / (hi - lo)).pvalue > 1e-3


def test_continuity_density_on_the_unit_cube_has_the_right_jacobian(physical):
    """log p(u) = log p(r) + log|dr/du|, the Jacobian checked by finite differences."""
    prior = physical.prior
    z = np.full(3, 0.05)
    theta = prior.sample(3, np.random.default_rng(4), z)
    lp = prior.log_prob(theta, z)
    t = stats.t(2.0, scale=0.6)
    norm = t.cdf(5) - t.cdf(-5)
    for i in range(3):
        u = theta[i, 1:7]
        r0 = prior.log_sfr_ratios(u[None], z[:1])[0]
        jac = np.empty((6, 6))
        for j in range(6):
            du = np.zeros(6)
            du[j] = 1e-6
            jac[:, j] = (prior.log_sfr_ratios((u + du)[None], z[:1])[0] - prior.log_sfr_ratios((u - du)[None], z[:1])[0]) / 2e-6
        lp_sfh = np.sum(t.logpdf(r0)) - 6 * np.log(norm) + np.log(abs(np.linalg.det(jac)))
        rest = lp[i] - lp_sfh
        others = get_model("dirichlet", prior="physical").prior
        expected_rest = others._scalar_log_prob("log_mass", theta[i:i + 1, 0], theta[i:i + 1, 0])[0]
        for k in ("log_zsol", "tau_bc", "tau_ism", "n_dust"):
            expected_rest += others._scalar_log_prob(k, theta[i:i + 1, others.names.index(k)], theta[i:i + 1, 0])[0]
        assert rest == pytest.approx(expected_rest, abs=1e-4)


@pytest.mark.parametrize("name", ["physical", "spectral"])
def test_mass_metallicity_prior_has_the_gallazzi_median_and_scatter(name):
    """Both presets: the Gallazzi et al. relation truncated to their own box (+0.2, +0.4 for spectra)."""
    prior = get_model("dirichlet", prior=name).prior
    config = prior.config["log_zsol"]
    n = 40000
    theta = prior.sample(n, np.random.default_rng(5), np.full(n, 0.05))
    sel = np.abs(theta[:, 0] - 10.7) < 0.05
    median, width = mass_metallicity_relation(10.7 - config["mass_offset"])
    zs = theta[sel, 7]
    low, high = config["low"], config["high"]
    tn = stats.truncnorm((low - median) / width, (high - median) / width, loc=median, scale=width)
    assert np.median(zs) == pytest.approx(tn.median(), abs=0.03)
    assert np.std(zs) == pytest.approx(tn.std(), rel=0.1)
    assert zs.max() <= high and (zs > 0.2).any() == (high > 0.2)
    assert GALLAZZI05[:, 0].min() < 9 and mass_metallicity_relation(12.5)[0] == pytest.approx(0.15)


def test_prior_probit_map_makes_closed_form_priors_standard_normal(physical):
    """prior_probit: N(0, 1) under the prior where the prior has a closed-form marginal, logit elsewhere;
    its log-Jacobian (finite differences), inverse and the learned (clamped) truths."""
    import torch

    from sedscale.models import Marginal
    from sedscale.models.priors import marginals_from_list, marginals_to_list
    from sedscale.train.flows import LOGIT_EPS, learned_theta, marginal_tensors, posttransform_theta, pretransform_theta

    prior = physical.prior
    names = prior.names
    marginals = prior.marginals()
    assert marginals[names.index("tau_bc")] == Marginal("truncnormal", 0.3, 1.0)
    assert marginals[0] == Marginal("uniform") and marginals[names.index("n_dust")] == Marginal("uniform")
    assert marginals[1] is None
    zsol = names.index("log_zsol")
    assert marginals[zsol].kind == "conditional_truncnormal" and marginals[zsol].given == 0
    assert marginals_from_list(json.loads(json.dumps(marginals_to_list(marginals)))) == marginals
    assert all(m == Marginal("uniform") for m in get_model("dirichlet", prior="flat").prior.marginals())

    n = 20000
    rng = np.random.default_rng(3)
    theta = prior.sample(n, rng, rng.uniform(*Z_RANGE, n))
    low, high = torch.tensor(prior.low), torch.tensor(prior.high)
    m = marginal_tensors(marginals)
    t, log_jac = pretransform_theta(torch.tensor(theta), low, high, "prior_probit", m)
    t_logit, _ = pretransform_theta(torch.tensor(theta), low, high, "logit")
    for j, marginal in enumerate(marginals):
        if marginal is None:
            torch.testing.assert_close(t[:, j], t_logit[:, j])
        else:
            assert stats.kstest(t[:, j].numpy(), "norm").pvalue > 1e-3, names[j]
    # log Z: the CDF of the Gallazzi truncated normal at each draw's own mass (scipy as the reference).
    b = prior.config["log_zsol"]
    median, width = mass_metallicity_relation(theta[:200, 0] - b["mass_offset"])
    scale = b["width"] * width
    cdf = stats.truncnorm.cdf(theta[:200, zsol], (b["low"] - median) / scale, (b["high"] - median) / scale,
                              loc=median, scale=scale)
    np.testing.assert_allclose(stats.norm.cdf(t[:200, zsol].numpy()), np.clip(cdf, LOGIT_EPS, 1 - LOGIT_EPS),
                               rtol=0, atol=1e-9)
    # log|dt/dtheta| of the diagonal map, by central differences away from the clamp.
    u = (theta - prior.low) / (prior.high - prior.low)
    inner = torch.tensor(theta[((u > 1e-3) & (u < 1 - 1e-3)).all(axis=1)][:50])
    h, fd = 1e-6, torch.zeros(inner.shape[0], dtype=torch.float64)
    for j in range(prior.dim):
        step = torch.zeros(prior.dim, dtype=torch.float64)
        step[j] = h
        up, _ = pretransform_theta(inner + step, low, high, "prior_probit", m)
        down, _ = pretransform_theta(inner - step, low, high, "prior_probit", m)
        fd += torch.log((up - down)[:, j].abs() / (2 * h))
    torch.testing.assert_close(pretransform_theta(inner, low, high, "prior_probit", m)[1], fd, rtol=0, atol=1e-5)
    # learned_theta ranks truths as the (float32) training set stores them.
    rounded = torch.tensor(theta.astype(np.float32).astype(float))
    np.testing.assert_allclose(posttransform_theta(pretransform_theta(rounded, low, high, "prior_probit", m)[0], low,
                                                   high, "prior_probit", m).numpy(),
                               learned_theta(theta, prior.low, prior.high, "prior_probit", marginals), rtol=0, atol=1e-12)
    # A tau_BC truth at the box edge is ranked at the clamped prior quantile, inside the box.
    edge = theta[:1].copy()
    edge[0, names.index("tau_bc")] = 3.0
    tn = stats.truncnorm(-0.3, 2.7, loc=0.3, scale=1.0)
    assert learned_theta(edge, prior.low, prior.high, "prior_probit", marginals)[0, names.index("tau_bc")] == pytest.approx(
        tn.ppf(1 - LOGIT_EPS), abs=1e-6)
    assert np.isfinite(log_jac.numpy()).all()
    # Saturated latents (a flow far outside its training data) stay in the box in float32, for both maps.
    low32, high32 = low.float(), high.float()
    for kind in ("logit", "prior_probit"):
        m32 = m.to(torch.float32)
        far = posttransform_theta(torch.tensor([[40.0] * prior.dim, [-40.0] * prior.dim]), low32, high32, kind, m32)
        assert ((far >= low32) & (far <= high32)).all(), kind
    # A conditional prior must hang on an unconditional parameter (else the map is not triangular).
    chained = list(marginals)
    chained[0] = Marginal("conditional_truncnormal", given=zsol, nodes=marginals[zsol].nodes)
    with pytest.raises(ValueError, match="unconditional"):
        marginal_tensors(chained)


def test_tabulated_map_makes_continuity_sfh_coordinates_standard_normal(physical):
    """prior_probit for the continuity SFH: the probit of a CDF tabulated from prior draws is N(0, 1) on
    fresh draws (the z-scored logit of frac_u1, median ~0.99, is not); exact inverse and slopes; a
    value many draws share (the box edge) maps to the middle of its probability."""
    import torch

    from sedscale.models.priors import marginals_from_list, marginals_to_list, tabulated_marginal
    from sedscale.train.flows import _piecewise, marginal_tensors, posttransform_theta, pretransform_theta

    prior = physical.prior
    rng = np.random.default_rng(11)
    draws = prior.sample(50000, rng, rng.uniform(*Z_RANGE, 50000))
    marginals = [tabulated_marginal(draws[:, j], prior.low[j], prior.high[j]) if m is None else m
                 for j, m in enumerate(prior.marginals())]
    assert marginals_from_list(json.loads(json.dumps(marginals_to_list(marginals)))) == tuple(marginals)
    theta = prior.sample(20000, rng, rng.uniform(*Z_RANGE, 20000))
    low, high = torch.tensor(prior.low), torch.tensor(prior.high)
    m = marginal_tensors(marginals)
    t, log_jac = pretransform_theta(torch.tensor(theta), low, high, "prior_probit", m)
    t_logit, _ = pretransform_theta(torch.tensor(theta), low, high, "logit")
    sfh = range(1, prior.n_bins)
    for j in sfh:
        assert stats.kstest(t[:, j].numpy(), "norm").statistic < 0.02, j
    assert stats.kstest((t_logit[:, 1] - t_logit[:, 1].mean()) / t_logit[:, 1].std(), "norm").statistic > 0.04
    assert np.isfinite(log_jac.numpy()).all()
    back = posttransform_theta(t, low, high, "prior_probit", m).numpy()
    np.testing.assert_allclose(back[:, 1:prior.n_bins], theta[:, 1:prior.n_bins], rtol=0, atol=1e-9)
    # The slope of the tabulated CDF at segment midpoints, by central differences inside the segment.
    x, cdf = (np.array(a) for a in marginals[1].nodes)
    assert x[0] == prior.low[1] and x[-1] == prior.high[1] and np.all(np.diff(cdf) > 0)
    mid, width = (x[1:] + x[:-1]) / 2, np.diff(x)
    ((value, slope),) = _piecewise(torch.tensor(mid)[:, None], torch.tensor(x)[None], torch.tensor(cdf)[None])
    h = torch.tensor(width / 10)[:, None]
    ((up, _),) = _piecewise(torch.tensor(mid)[:, None] + h, torch.tensor(x)[None], torch.tensor(cdf)[None])
    ((down, _),) = _piecewise(torch.tensor(mid)[:, None] - h, torch.tensor(x)[None], torch.tensor(cdf)[None])
    torch.testing.assert_close(slope, (up - down) / (2 * h))
    np.testing.assert_allclose(value[:, 0].numpy(), (cdf[1:] + cdf[:-1]) / 2)
    # 30% of the draws at the top edge: the edge sits at the middle of that mass, CDF 0.85.
    edge = np.concatenate([rng.random(7000), np.ones(3000)])
    ex, ecdf = tabulated_marginal(edge, 0.0, 1.0).nodes
    assert ex[-1] == 1.0 and ecdf[-1] == pytest.approx(0.85, abs=0.01) and ecdf[0] == 0.0
    with pytest.raises(ValueError, match="inside"):
        tabulated_marginal(edge + 0.5, 0.0, 1.0)


def test_prior_configuration_from_yaml_and_its_errors(tmp_path):
    path = tmp_path / "mine.yaml"
    config = load_prior_config("prospector_alpha")
    config.pop("name")
    import yaml

    path.write_text(yaml.safe_dump(config))
    assert load_prior_config(str(path))["name"] == "mine"
    model = get_model("dirichlet", prior=json.dumps(load_prior_config(str(path))))
    assert model.prior.config["sfh"]["scale"] == 0.3
    with pytest.raises(ConfigError, match="unknown prior"):
        load_prior_config("no_such_prior")
    bad = dict(config, tau_ism={"kind": "truncnormal", "mean": 0.3, "sigma": -1, "low": 0, "high": 3})
    with pytest.raises(ConfigError, match="sigma"):
        load_prior_config(bad)


# ----------------------------------------------------------------------------- remnants
def test_remnant_fraction_matches_direct_integration():
    """Slow reference: quad over the Chabrier IMF for a given turn-off mass."""
    norm = integrate.quad(lambda m: m * chabrier_imf(m), 0.1, 100, limit=200, points=[1.0])[0]
    for m_to in (0.9, 2.0, 8.0, 30.0):
        living = integrate.quad(lambda m: m * chabrier_imf(m), 0.1, m_to, limit=200, points=[1.0])[0] / norm
        remnants = integrate.quad(lambda m: remnant_mass(m) * chabrier_imf(m), m_to, 100, limit=200,
                                  points=[8.5, 40.0])[0] / norm
        assert remnant_mass_fraction(living) == pytest.approx(remnants, rel=2e-3)
    assert remnant_mass_fraction(1.0) == pytest.approx(0.0, abs=1e-6)


def test_total_stellar_mass_of_an_old_population_is_the_known_fraction(physical):
    """A 10 Gyr solar population keeps ~0.58-0.60 of its formed mass in stars + remnants (FSPS, BC03)."""
    lib = physical.library()
    node = np.argmin(np.abs(lib.node_ages - 1e10))
    iz = np.argmin(np.abs(lib.metallicities - 0.02))
    living = lib.node_surviving[iz, node]
    total = living + remnant_mass_fraction(living)
    assert 0.55 < total < 0.63 and 0.4 < living < 0.5
    z = np.full(50, 0.05)
    theta = physical.prior.sample(50, np.random.default_rng(6), z)
    d = physical.derived(theta, z)
    assert np.all(d["log_mstar_total"] > d["log_mstar"]) and np.all(d["log_mstar_total"] < d["log_mformed"])


# ----------------------------------------------------------------------------- band-masked x
def test_a_masked_band_carries_no_value_of_its_own():
    flux = np.array([[50.0, 100.0, 150.0, 180.0, 200.0]] * 4)
    sigma = flux * 0.02
    z = np.full(4, 0.1)
    flux[1, 0] = np.nan  # missing
    sigma[2, 0] = np.nan  # no uncertainty
    flux[3, 0] = -5.0  # measured below zero
    x, used, valid = masked_photometry_x(flux, sigma, z)
    assert valid.all() and used[0].all() and not used[1:, 0].any()
    np.testing.assert_array_equal(x[1], x[2])
    np.testing.assert_array_equal(x[1], x[3])
    assert x[1, 10] == 0 and x[1, 5] == MISSING_LOG_SIGMA_MAG
    assert x[1, 0] == pytest.approx(np.mean(x[1, 1:5]))
    assert x.shape == (4, len(MASKED_PHOTOMETRY_X_COLUMNS))


def test_error_floor_adds_in_quadrature():
    flux = np.full((1, 5), 100.0)
    sigma = flux * 0.01 / 1.0857362047581294
    x0, _, _ = masked_photometry_x(flux, sigma, np.array([0.1]))
    x1, _, _ = masked_photometry_x(flux, sigma, np.array([0.1]), error_floor=0.03)
    np.testing.assert_allclose(10 ** x0[0, 5:10], 0.01, rtol=1e-5)
    np.testing.assert_allclose(10 ** x1[0, 5:10], math.hypot(0.01, 0.03), rtol=1e-5)


def test_quality_checks_of_band_masked_flows():
    flux = np.full((7, 5), 100.0)
    ivar = np.full((7, 5), 4.0)
    z = np.array([0.1, 0.1, 0.1, np.nan, -0.1, 0.0019, 0.6])
    flux[1, :3] = np.nan  # three bands missing: too few left
    ivar[2, 1] = -1.0  # sigma <= 0 masks one band
    flux[0, :] = np.nan  # all missing
    checked = check_photometry(flux, ivar, z, Z_RANGE, masked=True)
    assert checked.bad.tolist() == [True, True, False, True, True, True, False]
    assert "fewer_than_3_bands" in checked.reason[0] and "nan_flux:u,g,r,i,z" in checked.reason[0]
    assert checked.bands_used[2] == "uriz"
    assert "invalid_ivar:g" in checked.reason[2]
    assert "missing_z" in checked.reason[3] and "nonpositive_z" in checked.reason[4]
    assert "z_outside_training_range" in checked.reason[5]
    assert checked.bands_used[6] == "ugriz"
    # A measurement below the S/N threshold is a non-detection: masked and named, its magnitude kept.
    ivar[6, 0] = 0.5**2 / 100.0**2  # u at S/N 0.5
    low = check_photometry(flux, ivar, z, Z_RANGE, masked=True, min_snr=1.0857)
    assert low.bands_used[6] == "griz" and low.reason[6] == "low_snr:u" and not low.bad[6]
    assert np.isfinite(low.mag[6, 0]) and low.mag_sigma[6, 0] == pytest.approx(1.0857362 / 0.5, rel=1e-5)
    assert check_photometry(flux, ivar, z, Z_RANGE, masked=True).bands_used[6] == "ugriz"
    # The SEDflow layout cannot mask a band: it keeps it whatever the threshold.
    assert check_photometry(flux[6:], ivar[6:], z[6:], Z_RANGE, min_snr=1.0857).reason[0] == ""


def test_survey_noise_spans_its_range_and_masks_at_most_two_bands():
    noise = photometric_noise_model("survey")
    rng = np.random.default_rng(7)
    flux = np.full((20000, 5), 1000.0)
    x, valid = noise.apply(flux, np.full(20000, 0.1), rng)
    sig = 10 ** x[valid, 5:10][x[valid, 10:15] == 1]
    assert sig.min() >= 0.0019  # reported from the noisy flux: large where the noise nearly cancels the flux
    _, sigma_f = noise.draw(flux, rng)
    drawn = 1.0857362047581294 * sigma_f[np.isfinite(sigma_f)] / 1000.0
    assert drawn.min() >= 0.002 and drawn.max() <= 1.0
    assert np.quantile(np.log10(drawn), 0.5) == pytest.approx(np.log10(np.sqrt(0.002)), abs=0.05)
    n_obs = x[valid, 10:15].sum(axis=1)
    assert n_obs.min() >= 3
    assert np.mean(n_obs == 5) == pytest.approx(0.5, abs=0.05)
    faint = noise.apply(np.full((10, 5), 1e-4), np.full(10, 0.1), rng)[1]
    assert not faint.any()  # mean magnitude 32.5: outside mag_range
    with pytest.raises(ConfigError):
        SurveyNoise(sigma_min=0.1, sigma_max=0.01)


def test_survey_redshifts_cover_both_ends():
    z = SurveyRedshift(0.002, 0.6).sample(100000, np.random.default_rng(8))
    assert z.min() >= 0.002 and z.max() <= 0.6
    assert np.mean(z < 0.01) > 0.1 and np.mean(z > 0.5) > 0.05


# ----------------------------------------------------------------------------- catalogs
def test_text_tables_and_vector_columns(shared_data, tmp_path):
    mgs = shared_data / "sdss_mgs" / "SDSS_MGS.train"
    names = "zs,u,g,r,i,z,u-g,g-r,r-i,i-z,eu,eg,er,ei,ez,eu-g,eg-r,er-i,ei-z"
    df = read_catalog(mgs, ColumnMapping.from_pairs(["format=text", f"names={names}", "z=zs", "mag={band}",
                                                      "mag_err=e{band}"]))
    assert len(df) == 5000 and df["z"].between(0.002, 0.31).all()
    with pytest.raises(CatalogFormatError, match="its '#' header line names 18 columns but the rows hold 19"):
        read_catalog(mgs, ColumnMapping.from_pairs(["format=text", "z=zs", "mag={band}", "mag_err=e{band}"]))
    virgo = shared_data / "nsa_virgo_isedfit" / "nsa_mstar.virgo.fits"
    v = read_catalog(virgo, ColumnMapping.from_pairs(["z=Z", "flux=MAGGIES[2:7]", "flux_ivar=IVARMAGGIES[2:7]",
                                                      "flux_unit=maggy", "id=ISEDFIT_ID"]))
    import fitsio

    raw = fitsio.read(str(virgo), columns=["MAGGIES"])["MAGGIES"]
    np.testing.assert_allclose(v["flux_r"].to_numpy(), raw[:, 4] * 1e9)
    with pytest.raises(ConfigError, match="selects 4 elements"):
        ColumnMapping.from_pairs(["z=Z", "flux=MAGGIES[2:6]", "flux_ivar=IVARMAGGIES[2:6]"])


def test_compare_masses_statistics():
    rng = np.random.default_rng(9)
    n = 4000
    gr = rng.uniform(0.2, 1.0, n)
    ref = rng.uniform(8, 11.5, n)
    ours = ref + 0.1 + 0.2 * (gr > 0.8) + rng.normal(0, 0.1, n)
    cat = pd.DataFrame({"status": np.where(np.arange(n) < 3900, "ok", "bad_input"), "z": rng.uniform(0.01, 0.2, n),
                        "mag_g": 17 + gr, "mag_r": np.full(n, 17.0), "log_mstar_total_p50": ours})
    ref_with_failures = ref.copy()
    ref_with_failures[:10] = -1.0
    res = compare_masses(cat, ref_with_failures)
    assert res.n_ok == 3890
    bins = {r["low"]: r for r in res.by["g-r"]}
    assert bins[0.8]["median"] == pytest.approx(0.3, abs=0.02)
    assert bins[0.4]["median"] == pytest.approx(0.1, abs=0.02) and bins[0.4]["nmad"] == pytest.approx(0.1, abs=0.015)
    assert nmad([1.0]) == 0.0 and np.isnan(nmad([]))
    with pytest.raises(ConfigError):
        compare_masses(cat, ref[:5])


@pytest.fixture(scope="module")
def survey_flow(tmp_path_factory, train_masked_flow) -> Path:
    """A small band-masked flow: 4000 noiseless simulations (physical prior, survey redshifts), 8 epochs."""
    return train_masked_flow(tmp_path_factory.mktemp("survey_flow"), seed=12, epochs=8)


def test_survey_checkpoint_records_its_prior_noise_and_layout(survey_flow):
    from sedscale.models.priors import marginals_from_list
    from sedscale.train.data import TrainingSetError, open_training_set, parameter_map

    meta = json.loads((survey_flow / "posterior.json").read_text())
    assert meta["x_columns"] == list(MASKED_PHOTOMETRY_X_COLUMNS)
    assert meta["model"]["options"] == {"prior": "physical"}
    assert meta["flow"]["theta_transform"] == meta["theta_transform"] == "prior_probit"
    names = meta["param_names"]
    assert meta["theta_marginals"][names.index("tau_bc")] == {"kind": "truncnormal", "mean": 0.3, "sigma": 1.0}
    assert meta["theta_marginals"][names.index("log_zsol")]["kind"] == "conditional_truncnormal"
    # Continuity SFH coordinates: their CDF tabulated from the training rows (too few rows: one line).
    assert {meta["theta_marginals"][names.index(f"frac_u{k}")]["kind"] for k in range(1, 7)} == {"tabulated"}
    ts = open_training_set(survey_flow.parent / "sims").with_noise("survey", "survey")  # as the trainer read it
    assert marginals_from_list(meta["theta_marginals"]) == parameter_map(ts, 0.1, 1)
    with pytest.raises(TrainingSetError, match="frac_u1: a tabulated prior CDF needs >= 100 draws.*simulate more rows"):
        parameter_map(ts, 0.1, 1, rows=50)
    assert meta["prior"]["type"] == "PhysicalPrior" and meta["prior"]["density"]["sfh"]["scale"] == 0.6
    assert meta["photometric_noise"]["sigma_min"] == 0.002
    assert meta["training_set"]["redshift"] == {"kind": "survey", "low": 0.002, "high": 0.6}
    # The reference log-prob is the prior's mean log density, above the box's -log(volume).
    box = -sum(math.log(p["high"] - p["low"]) for p in meta["prior"]["parameters"])
    assert meta["training"]["prior_log_prob"] > box + 5


def test_probit_map_is_read_from_the_sidecar(survey_flow, tmp_path):
    """A prior_probit flow rebuilds its map from the recorded theta_marginals, and refuses a sidecar without them."""
    import shutil

    from sedscale.infer import Posterior
    from sedscale.models import Marginal
    from sedscale.models.priors import marginals_to_list
    from sedscale.train.checkpoint import CheckpointError

    post = Posterior.load(survey_flow)
    assert post.flow.marginals[post.param_names.index("tau_ism")] == Marginal("truncnormal", 0.3, 1.0)
    bare = tmp_path / "bare"
    shutil.copytree(survey_flow, bare)
    meta = json.loads((bare / "posterior.json").read_text())
    del meta["theta_marginals"]
    (bare / "posterior.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="without theta_marginals"):
        Posterior.load(bare)
    # A checkpoint trained before log Z had a conditional map (shipped dirichlet_survey) keeps its logit.
    from sedscale.train.flows import BOX, CONDITIONAL

    zsol = post.param_names.index("log_zsol")
    assert int(post.flow.marginal_code[zsol]) == CONDITIONAL
    meta["theta_marginals"] = marginals_to_list(post.flow.marginals)
    meta["theta_marginals"][zsol] = None
    (bare / "posterior.json").write_text(json.dumps(meta))
    older = Posterior.load(bare)
    assert older.flow.marginals[zsol] is None and int(older.flow.marginal_code[zsol]) == BOX


def test_masked_band_gives_the_posterior_of_a_catalog_without_it(survey_flow, shared_data, tmp_path):
    """Real NSA rows with u removed four ways (NaN flux, zero ivar, flux <= 0, S/N below 1.09) give identical posteriors."""
    from sedscale.io.nsa import read_nsa

    df = read_nsa(sorted((shared_data / "nsa_lcs").glob("*_NSAmastertable.fits"))[:1]).iloc[:40]
    variants = []
    for how in ("nan", "ivar", "negative", "low_snr"):
        d = df.copy()
        if how == "nan":
            d["flux_u"] = np.nan
        elif how == "ivar":
            d["flux_ivar_u"] = 0.0
        elif how == "low_snr":  # a non-detection: S/N 0.3, below the flow's training minimum of 1.09
            d["flux_u"] = 0.3 / np.sqrt(d["flux_ivar_u"])
        else:
            d["flux_u"] = -1.0
        path = tmp_path / f"{how}.parquet"
        write_canonical(d, path)
        plan = plan_catalog(path, survey_flow, [tmp_path / f"{how}_post.parquet"],
                            CatalogOptions(n_samples=50, seed=4, error_floor=0.03), work_dir=tmp_path / f"{how}.parts")
        run_catalog(plan)
        variants.append(pd.read_parquet(tmp_path / f"{how}_post.parquet"))
    a, b, c, d = variants
    ok = a["status"] != "bad_input"
    assert ok.mean() > 0.9 and set(a.loc[ok, "bands_used"]) == {"griz"}
    for other in (b, c, d):
        np.testing.assert_array_equal(a["log_mstar_total_p50"].to_numpy(), other["log_mstar_total_p50"].to_numpy())
    assert np.isnan(a["mag_u"]).all() and a["sigma_g"].min() >= 0.03
    # (A posterior at a prior bound adds its at_prior_edge label after the band's.)
    assert (d["reason"].str.split(";").str[0] == "low_snr:u").all()
    assert np.isfinite(d["mag_u"]).all() and (d["sigma_u"] > 3).all()
    meta = __import__("pyarrow.parquet", fromlist=["x"]).read_schema(tmp_path / "nan_post.parquet").metadata
    assert json.loads(meta[b"sedscale.options"])["error_floor"] == 0.03


def test_default_error_floor_and_min_snr_and_spectral_flows_are_refused(
        survey_flow, repo_root, tmp_path, shared_data):
    """The default floor is DEFAULT_ERROR_FLOOR (0.05 mag, chosen on the real catalogs), never below the flow's
    smallest training error; the default S/N threshold is the lowest S/N the flow was trained on."""
    import json
    import shutil

    from sedscale.infer.catalog_plan import DEFAULT_ERROR_FLOOR
    from sedscale.io.nsa import read_nsa

    df = read_nsa(sorted((shared_data / "nsa_lcs").glob("*_NSAmastertable.fits"))[:1]).iloc[:5]
    path = tmp_path / "few.parquet"
    write_canonical(df, path)
    plan = plan_catalog(path, survey_flow, [tmp_path / "p.parquet"], CatalogOptions(n_samples=20))
    assert DEFAULT_ERROR_FLOOR == 0.05 and plan.spec.options.error_floor == DEFAULT_ERROR_FLOOR
    assert plan_catalog(path, survey_flow, [tmp_path / "f.parquet"],
                        CatalogOptions(n_samples=20, error_floor=0.002)).spec.options.error_floor == 0.002
    # A flow trained on errors of 0.1 mag and more: no band may claim more precision than that.
    coarse = tmp_path / "coarse"
    shutil.copytree(survey_flow, coarse)
    meta = json.loads((coarse / "posterior.json").read_text())
    meta["photometric_noise"]["sigma_min"] = 0.1
    (coarse / "posterior.json").write_text(json.dumps(meta))
    assert plan_catalog(path, coarse, [tmp_path / "c.parquet"],
                        CatalogOptions(n_samples=20)).spec.options.error_floor == 0.1
    assert plan.spec.options.min_snr == pytest.approx(2.5 / np.log(10.0))  # sigma_max 1 mag
    assert plan_catalog(path, survey_flow, [tmp_path / "p0.parquet"],
                        CatalogOptions(n_samples=20, min_snr=0)).spec.options.min_snr == 0
    with pytest.raises(ConfigError, match="cannot mask bands"):
        plan_catalog(path, repo_root / "checkpoints" / "dirichlet_nsa", [tmp_path / "r.parquet"],
                     CatalogOptions(n_samples=20, min_snr=1.0))
    with pytest.raises(ConfigError, match="min_snr"):
        CatalogOptions(min_snr=-1.0)
    with pytest.raises(ConfigError, match="not a photometric checkpoint"):
        plan_catalog(path, repo_root / "checkpoints" / "delayed_tau_spectra", [tmp_path / "q.parquet"])


def test_grid_masses_recover_the_truth_of_prior_draws(physical):
    """The brute-force estimator on galaxies drawn from its own prior: unbiased, with the scatter of ugriz."""
    from sedscale.validate.prior_masses import grid_masses

    rng = np.random.default_rng(10)
    z = rng.uniform(0.03, 0.05, 60)
    theta = physical.prior.sample(60, rng, z)
    flux = physical.photometry(theta, z)
    sigma = 0.03 * flux
    noisy = flux + sigma * rng.standard_normal(flux.shape)
    ivar = 1 / sigma**2
    ivar[:5, 0] = 0.0  # a missing u band is left out of the chi2
    est = grid_masses(physical, noisy, ivar, z, n_draws=20000, n_bins=2, error_floor=0.0, seed=1)
    d = est - physical.derived(theta, z)["log_mstar_total"]
    assert np.isfinite(est).all()
    assert abs(np.median(d)) < 0.08 and nmad(d) < 0.2


@pytest.mark.slow
def test_shipped_survey_flow_on_real_virgo_galaxies(repo_root, shared_data, tmp_path):
    """The default checkpoint on 1,000 real NSA Virgo galaxies: served, and masses agree with iSEDfit."""
    import fitsio

    virgo = shared_data / "nsa_virgo_isedfit" / "nsa_mstar.virgo.fits"
    ref = fitsio.read(str(virgo), columns=["MSTAR_50"])["MSTAR_50"][:1000].astype(float)
    df = read_catalog(virgo, ColumnMapping.from_pairs(["z=Z", "flux=MAGGIES[2:7]", "flux_ivar=IVARMAGGIES[2:7]",
                                                       "flux_unit=maggy", "id=ISEDFIT_ID"])).iloc[:1000]
    path = tmp_path / "virgo.parquet"
    write_canonical(df, path)
    plan = plan_catalog(path, repo_root / "checkpoints" / "dirichlet_survey", [tmp_path / "post.parquet"],
                        CatalogOptions(n_samples=200))
    summary = run_catalog(plan)
    assert summary.status_counts.get("ok", 0) >= 970
    out = pd.read_parquet(tmp_path / "post.parquet")
    res = compare_masses(out, ref)
    assert abs(res.overall["median"]) <= 0.10 and res.overall["nmad"] <= 0.15
    assert all(abs(r["median"]) <= 0.15 for r in res.by["g-r"] if r["n"] >= 20)


def test_nebular_emission_is_part_of_the_run_identity(tmp_path):
    """A run with nebular lines is another dataset; its option survives the round trip through strings."""
    from sedscale.simulate import SimulationConfig, plan_run

    base = dict(model="dirichlet", n=10, out=tmp_path / "a", z_range=Z_RANGE, noise_model="none",
                model_options={"prior": "physical"})
    plain = plan_run(SimulationConfig(**base))
    lines = plan_run(SimulationConfig(**dict(base, model_options={"prior": "physical", "nebular_log_u": -2.5})))
    assert plain.config_hash != lines.config_hash
    model = get_model("dirichlet", prior="physical", nebular_log_u="-2.5")
    assert model.nebular_log_u == -2.5
    z = np.full(4, 0.08)
    theta = model.prior.sample(4, np.random.default_rng(11), z)
    theta[:, 1] = 0.05  # a real young population (frac_u1: 0-30 Myr)
    neb = model.photometry(theta, z)
    bare = get_model("dirichlet", prior="physical").photometry(theta, z)
    assert np.all(neb >= bare * (1 - 1e-6)) and np.any(neb > bare * 1.01)


def test_validation_report_of_a_band_masked_flow(survey_flow, tmp_path):
    """run_validate draws its test set with the checkpoint's survey noise and ranks derived log M* and SFR too."""
    from sedscale.validate.report import ValidationConfig, run_validation

    info = run_validation(ValidationConfig(flow=str(survey_flow), out=str(tmp_path / "val"), n_test=120,
                                           n_samples=100, strata_bins=2), log=lambda line: None)
    assert set(info["passed"]) >= {"log_mstar_total", "log_sfr_100myr", "log_mass"}
    strata = pd.read_parquet(tmp_path / "val" / "strata.parquet")
    assert {"z", "n_bands", "snr_r"} <= set(strata["stratum"])
    assert strata.loc[strata["stratum"] == "z", "low"].min() == pytest.approx(0.002)
    with pytest.raises(ConfigError, match="MCMC"):
        run_validation(ValidationConfig(flow=str(survey_flow), out=str(tmp_path / "v2"), mcmc=1))
