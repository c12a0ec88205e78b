"""DIGS spectral observation operator: grids, smoothing, resampling, model spectra."""
import numpy as np
import pytest

from sedscale.cosmology import get_astropy_cosmology
from sedscale.errors import ParameterError
from sedscale.models import get_model
from sedscale.observe.spectra import (
    DIGS_N_PIXELS,
    DIGS_SIGMA_V_KMS,
    DIGS_WAVELENGTH,
    SPECTRUM_WAVE_EDGES,
    SpectrumOperator,
    observed_flambda,
    pixel_edges,
    resample,
    smooth_velocity,
)
from sedscale.units import C_KMS, MPC_CM

FINE = np.sqrt(SPECTRUM_WAVE_EDGES[1:] * SPECTRUM_WAVE_EDGES[:-1])
FINE_WIDTH = np.diff(SPECTRUM_WAVE_EDGES)
# theta columns: log_mass, log_zsol, tau_v, age (Gyr), log_tau (dex Gyr)
BASE = np.array([10.0, 0.0, 0.5, 1.0, -0.5])
Z_LOW = 0.01


@pytest.fixture(scope="module")
def model():
    return get_model("delayed_tau")


@pytest.fixture(scope="module")
def operator():
    return SpectrumOperator()


@pytest.fixture(scope="module")
def spectra(model, operator):
    """DIGS spectra of ``theta`` rows; the model builds its fine library once."""
    return lambda theta: operator.model_spectra(model, np.atleast_2d(theta), Z_LOW)


def vary(column, values):
    theta = np.tile(BASE, (len(values), 1))
    theta[:, column] = values
    return theta


def red_blue(spec):
    i8000 = np.argmin(np.abs(DIGS_WAVELENGTH - 8000))
    i4000 = np.argmin(np.abs(DIGS_WAVELENGTH - 4000))
    return spec[:, i8000] / spec[:, i4000]


def test_digs_grid():
    assert DIGS_WAVELENGTH.shape == (DIGS_N_PIXELS,) == (138,)
    assert DIGS_WAVELENGTH[0] == pytest.approx(3750.0) and DIGS_WAVELENGTH[-1] == pytest.approx(9500.0)
    dln = np.diff(np.log(DIGS_WAVELENGTH))
    np.testing.assert_allclose(dln, dln[0], rtol=1e-9)
    pixel_kms = np.diff(np.log(FINE)) * C_KMS
    np.testing.assert_allclose(pixel_kms, 50.0, rtol=1e-3)
    assert SPECTRUM_WAVE_EDGES[0] < 3500 and SPECTRUM_WAVE_EDGES[-1] > 10000


def test_smoothing_conserves_integral():
    rng = np.random.default_rng(1)
    flux = rng.random((3, FINE.size)) * np.linspace(1, 5, FINE.size)
    flux[:, :20] += 50.0  # features at the grid ends must not leak out
    flux[:, -20:] += 50.0
    smooth = smooth_velocity(FINE, flux, DIGS_SIGMA_V_KMS)
    np.testing.assert_allclose(smooth @ FINE_WIDTH, flux @ FINE_WIDTH, rtol=1e-10)
    smooth32 = smooth_velocity(FINE, flux.astype(np.float32), DIGS_SIGMA_V_KMS)
    assert smooth32.dtype == np.float32
    np.testing.assert_allclose(smooth32 @ FINE_WIDTH, flux @ FINE_WIDTH, rtol=1e-5)


def test_delta_line_becomes_350_kms_gaussian():
    k = int(np.argmin(np.abs(FINE - 6000.0)))
    flux = np.zeros(FINE.size)
    flux[k] = 1.0 / FINE_WIDTH[k]  # unit line luminosity
    smooth = smooth_velocity(FINE, flux, DIGS_SIGMA_V_KMS)
    energy = smooth * FINE_WIDTH
    v = C_KMS * np.log(FINE / FINE[k])
    assert energy.sum() == pytest.approx(1.0, rel=1e-10)
    assert np.sum(energy * v) == pytest.approx(0.0, abs=0.1)
    sigma = np.sqrt(np.sum(energy * v**2))
    assert sigma == pytest.approx(DIGS_SIGMA_V_KMS, rel=2e-3)
    gauss = np.exp(-0.5 * (v / DIGS_SIGMA_V_KMS) ** 2)
    gauss /= gauss.sum()
    assert np.max(np.abs(energy - gauss)) < 2e-3 * gauss.max()


def test_smoothing_input_errors():
    with pytest.raises(ParameterError, match="uniform in ln"):
        smooth_velocity(np.linspace(4000, 5000, 100), np.ones(100), 100.0)
    with pytest.raises(ParameterError, match="sigma_v"):
        smooth_velocity(FINE, np.ones(FINE.size), -1.0)
    with pytest.raises(ParameterError, match="wavelengths"):
        smooth_velocity(FINE, np.ones(10), 100.0)
    np.testing.assert_array_equal(smooth_velocity(FINE, np.ones(FINE.size), 0.0), 1.0)


