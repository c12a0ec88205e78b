"""Photometric (SEDflow) and fractional (DIGS) noise models, fitted on the real NSA rows."""
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sedscale.errors import ConfigError, MissingDataError, ParameterError
from sedscale.io import read_nsa
from sedscale.observe.layout import FLUX_COLUMNS, FLUX_SIGMA_COLUMNS, MAG_COLUMNS, MAG_SIGMA_COLUMNS
from sedscale.observe.noise import (
    REASON_NONPOSITIVE,
    REASON_OK,
    REASON_RANGE,
    REASON_SIGMA,
    BandNoise,
    FractionalGaussianNoise,
    PhotometricNoiseModel,
    default_noise_model_path,
    fit_nsa_noise_model,
    fit_photometric_noise,
    load_default_noise_model,
    reference_sigma_mag,
    select_reference_rows,
)
from sedscale.units import POGSON

REPO = Path(__file__).resolve().parents[1]
NSA_DIR = REPO.parent / "shared" / "data" / "nsa_lcs"
NSA_FILES = sorted(NSA_DIR.glob("*.fits"))
BANDS = "ugriz"

needs_nsa = pytest.mark.skipif(not NSA_FILES, reason=f"real NSA rows not found in {NSA_DIR}")


@pytest.fixture(scope="module")
def nsa():
    if not NSA_FILES:
        pytest.skip(f"real NSA rows not found in {NSA_DIR}")
    return read_nsa(NSA_FILES)


@pytest.fixture(scope="module")
def fitted(nsa):
    return fit_photometric_noise(nsa)


def _catalog_arrays(df):
    ref = select_reference_rows(df)
    flux = ref[[f"flux_{b}" for b in BANDS]].to_numpy()
    ivar = ref[[f"flux_ivar_{b}" for b in BANDS]].to_numpy()
    return flux, reference_sigma_mag(flux, ivar)


def _toy_model(median, spread, f_min=1.0, f_max=1000.0, n_bands=2):
    """A model with constant p(sigma_mag) = N(median, spread) on [f_min, f_max]."""
    edges = np.geomspace(f_min, f_max, 3)
    bands = [
        BandNoise(b, edges, [median, median], [spread, spread], [50, 50], f_min, f_max) for b in "gr"[:n_bands]
    ]
    return PhotometricNoiseModel(bands=tuple(bands), min_count=10)


def test_reproduces_the_observed_median_sigma_per_band(nsa, fitted):
    flux, observed = _catalog_arrays(nsa)
    sampled = fitted.sample_sigma_mag(flux, np.random.default_rng(0))
    obs_med, mod_med = np.median(observed, axis=0), np.median(sampled, axis=0)
    np.testing.assert_allclose(mod_med, obs_med, rtol=0.10)
    # The spread matters too: the model's 16-84 range covers most of the observed one.
    obs_hi, mod_hi = np.percentile(observed, 84, axis=0), np.percentile(sampled, 84, axis=0)
    np.testing.assert_allclose(mod_hi - mod_med, obs_hi - obs_med, rtol=0.5)


def test_fit_ignores_unusable_rows(nsa, fitted):
    bad = nsa.head(4).copy()
    bad.loc[bad.index[0], "flux_g"] = -3.0
    bad.loc[bad.index[1], "flux_ivar_r"] = 0.0
    bad.loc[bad.index[2], "z"] = np.nan
    bad.loc[bad.index[3], "flux_i"] = np.nan
    bad["id"] = -bad["id"]
    refit = fit_photometric_noise(pd.concat([nsa, bad], ignore_index=True))
    assert refit.n_galaxies == fitted.n_galaxies
    assert refit.to_dict() == fitted.to_dict()


def test_json_round_trip(tmp_path, fitted):
    path = fitted.to_json(tmp_path / "noise.json")
    back = PhotometricNoiseModel.from_json(path)
    assert back.to_dict() == fitted.to_dict()
    flux = np.array([[30.0, 100.0, 200.0, 300.0, 350.0]] * 50)
    a = fitted.apply(flux, np.random.default_rng(5))
    b = back.apply(flux, np.random.default_rng(5))
    np.testing.assert_array_equal(a.flux, b.flux)
    assert not list(tmp_path.glob(".*tmp")), "atomic write left a temp file"


