"""The spectral model for real galaxies: stellar velocity dispersion, calibration polynomial, error floor,
emission-line mask, and DESI coadd spectra on the DIGS grid."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import fitsio
import numpy as np
import pyarrow.parquet as pq
import pytest

from sedscale.errors import ConfigError, ParameterError
from sedscale.infer.spectra import SpectralLikelihood, read_spectral_inputs
from sedscale.io.desi import TELLURIC_BANDS_AA, _merge_arms, read_desi_coadd, resolution_sigma_pixels
from sedscale.io.sdss import SpectrumFormatError
from sedscale.models import get_model
from sedscale.observe.spectra import DIGS_WAVELENGTH, BroadenedSpectrumOperator, SpectrumOperator
from sedscale.observe.spectral_noise import (
    EMISSION_LINES_AA,
    SPECTRAL_NOISE_PRESETS,
    SpectralNoiseModel,
    calibration_factor,
)
from sedscale.simulate import SimulationConfig, read_simulation_metadata, run_simulation

DESI_FILES = ("coadd-4-80613-thru20210324.fits", "redrock-4-80613-thru20210324.fits",
              "coadd-special-dark-27247.fits", "redrock-special-dark-27247.fits")


@pytest.fixture(scope="module")
def desi_dir(tmp_path_factory) -> Path:
    """The two DESI example coadds (and redrock files) of the fastspecfit package's test data."""
    spec = importlib.util.find_spec("fastspecfit")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("DESI example coadds come with fastspecfit's test data: pip install --no-deps fastspecfit==3.6.1")
    data = Path(list(spec.submodule_search_locations)[0]) / "test" / "data"
    out = tmp_path_factory.mktemp("desi")
    for name in DESI_FILES:
        if not (data / name).is_file():
            pytest.skip(f"{data / name} not found in the installed fastspecfit")
        shutil.copy(data / name, out / name)
    return out


@pytest.fixture(scope="module")
def model():
    return get_model("dirichlet", prior="physical", nebular_log_u=-2.0)


@pytest.fixture(scope="module")
def draws(model):
    rng = np.random.default_rng(4)
    z = np.full(12, 0.05)
    return model.prior.sample(12, rng, z), z


def test_broadening_is_exact_at_nodes_and_close_between(model, draws):
    theta, z = draws
    op = BroadenedSpectrumOperator()
    for sigma_star, tol in ((0.0, 1e-12), (100.0, 1e-12), (125.0, 5e-3), (225.0, 5e-3), (400.0, 1e-12)):
        got = op.model_spectra(model, theta, z, np.full(z.size, sigma_star), dtype=np.float64)
        exact = SpectrumOperator(float(np.hypot(350.0, sigma_star))).model_spectra(model, theta, z, dtype=np.float64)
        assert np.max(np.abs(got / exact - 1)) < tol, sigma_star
    # The dispersion matters at absorption features: Ca H+K and the 4000 A break elements move by > 0.1%.
    hk = (DIGS_WAVELENGTH > 3900) & (DIGS_WAVELENGTH < 4000)
    narrow, broad = (op.model_spectra(model, theta, z, np.full(z.size, s), dtype=np.float64) for s in (0.0, 300.0))
    assert np.max(np.abs(broad[:, hk] / narrow[:, hk] - 1)) > 1e-3
    with pytest.raises(ParameterError, match="sigma_star must lie in"):
        op.model_spectra(model, theta, z, np.full(z.size, 450.0))


def test_velocity_dispersion_is_drawn_stored_and_part_of_the_identity(tmp_path):
    base = dict(model="delayed_tau", n=60, seed=2, partition_size=30, observable="spectrum")
    run_simulation(SimulationConfig(out=tmp_path / "a", sigma_star_max=300.0, **base))
    run_simulation(SimulationConfig(out=tmp_path / "b", **base))
    table = pq.read_table(tmp_path / "a").to_pandas()
    assert table["sigma_star"].between(0, 300).all() and table["sigma_star"].std() > 50
    meta_a = read_simulation_metadata(sorted((tmp_path / "a").glob("*.parquet"))[0])
    meta_b = read_simulation_metadata(sorted((tmp_path / "b").glob("*.parquet"))[0])
    assert meta_a["sigma_star_kms"] == [0.0, 300.0] and "sigma_star_kms" not in meta_b
    assert meta_a["config_hash"] != meta_b["config_hash"]
    # Same parameters and redshifts, broader spectra (the third stream draws sigma_star).
    other = pq.read_table(tmp_path / "b").to_pandas()
    assert np.allclose(table["log_mass"], other["log_mass"]) and "sigma_star" not in other
    with pytest.raises(ConfigError, match="applies to spectra"):
        SimulationConfig(out=tmp_path / "c", model="delayed_tau", n=10, sigma_star_max=100.0)
    with pytest.raises(ConfigError, match="sigma_star_max must be in"):
        SimulationConfig(out=tmp_path / "c", sigma_star_max=900.0, **{**base, "n": 10})