def test_resample_smooth_function():
    def truth(w):
        return 2.0 + np.sin(w / 300.0) + 1e-4 * w

    flux = np.stack([truth(FINE), 3 * truth(FINE)])[None]  # shape (1, 2, n)
    out = resample(FINE, flux, DIGS_WAVELENGTH)
    assert out.shape == (1, 2, DIGS_N_PIXELS)
    np.testing.assert_allclose(out[0, 0], truth(DIGS_WAVELENGTH), rtol=1e-5)
    np.testing.assert_allclose(out[0, 1], 3 * truth(DIGS_WAVELENGTH), rtol=1e-5)
    with pytest.raises(ParameterError, match="outside the input coverage"):
        resample(FINE, flux, [3000.0, 4000.0])


def test_operator_equals_smooth_then_resample():
    rng = np.random.default_rng(2)
    flux = rng.random((4, FINE.size)) + np.linspace(1, 3, FINE.size)
    op = SpectrumOperator()
    expected = resample(FINE, smooth_velocity(FINE, flux, DIGS_SIGMA_V_KMS), DIGS_WAVELENGTH)
    np.testing.assert_allclose(op.project(flux), expected, rtol=1e-10)
    assert op.project(flux.astype(np.float32)).dtype == np.float32


def test_averaging_operator_conserves_line_flux():
    op = SpectrumOperator(method="average")
    out_width = np.diff(pixel_edges(DIGS_WAVELENGTH))
    for line in (5000.0, 6563.0):  # on and between output pixel centres
        k = int(np.argmin(np.abs(FINE - line)))
        flux = np.zeros(FINE.size)
        flux[k] = 1.0 / FINE_WIDTH[k]
        assert op.project(flux) @ out_width == pytest.approx(1.0, rel=1e-9)


def test_operator_rejects_bad_configuration():
    with pytest.raises(ParameterError, match="method"):
        SpectrumOperator(method="spline")
    with pytest.raises(ParameterError, match="sigma_v beyond"):
        SpectrumOperator(wave_out=np.geomspace(3410.0, 9500.0, 50))


def test_model_spectra_match_explicit_path(model, operator, spectra):
    theta = vary(3, [0.05, 2.0])
    got = spectra(theta)
    _, lum = model.rest_spectrum(theta, Z_LOW, wave_edges=SPECTRUM_WAVE_EDGES, dtype=np.float64)
    expected = resample(FINE, smooth_velocity(FINE, lum, DIGS_SIGMA_V_KMS), DIGS_WAVELENGTH)
    assert got.shape == (2, DIGS_N_PIXELS)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_model_spectra_finite_positive_over_prior(model, operator):
    theta = model.prior.sample(300, np.random.default_rng(3))
    spec = operator.model_spectra(model, theta, np.full(300, 0.05))
    assert spec.shape == (300, DIGS_N_PIXELS)
    assert np.all(np.isfinite(spec)) and np.all(spec > 0)


def test_model_spectra_scale_with_mass(spectra):
    spec = spectra(vary(0, [9.0, 11.5]))
    np.testing.assert_allclose(spec[1] / spec[0], 10.0**2.5, rtol=1e-4)


def test_model_spectra_redden_with_age_and_dust(spectra):
    by_age = red_blue(spectra(vary(3, [0.1, 0.5, 1.0, 2.0, 3.5])))
    assert np.all(np.diff(by_age) > 0), by_age
    by_dust = red_blue(spectra(vary(2, [0.1, 1.0, 3.0, 10.0])))
    assert np.all(np.diff(by_dust) > 0), by_dust


def test_halpha_in_young_not_old_populations(spectra):
    theta = np.array([[10.0, 0.0, 0.3, 0.01, -1.0], [10.0, 0.0, 0.3, 3.0, -1.0]])
    spec = spectra(theta)
    near = np.argsort(np.abs(DIGS_WAVELENGTH - 6563.0))[:2]  # the two pixels bracketing H-alpha
    window = (DIGS_WAVELENGTH > 6000) & (DIGS_WAVELENGTH < 7200)
    continuum = np.median(spec[:, window], axis=1)
    excess = spec[:, near].max(axis=1) / continuum
    assert excess[0] > 3.0, excess
    assert excess[1] < 1.1, excess


def test_observed_flambda_inverse_square():
    lum = np.ones((3, 5))
    z = np.array([0.02, 0.1, 0.4])
    flux = observed_flambda(lum, z)
    d_l = get_astropy_cosmology().luminosity_distance(z).to_value("Mpc") * MPC_CM
    invariant = flux[:, 0] * d_l**2 * (1 + z)
    np.testing.assert_allclose(invariant, invariant[0], rtol=1e-5)
    # absolute value with an independent d_L (astropy): 1 Lsun/A -> 1e-17 erg/s/cm^2/A
    np.testing.assert_allclose(flux[:, 0], 3.828e33 / (4 * np.pi * d_l**2 * (1 + z)) / 1e-17, rtol=1e-5)
    np.testing.assert_allclose(observed_flambda(lum[0], 0.1), flux[1], rtol=1e-12)
    with pytest.raises(ParameterError):
        observed_flambda(lum, z[:2])
