"""Physics of the batched forward models, and agreement with the slow reference.

The reference (sedscale.models.reference) integrates the SFH on a fine time
grid against the SSPs at full spectral resolution and integrates through the
filter curves directly; the batched engine must agree to <= 0.01 mag.
"""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sedscale.errors import MissingDataError, ParameterError
from sedscale.models import get_model, simplex_to_unit_cube, unit_cube_to_simplex
from sedscale.models.reference import reference_photometry
from sedscale.sps.rebin import rebin_flux

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROVABGS_DIR = Path(os.environ.get("SEDSCALE_PROVABGS_DIR", SHARED / "provabgs"))


@pytest.fixture(scope="module")
def dirichlet():
    return get_model("dirichlet")


@pytest.fixture(scope="module")
def provabgs():
    return get_model("provabgs")  # the NMF tables shipped in the package


@pytest.fixture(scope="module")
def delayed_tau():
    return get_model("delayed_tau")


def _theta(model, **values):
    """A prior draw with some parameters set by name."""
    theta = model.prior.sample(1, np.random.default_rng(3))
    for name, value in values.items():
        theta[:, model.param_names.index(name)] = value
    return theta


def _mags(flux):
    return 22.5 - 2.5 * np.log10(flux)


# ---------------------------------------------------------------- priors
def test_unit_cube_transform_is_exact_inverse():
    rng = np.random.default_rng(0)
    u = rng.random((1000, 6))
    x = unit_cube_to_simplex(u)
    assert np.allclose(x.sum(axis=1), 1) and np.all(x >= 0)
    np.testing.assert_allclose(simplex_to_unit_cube(x), u, atol=1e-9)


def test_unit_cube_transform_gives_flat_dirichlet():
    # Dirichlet(1,1,1,1): each marginal is Beta(1, 3), mean 1/4, variance 3/80.
    x = unit_cube_to_simplex(np.random.default_rng(1).random((200_000, 3)))
    np.testing.assert_allclose(x.mean(axis=0), 0.25, atol=3e-3)
    np.testing.assert_allclose(x.var(axis=0), 3 / 80, atol=1e-3)


def test_prior_is_a_torch_distribution_for_sbi(dirichlet):
    dist = dirichlet.prior.torch_distribution()
    sample = dist.sample((5,))
    assert sample.shape == (5, dirichlet.prior.dim)
    assert torch.isfinite(dist.log_prob(sample)).all()
    outside = sample.clone()
    outside[0, 0] = 20.0
    assert dist.log_prob(outside)[0] == -np.inf
    assert np.all(dirichlet.prior.in_support(sample.numpy()))


def test_provabgs_prior_matches_sedflow(provabgs):
    prior = provabgs.prior
    assert prior.dim == 11
    assert prior.low[prior.names.index("log_mass")] == 7.0 and prior.high[0] == 12.5
    lo, hi = prior.low[prior.names.index("log_gamma1")], prior.high[prior.names.index("log_gamma1")]
    assert (10**lo, 10**hi) == pytest.approx((4.5e-5, 1.5e-2))
    assert (prior.low[prior.names.index("t_burst")], prior.high[prior.names.index("t_burst")]) == (0.01, 13.27)
    beta = provabgs.physical(prior.sample(10, np.random.default_rng(0)))["beta"]
    assert beta.shape == (10, 4) and np.allclose(beta.sum(axis=1), 1)