def test_real_noise_masks_lines_floors_errors_and_tilts_the_calibration():
    noise = SPECTRAL_NOISE_PRESETS["real"]
    lines = noise.line_elements()
    near = np.min(np.abs(np.log(DIGS_WAVELENGTH[:, None] / EMISSION_LINES_AA[None, :])), axis=1) * 299792.458
    assert np.array_equal(lines, near < noise.line_mask_kms) and 10 <= lines.sum() <= 25
    assert not (noise.observable_elements() & lines).any()
    spec = np.tile(1e8 * (DIGS_WAVELENGTH / 5500.0) ** -1.0, (4000, 1))
    noisy = noise.apply(spec, np.random.default_rng(1))
    assert not noisy.good[:, lines].any()
    # The floor: no element is told an uncertainty below 2% of its (noisy) flux.
    ok = noisy.good
    assert np.all(noisy.sigma[ok] >= 0.02 * np.abs(noisy.flux[ok]) * (1 - 1e-5))
    # Calibration: high-S/N spectra scatter around the truth by a few per cent at the ends of the grid.
    high = np.nanmedian(np.where(ok, noisy.flux / noisy.sigma, np.nan), axis=1) > 30
    ratio = np.where(ok, noisy.flux / spec, np.nan)[high]
    blue = np.nanmedian(ratio[:, 5:15], axis=1)
    assert 0.02 < np.nanstd(blue) < 0.08
    # Coverage reaches both DESI's blue end and an SDSS red end, never beyond what the model observes.
    assert noisy.good[:, 0].mean() > 0.3 and noisy.good[:, -1].mean() < 0.3


def test_calibration_is_solved_exactly_and_shrinks_to_its_prior():
    noise = SPECTRAL_NOISE_PRESETS["real"]
    model = np.tile(1e8 * (DIGS_WAVELENGTH / 5500.0) ** 0.5, (3, 1))
    coeff = np.array([[0.03, -0.02], [0.0, 0.05], [-0.04, 0.01]])
    data = model * calibration_factor(coeff, DIGS_WAVELENGTH)
    good = np.ones_like(model, dtype=bool)
    fitted = noise.calibrate(model, data, 1e-4 * model, good)
    assert np.allclose(fitted, data, rtol=1e-6)
    # With uninformative data the coefficients stay at their prior mean (0).
    assert np.allclose(noise.calibrate(model, data, 1e6 * model, good), model, rtol=1e-9)
    # Without a calibration term the model comes back unchanged.
    assert SPECTRAL_NOISE_PRESETS["survey"].calibrate(model, data, model, good) is not data


def test_new_noise_options_are_checked_and_round_trip():
    noise = SPECTRAL_NOISE_PRESETS["real"]
    assert SpectralNoiseModel.from_dict(noise.to_dict()) == noise
    # Older sidecars (without the new keys) mean: no floor, no calibration, no line mask.
    old = {k: v for k, v in SPECTRAL_NOISE_PRESETS["survey"].to_dict().items()
           if k not in ("edge_scatter_aa", "line_mask_kms", "calibration_order", "calibration_sigma", "error_floor",
                        "emission_lines_aa")}
    assert SpectralNoiseModel.from_dict(old) == SPECTRAL_NOISE_PRESETS["survey"]
    for bad in ({"calibration_order": 1.5}, {"calibration_order": -1}, {"error_floor": -0.1},
                {"line_mask_kms": float("nan")}, {"emission_lines_aa": (6563.0, -1.0)}):
        with pytest.raises(ConfigError):
            SpectralNoiseModel(**bad)
    # The masked lines travel with the flow: another list masks other elements.
    only_ha = SpectralNoiseModel.from_dict({**noise.to_dict(), "emission_lines_aa": [6562.8]})
    assert only_ha.line_elements().sum() < noise.line_elements().sum() and only_ha != noise
    flux = np.array([[100.0, -50.0, 0.0]])
    assert np.allclose(noise.observed_sigma(flux, np.ones((1, 3))), np.hypot(1.0, [2.0, 1.0, 0.0]))