@needs_nsa
def test_shipped_model_equals_a_fresh_fit():
    shipped = load_default_noise_model()
    assert shipped.band_names == tuple(BANDS)
    with default_noise_model_path().open("rb") as fh:
        assert len(fh.read()) < 16_000
    fresh = fit_nsa_noise_model(
        NSA_FILES,
        n_bins=shipped.bands[0].counts.size,
        min_count=shipped.min_count,
        min_snr=shipped.min_snr,
    )
    assert fresh.n_galaxies == shipped.n_galaxies
    for s, f in zip(shipped.bands, fresh.bands):
        np.testing.assert_array_equal(s.counts, f.counts)
        for name in ("bin_edges", "median", "spread"):
            np.testing.assert_allclose(getattr(s, name), getattr(f, name), rtol=1e-12, equal_nan=True)
        assert (s.f_min, s.f_max) == pytest.approx((f.f_min, f.f_max), rel=1e-12)


@needs_nsa
def test_regeneration_command_reproduces_the_shipped_file(tmp_path):
    shipped = json.loads(default_noise_model_path().read_text())
    argv = shlex.split(shipped["command"])
    assert argv[0] == "bin/fit_noise_model"
    out = tmp_path / "noise.json"
    argv[argv.index("-o") + 1] = str(out)
    result = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    regenerated = json.loads(out.read_text())
    # Only the recorded command differs (it names the other output file); floats agree to rounding
    # (bin edges from exp/log differ in the last bit between CPUs' SIMD paths).
    del regenerated["command"], shipped["command"]
    assert _approx_equal(regenerated, shipped)