# ---------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "change, match",
    [
        ({"log_mass": 13.0}, "log_mass"),
        ({"tau_ism": np.nan}, "tau_ism"),
        ({"n_dust": -5.0}, "n_dust"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(dirichlet, change, match):
    with pytest.raises(ParameterError, match=match):
        dirichlet.photometry(_theta(dirichlet, **change), np.array([0.05]))


def test_bad_shapes_and_redshifts(dirichlet):
    with pytest.raises(ParameterError, match="shape"):
        dirichlet.photometry(np.zeros((3, 4)), np.full(3, 0.05))
    theta = _theta(dirichlet)
    with pytest.raises(ParameterError, match="z"):
        dirichlet.photometry(theta, np.array([-0.1]))
    with pytest.raises(ParameterError, match="z"):
        dirichlet.photometry(np.repeat(theta, 2, axis=0), np.array([0.05]))


def test_provabgs_tables_ship_with_the_package_and_a_folder_overrides_them(monkeypatch, tmp_path):
    from sedscale.models.provabgs import NMF_FILES, PACKAGED_NMF_DIR, provabgs_data_dir

    monkeypatch.delenv("SEDSCALE_PROVABGS_DIR", raising=False)
    assert provabgs_data_dir() == PACKAGED_NMF_DIR
    assert "MIT License" in (PACKAGED_NMF_DIR / "LICENSE").read_text()
    if (PROVABGS_DIR / "sfh_t_int.txt").is_file():  # the shipped copy is the PROVABGS repository's, unchanged
        for name in NMF_FILES:
            assert (PACKAGED_NMF_DIR / name).read_bytes() == (PROVABGS_DIR / name).read_bytes()
    with pytest.raises(MissingDataError, match="NMF_2basis_SFH_components_nowgt_lin_Nc4.txt"):
        get_model("provabgs", nmf_dir=tmp_path)
    monkeypatch.setenv("SEDSCALE_PROVABGS_DIR", str(tmp_path))
    with pytest.raises(MissingDataError, match="sfh_t_int.txt"):
        get_model("provabgs")


def test_unknown_model():
    with pytest.raises(ParameterError, match="unknown model"):
        get_model("bagpipes")


# ---------------------------------------------------------- known limits
def test_single_burst_reproduces_the_ssp(provabgs):
    # All mass in a burst at a lookback time that is a node of both grids, no dust.
    t_burst = 1.0
    theta = _theta(provabgs, f_burst=1.0, t_burst=t_burst, tau_bc=0.0, tau_ism=0.0, log_mass=10.0)
    wave, lum = provabgs.rest_spectrum(theta, np.array([0.05]), dtype=np.float64)
    grid = provabgs.ssp
    z_burst = provabgs.metallicity(provabgs.physical(theta)["gamma"], np.array([[t_burst]]))[0, 0]
    ssp = rebin_flux(grid.wavelength, grid.spectrum(t_burst * 1e9, z_burst), provabgs.library().wave_edges)
    np.testing.assert_allclose(lum[0], 1e10 * ssp, rtol=1e-6)


def test_constant_sfh_integrates_to_the_mass(dirichlet):
    z = np.array([0.05])
    tage = dirichlet.tage_yr(z)[0]
    from sedscale.models.dirichlet import dirichlet_bin_edges

    widths = np.diff(dirichlet_bin_edges(np.array([tage]))[0])
    u = simplex_to_unit_cube(widths / widths.sum())
    theta = _theta(dirichlet, log_mass=10.3)
    theta[0, 1:7] = u
    d = dirichlet.derived(theta, z)
    assert d["log_mformed"][0] == pytest.approx(10.3, abs=1e-9)
    expected_sfr = 10**10.3 / tage
    assert d["sfr_100myr"][0] == pytest.approx(expected_sfr, rel=1e-6)
    assert d["sfr_1gyr"][0] == pytest.approx(expected_sfr, rel=1e-6)
    assert d["age_mw"][0] == pytest.approx(tage / 2 / 1e9, rel=1e-6)
    assert d["log_mstar"][0] < 10.3


@pytest.mark.parametrize("name", ["dirichlet", "delayed_tau"])
def test_derived_properties_are_consistent(name, request):
    model = request.getfixturevalue(name)
    rng = np.random.default_rng(5)
    theta = model.prior.sample(500, rng)
    z = rng.uniform(0.01, 0.2, 500)
    d = model.derived(theta, z)
    np.testing.assert_allclose(d["log_mformed"], theta[:, 0], atol=1e-9)
    assert np.all(d["log_mstar"] < d["log_mformed"])
    assert np.all(d["log_mstar"] > d["log_mformed"] - 0.6)
    assert np.all(d["age_mw"] * 1e9 <= model.tage_yr(z) + 1)
    assert np.all(d["sfr_100myr"] >= 0) and np.all(d["sfr_1gyr"] >= 0)


def test_binned_derived_properties_equal_the_node_weights(dirichlet):
    """The closed-form bin integrals (the default for dirichlet) reproduce the general node-weight path."""
    rng = np.random.default_rng(7)
    n = 3000
    theta = dirichlet.prior.sample(n, rng)
    theta[:40, 1:7] = rng.integers(0, 2, (40, 6))  # all mass in one bin, or bins empty
    theta[40:60, 7] = dirichlet.prior.low[7]
    theta[60:80, 7] = dirichlet.prior.high[7]
    # Runs of rows sharing z (a galaxy's samples) and rows each with their own z.
    z = np.concatenate([np.repeat(rng.uniform(0.001, 0.98, 4), 500), rng.uniform(0.001, 0.98, n - 2000)])
    fast = dirichlet.derived(theta, z)
    nodes = dirichlet.derived(theta, z, method="nodes")
    assert list(fast) == list(nodes)
    for name in ("log_mstar", "log_mstar_total", "log_mformed"):
        np.testing.assert_allclose(fast[name], nodes[name], rtol=0, atol=1e-9, err_msg=name)
    for name in ("sfr_100myr", "sfr_1gyr", "z_mw", "age_mw", "tau_bc", "tau_ism"):
        np.testing.assert_allclose(fast[name], nodes[name], rtol=1e-9, atol=1e-300, err_msg=name)
    with pytest.raises(ParameterError, match="method"):
        dirichlet.derived(theta[:2], z[:2], method="fast")


def test_provabgs_derived(provabgs):
    rng = np.random.default_rng(6)
    theta = provabgs.prior.sample(300, rng)
    z = rng.uniform(0.01, 0.1, 300)
    d = provabgs.derived(theta, z)
    np.testing.assert_allclose(d["log_mformed"], theta[:, 0], atol=1e-9)
    assert np.all(d["log_mstar"] < d["log_mformed"])
    from sedscale.models.provabgs import Z_MAX, Z_MIN

    assert np.all((d["z_mw"] >= Z_MIN * 0.999) & (d["z_mw"] <= Z_MAX * 1.001))


@pytest.mark.parametrize("name", ["dirichlet", "delayed_tau"])
def test_dust_never_brightens_and_zero_dust_is_no_dust(name, request):
    model = request.getfixturevalue(name)
    rng = np.random.default_rng(7)
    theta = model.prior.sample(200, rng)
    z = np.full(200, 0.05)
    dust_names = [n for n in ("tau_bc", "tau_ism", "tau_v") if n in model.param_names]
    clean = theta.copy()
    for n in dust_names:
        clean[:, model.param_names.index(n)] = model.prior.low[model.param_names.index(n)]
    _, dusty = model.rest_spectrum(theta, z, dtype=np.float64)
    _, undusty = model.rest_spectrum(clean, z, dtype=np.float64)
    assert np.all(dusty <= undusty * (1 + 1e-9))
    if "n_dust" in model.param_names:
        # With zero optical depth the curve's slope must not matter.
        other = clean.copy()
        other[:, model.param_names.index("n_dust")] = rng.uniform(-2, 1, 200)
        _, again = model.rest_spectrum(other, z, dtype=np.float64)
        np.testing.assert_allclose(again, undusty, rtol=1e-12)


def test_flux_scales_with_mass_and_dims_with_redshift(dirichlet):
    theta = np.repeat(_theta(dirichlet, log_mass=9.0), 3, axis=0)
    theta[1, 0] = 10.0
    flux = dirichlet.photometry(theta, np.array([0.05, 0.05, 0.1]))
    np.testing.assert_allclose(flux[1] / flux[0], 10.0, rtol=1e-5)
    assert np.all(flux[2] < flux[0])


def test_colours_redden_with_age_and_dust(dirichlet):
    from sedscale.models.priors import simplex_to_unit_cube as to_cube

    young = np.array([[1 - 6e-6] + [1e-6] * 6])
    old = np.array([[1e-6] * 6 + [1 - 6e-6]])
    theta = np.repeat(_theta(dirichlet, tau_bc=0.0, tau_ism=0.0, n_dust=0.0, log_zsol=0.0), 3, axis=0)
    theta[0, 1:7] = to_cube(young)
    theta[1, 1:7] = to_cube(old)
    theta[2, 1:7] = to_cube(old)
    theta[2, dirichlet.param_names.index("tau_ism")] = 1.0
    mags = _mags(dirichlet.photometry(theta, np.full(3, 0.05)))
    g_r = mags[:, 1] - mags[:, 2]
    assert g_r[0] < g_r[1] < g_r[2]
    assert 0.6 < g_r[1] < 1.0  # an old solar-metallicity population (NSA red sequence: g-r ~ 0.8)


# ------------------------------------------------- batched vs reference
@pytest.mark.parametrize(
    "name, n",
    [("provabgs", 1000), ("dirichlet", 300), ("delayed_tau", 300)],
)
@pytest.mark.slow
def test_batched_model_matches_slow_reference(name, n, request):
    model = request.getfixturevalue(name)
    rng = np.random.default_rng(11)
    theta = model.prior.sample(n, rng)
    z = rng.uniform(0.01, 0.3, n)
    fast = model.photometry(theta, z)
    ref = np.array([reference_photometry(model, theta[i], z[i]) for i in range(n)])
    dmag = np.abs(_mags(fast) - _mags(ref))
    assert dmag.max() <= 0.01, f"max |dmag| = {dmag.max():.4f} per band {dmag.max(axis=0)}"