def test_likelihood_of_a_flow_uses_its_floor_mask_and_broadening(model, draws):
    theta, z = draws
    lik = SpectralLikelihood(SPECTRAL_NOISE_PRESETS["real"], DIGS_WAVELENGTH, (0.0, 350.0))
    assert lik.n_nuisance == 3
    lum = lik.model_spectra(model, theta[:2], z[:2], np.array([100.0, 200.0]))
    good = lik.usable(np.ones_like(lum, dtype=bool))
    assert not good[:, lik.noise.line_elements()].any()
    # A calibrated copy of the model fits to chi2 ~ 0; the uncalibrated model does not, when the data are tilted.
    data = lum * calibration_factor(np.array([[0.04, 0.0], [-0.03, 0.02]]), DIGS_WAVELENGTH)
    sigma = 1e-3 * lum
    assert np.all(lik.chi2(lum, data, sigma, good) < 1e-6 * good.sum(axis=1))
    plain = SpectralLikelihood(SPECTRAL_NOISE_PRESETS["survey"], DIGS_WAVELENGTH)
    assert np.all(plain.chi2(lum, data, sigma, good) > 100 * good.sum(axis=1))


def test_resolution_width_of_gaussian_diagonals():
    offsets = np.arange(5, -6, -1)
    sigma = np.array([0.8, 1.2, 1.6])
    res = np.exp(-0.5 * (offsets[:, None] / sigma[None, :]) ** 2)
    res /= res.sum(axis=0)
    # (the 11 diagonals cut the widest kernel at 3 sigma: its second moment is 0.3% short)
    assert np.allclose(resolution_sigma_pixels(res), sigma, rtol=5e-3)
    assert np.isnan(resolution_sigma_pixels(np.zeros((11, 2)))).all()


def test_overlapping_arms_are_averaged_with_ivar_weights():
    def arm(w0, n, flux, ivar):
        return {"wave": w0 + 0.8 * np.arange(n), "flux": np.full((1, n), flux), "ivar": np.full((1, n), ivar),
                "mask": np.zeros((1, n), dtype=np.int64), "sigma_kms": np.full((1, n), 40.0)}
    merged = _merge_arms({"B": arm(5000.0, 10, 1.0, 1.0), "R": arm(5004.0, 10, 4.0, 3.0)}, 0)
    wave = 10 ** merged["loglam"]
    assert wave.size == 15 and np.all(np.diff(wave) > 0)
    shared = np.isclose(wave, 5004.0) | np.isclose(wave, 5007.2)
    assert np.allclose(merged["flux"][shared], (1.0 * 1 + 4.0 * 3) / 4) and np.allclose(merged["ivar"][shared], 4.0)
    assert np.allclose(merged["flux"][:5], 1.0) and np.allclose(merged["flux"][-5:], 4.0)


def test_desi_coadds_on_the_digs_grid(desi_dir):
    specs = [s for f in sorted(desi_dir.glob("coadd-*.fits")) for s in read_desi_coadd(f, min_good_fraction=0.5)]
    redrock = {int(r["TARGETID"]): float(r["Z"]) for f in sorted(desi_dir.glob("redrock-*.fits"))
               for r in fitsio.read(f, "REDSHIFTS")}
    assert len(specs) == 2 and all(not s.flag for s in specs)
    for s in specs:
        assert s.z == pytest.approx(redrock[int(s.id.removeprefix("desi-"))])
        assert 20.0 < s.sigma_inst_kms < 70.0  # R ~ 2000-5000
        assert np.isfinite(s.flux[s.good]).all() and (s.ivar[s.good] > 0).all()
    by_z = sorted(specs, key=lambda s: s.z)
    # z = 0.0073: the whole grid but the telluric bands; z = 0.369: 9824 A observed is 7175 A rest, so the
    # red 30% is missing.
    assert by_z[0].coverage == 1.0
    telluric = np.zeros(DIGS_WAVELENGTH.size, dtype=bool)
    for lo, hi in TELLURIC_BANDS_AA:
        telluric |= (DIGS_WAVELENGTH * (1 + by_z[0].z) >= lo - 20) & (DIGS_WAVELENGTH * (1 + by_z[0].z) <= hi + 20)
    assert not by_z[0].good[telluric].any() and by_z[0].good[~telluric].mean() > 0.97
    kept = read_desi_coadd(desi_dir / "coadd-special-dark-27247.fits", telluric_bands=())[0]
    assert kept.good_fraction == 1.0
    assert by_z[1].coverage == pytest.approx(np.mean(DIGS_WAVELENGTH * 1.36874 <= 9824), abs=0.02)
    assert by_z[1].median_snr > 20 and by_z[0].median_snr < 10