def _approx_equal(a, b) -> bool:
    """Equal JSON values, floats to 1e-12 relative (None, ints and strings exactly)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_approx_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_approx_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12)
    return a == b


def test_fit_script_reports_errors_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "bin/fit_noise_model", str(tmp_path / "missing.fits"), "-o", str(tmp_path / "x.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Exit status 2 and one line, as every sedscale tool (sedscale fit-noise-model is the same function).
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "fit_noise_model: error:" in result.stderr and "missing.fits" in result.stderr


def test_apply_flags_out_of_range_and_nonpositive_true_flux(fitted):
    lo, hi = fitted.flux_range[:, 0], fitted.flux_range[:, 1]
    good = np.sqrt(lo * hi)
    flux = np.tile(good, (5, 1))
    flux[1, 0] = hi[0] * 1.01  # u brighter than any NSA galaxy
    flux[2, 3] = lo[3] * 0.99  # i fainter than any NSA galaxy
    flux[3, 2] = 0.0
    flux[4, 4] = -5.0
    out = fitted.apply(flux, np.random.default_rng(1))
    assert list(out.reason) == [REASON_OK] + [REASON_RANGE] * 4
    assert list(out.valid) == [True, False, False, False, False]
    assert np.isfinite(out.mag[0]).all() and np.isnan(out.mag[1:]).all()
    assert np.isnan(out.flux[1:]).all() and np.isnan(out.mag_sigma[1:]).all()


def test_apply_flags_negative_sigma():
    out = _toy_model(median=-0.1, spread=0.0).apply(np.full((4, 2), 10.0), np.random.default_rng(0))
    assert set(out.reason) == {REASON_SIGMA} and not out.valid.any()
    out = _toy_model(median=0.0, spread=0.05).apply(np.full((400, 2), 10.0), np.random.default_rng(0))
    # sigma_mag ~ N(0, 0.05): both bands positive in ~1/4 of the rows.
    assert set(out.reason) == {REASON_OK, REASON_SIGMA}
    assert 0.15 < out.valid.mean() < 0.35
    assert (out.mag_sigma[out.valid] > 0).all()


def test_apply_noise_formula_and_nonpositive_noisy_flux():
    # sigma_mag = 5 mag exactly: sigma_f = 4.6 f, so the noisy flux is often <= 0.
    model = _toy_model(median=5.0, spread=0.0)
    flux = np.tile([10.0, 20.0], (1000, 1))
    out = model.apply(flux, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    rng.standard_normal(flux.shape)  # the sigma draws come first
    expected = flux + 5.0 * flux / POGSON * rng.standard_normal(flux.shape)
    nonpositive = (expected <= 0).any(axis=1)
    np.testing.assert_array_equal(out.reason == REASON_NONPOSITIVE, nonpositive)
    assert 0.3 < nonpositive.mean() < 0.9
    np.testing.assert_allclose(out.flux[~nonpositive], expected[~nonpositive])
    np.testing.assert_allclose(out.flux_sigma[~nonpositive], 5.0 * flux[~nonpositive] / POGSON)
    np.testing.assert_allclose(out.mag[~nonpositive], 22.5 - 2.5 * np.log10(expected[~nonpositive]))


def test_apply_is_deterministic_and_statistically_sound(fitted):
    flux = np.tile([40.0, 150.0, 300.0, 400.0, 500.0], (20_000, 1))
    a = fitted.apply(flux, np.random.default_rng(42))
    b = fitted.apply(flux, np.random.default_rng(42))
    c = fitted.apply(flux, np.random.default_rng(43))
    for name in ("flux", "flux_sigma", "mag", "mag_sigma", "valid", "reason"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.flux, c.flux)
    assert a.valid.all()
    pulls = (a.flux - flux) / a.flux_sigma
    np.testing.assert_allclose(pulls.mean(axis=0), 0.0, atol=0.03)
    np.testing.assert_allclose(pulls.std(axis=0), 1.0, atol=0.03)
    median, spread = fitted.sigma_parameters(flux[:1])
    np.testing.assert_allclose(a.mag_sigma.mean(axis=0), median[0], rtol=0.02)
    np.testing.assert_allclose(a.mag_sigma.std(axis=0), spread[0], rtol=0.05)
    np.testing.assert_allclose(a.flux_sigma, a.mag_sigma * flux / POGSON)


def test_as_columns_follow_the_layout(fitted):
    out = fitted.apply(np.tile([40.0, 150.0, 300.0, 400.0, 500.0], (3, 1)), np.random.default_rng(0))
    cols = out.as_columns()
    assert list(cols) == [*FLUX_COLUMNS, *FLUX_SIGMA_COLUMNS, *MAG_COLUMNS, *MAG_SIGMA_COLUMNS]
    np.testing.assert_array_equal(cols["mag_r"], out.mag[:, 2])


def test_bad_inputs_are_clear_errors(tmp_path, fitted):
    with pytest.raises(ParameterError, match="shape"):
        fitted.apply(np.ones((3, 4)), np.random.default_rng(0))
    with pytest.raises(MissingDataError):
        PhotometricNoiseModel.from_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="JSON"):
        PhotometricNoiseModel.from_json(tmp_path / "bad.json")
    d = fitted.to_dict()
    (tmp_path / "other.json").write_text(json.dumps({**d, "kind": "something else"}))
    with pytest.raises(ConfigError, match="kind"):
        PhotometricNoiseModel.from_json(tmp_path / "other.json")
    del d["per_band"]["r"]
    (tmp_path / "noband.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="'r'"):
        PhotometricNoiseModel.from_json(tmp_path / "noband.json")
    with pytest.raises(ConfigError, match="populated"):
        BandNoise("u", [1.0, 2.0], [np.nan], [np.nan], [0], 1.0, 2.0)


def test_fractional_gaussian_noise():
    flux = np.abs(np.random.default_rng(0).normal(1.0, 0.3, size=(2000, 138))) + 0.1
    noise = FractionalGaussianNoise()
    noisy, sigma = noise.apply(flux, np.random.default_rng(7))
    again, _ = noise.apply(flux, np.random.default_rng(7))
    np.testing.assert_array_equal(noisy, again)
    np.testing.assert_allclose(sigma, 0.05 * flux)
    pulls = (noisy - flux) / sigma
    assert abs(pulls.mean()) < 0.01 and abs(pulls.std() - 1.0) < 0.01
    with pytest.raises(ParameterError):
        FractionalGaussianNoise(fraction=0.0)
    with pytest.raises(ParameterError, match="shape"):
        noise.apply(flux[0], np.random.default_rng(0))
