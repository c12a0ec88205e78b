"""FSPS SSP engine: clear errors without FSPS; grid checks where SPS_HOME is set up."""
import importlib.util

import numpy as np
import pytest

from sedscale.errors import MissingDataError, ParameterError
from sedscale.sps import ENGINES, get_ssp_grid, load_bc03, load_fsps
from sedscale.sps.fsps_engine import FSPS_DATA_SENTINEL, fsps_problems

FSPS_PROBLEMS = fsps_problems()
needs_fsps = pytest.mark.skipif(bool(FSPS_PROBLEMS), reason="FSPS unavailable: " + "; ".join(FSPS_PROBLEMS))


@pytest.fixture
def fake_sps_home(tmp_path):
    """A directory that passes the SPS_HOME data check (holds no real FSPS data)."""
    (tmp_path / FSPS_DATA_SENTINEL).parent.mkdir(parents=True)
    (tmp_path / FSPS_DATA_SENTINEL).write_text("")
    return tmp_path


def test_missing_sps_home_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("SPS_HOME", raising=False)
    with pytest.raises(MissingDataError, match="SPS_HOME is not set") as info:
        load_fsps()
    message = str(info.value)
    assert "export SPS_HOME=" in message and "github.com/cconroy20/fsps" in message


def test_sps_home_without_data(monkeypatch, tmp_path):
    monkeypatch.setenv("SPS_HOME", str(tmp_path))
    with pytest.raises(MissingDataError, match="does not hold the FSPS data files"):
        load_fsps()
    monkeypatch.setenv("SPS_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(MissingDataError, match="is not a directory"):
        load_fsps()


@pytest.mark.skipif(importlib.util.find_spec("fsps") is not None, reason="python-fsps is installed here")
def test_missing_package_says_pip_install(monkeypatch, fake_sps_home):
    monkeypatch.setenv("SPS_HOME", str(fake_sps_home))
    with pytest.raises(MissingDataError, match="pip install fsps") as info:
        load_fsps()
    assert "SPS_HOME" not in str(info.value)


def test_bad_options_are_parameter_errors():
    with pytest.raises(ParameterError, match="unknown IMF"):
        load_fsps(imf="topheavy")
    with pytest.raises(ParameterError, match="logzsol"):
        load_fsps(zcontinuous=1)
    with pytest.raises(ParameterError, match="logzsol"):
        load_fsps(logzsol=[-1.0, 0.0])
    with pytest.raises(ParameterError, match="zcontinuous"):
        load_fsps(zcontinuous=2)


def test_dispatcher(monkeypatch):
    assert ENGINES == ("bc03", "fsps")
    assert get_ssp_grid("bc03") is load_bc03(nebular=False)  # the models call it this way
    with pytest.raises(ParameterError, match="unknown SSP engine"):
        get_ssp_grid("pegase")
    with pytest.raises(ParameterError, match="Chabrier"):
        get_ssp_grid("bc03", imf="kroupa")
    with pytest.raises(ParameterError, match="nebular"):
        get_ssp_grid("fsps", nebular=True)
    monkeypatch.delenv("SPS_HOME", raising=False)
    with pytest.raises(MissingDataError, match="SPS_HOME"):
        get_ssp_grid("fsps")


# ---------------------------------------------------------------- real FSPS
@pytest.fixture(scope="module")
def fsps_grid():
    return load_fsps("chabrier")


def bolometric(grid, age_yr):
    z = grid.zsun
    return np.trapezoid(grid.spectrum(age_yr, z), grid.wavelength)


@needs_fsps
def test_fsps_grid_layout(fsps_grid):
    g = fsps_grid
    assert g.name.startswith("fsps_") and g.imf == "chabrier"
    assert g.ages[0] == 0 and np.all(np.diff(g.ages) > 0) and g.ages[-1] > 1e10
    assert np.all(np.diff(g.metallicities) > 0) and 0.01 < g.zsun < 0.025
    assert np.all(np.isfinite(g.lum)) and np.all(g.lum >= 0)
    assert load_fsps("chabrier") is g


@needs_fsps
def test_fsps_normalization_per_msun_formed(fsps_grid):
    g = fsps_grid
    iz = int(np.argmin(np.abs(np.log10(g.metallicities / g.zsun))))
    surv = g.surviving_mass_fraction[iz]
    assert 0.97 < surv[1] <= 1.0 + 1e-6
    assert 0.4 < np.interp(1e10, g.ages, surv) < 0.75
    # Same IMF, different isochrones: BC03 gives ~194 and ~0.26 Lsun/Msun.
    assert 194 / 1.5 < bolometric(g, 1e7) < 194 * 1.5
    assert 0.26 / 1.5 < bolometric(g, 1e10) < 0.26 * 1.5


@needs_fsps
def test_fsps_units_match_peraa_output(fsps_grid):
    import fsps

    sp = fsps.StellarPopulation(zcontinuous=0, imf_type=1, sfh=0)
    iz = sp.zlegend.size - 1
    _, spec_aa = sp.get_spectrum(zmet=iz + 1, tage=0.0, peraa=True)
    # python-fsps converts with c = 3e18 A/s, we with the exact value.
    np.testing.assert_allclose(fsps_grid.lum[iz, 1:], spec_aa, rtol=2e-3, atol=1e-30)


@needs_fsps
def test_fsps_grid_drives_the_digs_model(fsps_grid):
    from sedscale.models import get_model

    model = get_model("delayed_tau", ssp=fsps_grid, nebular_log_u=None)
    theta = model.prior.sample(20, np.random.default_rng(0))
    flux = model.photometry(theta, np.full(20, 0.05))
    assert np.all(np.isfinite(flux)) and np.all(flux > 0)