def test_desi_redshift_problems_are_errors_or_flags(desi_dir, tmp_path):
    coadd = tmp_path / "coadd-special-dark-27247.fits"
    shutil.copy(desi_dir / coadd.name, coadd)
    with pytest.raises(SpectrumFormatError, match="redrock-special-dark-27247.fits: no such redrock file"):
        read_desi_coadd(coadd)
    other = tmp_path / "other.fits"
    shutil.copy(desi_dir / "redrock-4-80613-thru20210324.fits", other)
    (spec,) = read_desi_coadd(coadd, other)
    assert spec.flag and "not in the redrock file" in spec.reason


def test_a_directory_mixes_sdss_and_desi_spectra(desi_dir, shared_data, tmp_path):
    for f in sorted((shared_data / "sdss_spectra").glob("*.fits"))[:2]:
        shutil.copy(f, tmp_path / f.name)
    for name in DESI_FILES:
        shutil.copy(desi_dir / name, tmp_path / name)
    obs = read_spectral_inputs([tmp_path])
    assert len(obs) == 4  # files in name order: coadd-* before ff_spec-*
    assert [i.startswith("desi-") for i in obs.ids] == [True, True, False, False]
    assert obs.good.any(axis=1).all() and np.isfinite(obs.lum[obs.good]).all()


def test_poor_fits_name_the_parameters_at_a_prior_edge(model):
    import pyarrow as pa

    from sedscale.infer.spectra import edge_parameters, flag_poor_fits

    theta = np.tile(0.5 * (model.prior.low + model.prior.high), (3, 1))
    theta[0, 0] = model.prior.low[0]          # log_mass at its floor
    theta[1, 1] = 1.0                         # an SFH coordinate at 1: an ordinary SFH, not an edge
    theta[2, 7] = model.prior.high[7] - 1e-4  # log_zsol at its ceiling
    edges = edge_parameters(theta, model.prior, model.param_names)
    assert list(edges) == ["log_mass=7.00", "", "log_zsol=0.20"]
    table = pa.table({"status": ["ok"] * 3, "reason": [""] * 3})
    flagged = flag_poor_fits(table, np.array([300.0, 100.0, 100.0]), np.full(3, 100), at_edge=edges)
    assert flagged.column("status").to_pylist() == ["out_of_support", "ok", "ok"]
    assert flagged.column("reason").to_pylist()[0] == "poor_fit:chi2/dof=3.00;at_prior_edge:log_mass=7.00"


@pytest.mark.slow
def test_shipped_spectral_flow_fits_sdss_and_desi_spectra(desi_dir, shared_data, repo_root, tmp_path, capsys):
    """bin/run_catalog end to end on real SDSS and DESI spectra with checkpoints/dirichlet_spectra."""
    import pandas as pd

    from sedscale.cli.catalog import main

    flow = repo_root / "checkpoints" / "dirichlet_spectra"
    for name in ("ff_spec-0266-51602-0001.fits", "ff_spec-0266-51602-0526.fits"):
        shutil.copy(shared_data / "sdss_spectra" / name, tmp_path / name)
    for name in DESI_FILES:
        shutil.copy(desi_dir / name, tmp_path / name)
    out = tmp_path / "cat.parquet"
    args = [str(tmp_path), "--flow", str(flow), "--out", str(out), "--cluster", "none", "--best-fit",
            "--n-samples", "200", "--no-progress", "--ignore-mask-bits", "MANYBADCOLUMNS,NEARBADPIXEL"]
    assert main(args) == 0
    cat = pd.read_parquet(out).set_index("id")
    dof = cat["chi2_dof"] - 11 - 3  # parameters, two calibration coefficients, sigma_star
    for sid in ("0266-51602-0001", "0266-51602-0526", "desi-39633345008634465"):
        assert cat.loc[sid, "status"] == "ok", cat.loc[sid, "reason"]
        assert cat.loc[sid, "chi2_best"] / dof[sid] < 2.0
        assert 0.0 <= cat.loc[sid, "bestfit_sigma_star"] <= 350.0
    # An SDSS early-type centre: old and metal-rich, not at the 4 Gyr DIGS edge.
    assert cat.loc["0266-51602-0001", "age_mw_p50"] > 5.0
    # The z = 0.007 DESI dwarf needs less than the prior's smallest mass (10^6) inside its 1.5" fiber: said so.
    dwarf = cat.loc["desi-39089837499744649"]
    assert dwarf["status"] == "out_of_support" and "at_prior_edge:log_mass=6.00" in dwarf["reason"]
    # Without the mask-bit option the 0526 spectrum (MANYBADCOLUMNS over its blue arm) is refused, with the reason.
    out2 = tmp_path / "strict.parquet"
    strict = [a if a != str(out) else str(out2) for a in args[:-2] if a != "--best-fit"]
    assert main(strict) == 0
    assert "masked pixels" in pd.read_parquet(out2).set_index("id").loc["0266-51602-0526", "reason"]
    capsys.readouterr()
