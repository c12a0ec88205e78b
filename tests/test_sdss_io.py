"""SDSS spectrum reader: the shared spec-PLATE-MJD-FIBER files and synthetic spectra written here."""
from pathlib import Path

import fitsio
import numpy as np
import pytest

from sedscale.errors import ParameterError
from sedscale.io.sdss import (
    ALL_MASK_BITS,
    SDSS_PIXEL_KMS,
    SDSSSpectrum,
    read_sdss_file,
    read_sdss_spectra,
    read_sdss_spectrum,
    rest_luminosity,
    spectra_table,
    sppixmask,
)
from sedscale.observe.smoothing import smooth_resample, smoothing_weights, vacuum_to_air
from sedscale.observe.spectra import (
    DIGS_WAVELENGTH,
    SPECTRUM_WAVE_EDGES,
    SpectrumOperator,
    observed_flambda,
)

SPEC_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sdss_spectra"
SPEC_FILES = sorted(SPEC_DIR.glob("*spec-*.fits"))
needs_spectra = pytest.mark.skipif(not SPEC_FILES, reason=f"real SDSS spectra not found in {SPEC_DIR}")

# SDSS-I observed range: 3800-9200 A in 1e-4 dex pixels.
LOGLAM = np.arange(3.5800, 3.9640, 1e-4)


def rest_model(wave):
    """A smooth rest-frame spectrum (1e-17 erg/s/cm^2/A) with a break and absorption lines."""
    wave = np.asarray(wave, dtype=float)
    continuum = 40.0 + 25.0 * np.tanh((wave - 4000.0) / 150.0) + 8.0 * np.sin(wave / 700.0)
    lines = sum(
        depth * np.exp(-0.5 * ((wave - centre) / (centre * 120.0 / 2.998e5)) ** 2)
        for centre, depth in ((3934.0, 20.0), (4861.0, 8.0), (5175.0, 10.0), (6563.0, -30.0), (8542.0, 6.0))
    )
    return continuum - lines


def write_spectrum(path, flux, ivar, *, z=0.05, zwarning=0, cls="GALAXY", and_mask=None, wdisp=None,
                   loglam=LOGLAM, hdus=("COADD", "SPECOBJ"), drop_column=None):  # fmt: skip
    """An SDSS-like spectrum file with the HDUs and columns the reader uses."""
    n = loglam.size
    coadd = {
        "flux": np.asarray(flux, dtype=">f4"),
        "loglam": np.asarray(loglam, dtype=">f4"),
        "ivar": np.asarray(ivar, dtype=">f4"),
        "and_mask": np.zeros(n, dtype=">i4") if and_mask is None else np.asarray(and_mask, dtype=">i4"),
        "wdisp": np.full(n, 0.85, dtype=">f4") if wdisp is None else np.asarray(wdisp, dtype=">f4"),
    }
    if drop_column:
        del coadd[drop_column]
    specobj = {
        "PLATE": np.array([266], ">i4"),
        "MJD": np.array([51602], ">i4"),
        "FIBERID": np.array([7], ">i4"),
        "Z": np.array([z], ">f4"),
        "ZWARNING": np.array([zwarning], ">i4"),
        "CLASS": np.array([cls], "S6"),
    }
    with fitsio.FITS(str(path), "rw", clobber=True) as fits:
        fits.write(None)
        for name, table in (("COADD", coadd), ("SPECOBJ", specobj)):
            if name in hdus:
                fits.write_table(list(table.values()), names=list(table), extname=name)
    return path


def observed_spectrum(z, loglam=LOGLAM):
    """Noiseless observed f_lambda of :func:`rest_model` at redshift z (vacuum wavelengths = model's)."""
    wave_obs = 10.0**loglam
    return rest_model(wave_obs / (1 + z)) / (1 + z)


@pytest.fixture()
def good_file(tmp_path):
    flux = observed_spectrum(0.05)
    return write_spectrum(tmp_path / "spec-0266-51602-0007.fits", flux, np.full(LOGLAM.size, 4.0))


# ---------------------------------------------------------------- real spectra


@needs_spectra
def test_shared_spectra_on_the_rest_frame_grid():
    spectra = read_sdss_spectra(SPEC_DIR)
    assert len(spectra) == len(SPEC_FILES) == 6
    for spec, path in zip(spectra, SPEC_FILES):
        specobj = fitsio.read(str(path), "SPECOBJ", columns=["Z", "PLATE", "MJD", "FIBERID"])
        assert spec.id == f"{specobj['PLATE'][0]:04d}-{specobj['MJD'][0]:05d}-{specobj['FIBERID'][0]:04d}"
        assert spec.id in path.name
        assert spec.z == pytest.approx(float(specobj["Z"][0]))
        assert spec.spec_class == "GALAXY" and spec.zwarning == 0
        np.testing.assert_array_equal(spec.wave, DIGS_WAVELENGTH)
        good = spec.good
        assert good.sum() > 60
        assert np.all(spec.ivar[good] > 0) and np.all(np.isfinite(spec.flux[good]))
        # 1e-17 erg/s/cm^2/A: bright SDSS main-sample galaxies have fiber fluxes of ~5-130.
        assert 1.0 < np.median(spec.flux[good]) / (1 + spec.z) < 300.0
        # SDSS-I ends at ~9,200 A observed: the top DIGS elements (9,500 A rest) are never covered.
        assert not good[-1] and spec.coverage < 0.95
        # Instrument ~60 km/s -> a ~345 km/s kernel brings the data to 350 km/s.
        assert 45.0 < spec.sigma_inst_kms < 75.0
        assert spec.sigma_kernel_kms == pytest.approx(np.sqrt(350.0**2 - spec.sigma_inst_kms**2))


@needs_spectra
def test_shared_spectra_units_against_the_raw_pixels():
    """An element equals (1 + z) x the raw observed flux around (1 + z) lambda_rest (air)."""
    path = SPEC_FILES[0]
    spec = read_sdss_spectrum(path)
    raw = read_sdss_file(path)
    wave_rest = vacuum_to_air(10.0 ** raw["loglam"]) / (1 + spec.z)
    usable = (raw["ivar"] > 0) & (raw["and_mask"] == 0)
    ratio = []
    for k in np.flatnonzero(spec.good):
        near = usable & (np.abs(np.log(wave_rest / DIGS_WAVELENGTH[k])) < 0.5 * spec.sigma_kernel_kms / 2.998e5)
        ratio.append(spec.flux[k] / ((1 + spec.z) * np.mean(raw["flux"][near])))
    # A narrower window differs at lines only; the continuum fixes the scale.
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02)
    assert np.all(np.abs(np.array(ratio) - 1) < 0.3)


@needs_spectra
def test_shared_spectra_flags_and_mask_bits():
    by_id = {s.id: s for s in read_sdss_spectra(SPEC_FILES)}
    for sid in ("0266-51602-0001", "0266-51602-0162", "0266-51602-0166", "0266-51602-0614"):
        assert not by_id[sid].flag, by_id[sid].reason
        assert by_id[sid].good_fraction > 0.85
    # 0526: MANYBADCOLUMNS (a fiber-level warning) is set over the whole blue arm.
    assert by_id["0266-51602-0526"].flag and "masked" in by_id["0266-51602-0526"].reason
    # 0573: z = 0.26, only 71% of the grid lies inside the observed range; sky pixels finish it.
    assert by_id["0266-51602-0573"].coverage == pytest.approx(0.71, abs=0.02)
    assert by_id["0266-51602-0573"].flag
    lenient = ALL_MASK_BITS & ~sppixmask("MANYBADCOLUMNS", "NEARBADPIXEL", "BRIGHTSKY")
    relaxed = read_sdss_spectrum(SPEC_DIR / "ff_spec-0266-51602-0526.fits", mask_bits=lenient)
    assert not relaxed.flag and relaxed.good_fraction > 0.9


# ------------------------------------------------------------ synthetic spectra


def test_recovered_on_the_grid_with_correct_ivar():
    """Known smooth spectrum + known noise: chi2/dof ~ 1 over many noise realizations."""
    rng = np.random.default_rng(7)
    wave = 10.0**LOGLAM
    truth = rest_model(wave)
    sigma = 0.05 * truth + 0.5
    sigma[rng.random(wave.size) < 0.02] *= 8.0  # sky-line-like noisy pixels
    good = rng.random(wave.size) > 0.03
    good[1500:1530] = False  # a gap
    ivar = 1.0 / sigma**2
    noisy = truth + sigma * rng.standard_normal((400, wave.size))
    noisy[:, ~good] = np.nan  # masked pixels must not leak
    flux, ivar_out, good_out = smooth_resample(wave, noisy, ivar, good, sigma_kms=345.0)
    expected, _, _ = smooth_resample(wave, truth, ivar, good, sigma_kms=345.0)
    assert flux.shape == (400, DIGS_WAVELENGTH.size)
    assert good_out.sum() > 110 and np.all(ivar_out[good_out] > 0)
    chi2 = (flux[:, good_out] - expected[good_out]) ** 2 * ivar_out[good_out]
    assert chi2.mean() == pytest.approx(1.0, abs=0.03)  # 400 x ~120 values: sd ~0.006
    assert np.all((chi2.mean(axis=0) > 0.7) & (chi2.mean(axis=0) < 1.4))  # per element, 400 draws
    # Unbiased: the mean over draws matches the noiseless spectrum within its error.
    pull = (flux[:, good_out].mean(axis=0) - expected[good_out]) * np.sqrt(400 * ivar_out[good_out])
    assert np.abs(pull).max() < 5.0 and abs(pull.mean()) < 0.5


def test_data_side_matches_the_model_operator():
    """Noiseless data smoothed here equal the model's SpectrumOperator applied to the same spectrum."""
    operator = SpectrumOperator()
    model_vector = operator.project(rest_model(operator.wave_fine))
    wave = 10.0**LOGLAM / 1.02
    flux, _, good = smooth_resample(wave, rest_model(wave), np.ones(wave.size), np.ones(wave.size, bool))
    assert good.sum() > 120
    np.testing.assert_allclose(flux[good], model_vector[good], rtol=1e-3)  # 340 km/s: 8e-3


def test_neighbouring_elements_are_nearly_uncorrelated():
    wave = 10.0**LOGLAM
    weights, fraction = smoothing_weights(wave, np.ones(wave.size, bool), DIGS_WAVELENGTH, 345.0)
    inside = fraction > 0.8  # elements cut by the end of the data are not good anyway
    cov = weights[inside] @ weights[inside].T  # unit pixel variance
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    assert inside.sum() > 120
    assert np.abs(np.diag(corr, 1)).max() < 1e-3  # ~exp(-(5.9 sigma)^2 / 4) = 1.7e-4


def test_synthetic_file_round_trip(good_file):
    spec = read_sdss_spectrum(good_file, wavelengths="vacuum")
    assert isinstance(spec, SDSSSpectrum) and not spec.flag, spec.reason
    assert spec.id == "0266-51602-0007" and spec.z == pytest.approx(0.05)
    # wdisp 0.85 pixel -> sigma_inst = 59 km/s.
    assert spec.sigma_inst_kms == pytest.approx(0.85 * SDSS_PIXEL_KMS, rel=1e-3)
    operator = SpectrumOperator(wave_edges=SPECTRUM_WAVE_EDGES)
    model_vector = operator.project(rest_model(operator.wave_fine))
    # The data carry 59 km/s of instrument (here: none in the noiseless file), so the
    # kernel is slightly narrower than the model's: ~0.3% at the deepest line.
    np.testing.assert_allclose(spec.flux[spec.good], model_vector[spec.good], rtol=5e-3)
    # Rest-frame L_lambda and back to the observed flux density.
    lum, lum_ivar = rest_luminosity(spec)
    np.testing.assert_allclose(observed_flambda(lum, spec.z), spec.flux / (1 + spec.z), rtol=1e-6)
    np.testing.assert_allclose(lum * np.sqrt(lum_ivar), spec.flux * np.sqrt(spec.ivar), rtol=1e-9)
    assert 1e5 < np.median(lum[spec.good]) < 1e9  # Lsun/A for ~50e-17 at z = 0.05


def test_air_wavelengths():
    np.testing.assert_allclose(vacuum_to_air([6564.61, 3934.78, 4862.68]), [6562.80, 3933.66, 4861.33], atol=0.02)
    assert vacuum_to_air(1500.0) == 1500.0


def test_masked_pixels_and_mask_bits(tmp_path):
    flux = observed_spectrum(0.05)
    and_mask = np.zeros(LOGLAM.size, dtype=int)
    and_mask[1000:1400] = 1 << 23  # BRIGHTSKY over a 400-pixel stretch
    path = write_spectrum(tmp_path / "spec-0266-51602-0008.fits", flux, np.full(LOGLAM.size, 4.0), and_mask=and_mask)
    masked = read_sdss_spectrum(path)
    kept = read_sdss_spectrum(path, mask_bits=ALL_MASK_BITS & ~sppixmask("BRIGHTSKY"))
    assert masked.good.sum() < kept.good.sum() - 5
    assert np.all(kept.good >= masked.good)
    with pytest.raises(ParameterError):
        sppixmask("NOT_A_BIT")


# ------------------------------------------------------------------ bad spectra


def _bad_files(tmp_path):
    """name -> (path, expected words of the reason) for each kind of bad spectrum, and one good."""
    flux = observed_spectrum(0.05)
    ivar = np.full(LOGLAM.size, 4.0)
    nan_flux = flux.copy()
    nan_flux[::50] = np.nan

    def spec(fiber, flux=flux, ivar=ivar, **kwargs):
        return write_spectrum(tmp_path / f"spec-0001-50000-{fiber:04d}.fits", flux, ivar, **kwargs)

    good = spec(1)
    truncated = tmp_path / "spec-0001-50000-0009.fits"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "spec-0001-50000-0011.fits"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 5760, dtype=np.uint8).tobytes())
    return {
        "zero_ivar": (spec(2, ivar=0 * ivar), "ivar is zero"),
        "nan_flux": (spec(3, flux=nan_flux), "non-finite"),
        "high_z": (spec(4, z=0.8), "coverage"),
        "zwarning": (spec(5, zwarning=4), "ZWARNING=4"),
        "star": (spec(6, cls="STAR"), "CLASS=STAR"),
        "no_specobj": (spec(7, hdus=("COADD",)), "no SPECOBJ"),
        "no_wdisp": (spec(8, drop_column="wdisp"), "lacks column(s) wdisp"),
        "truncated": (truncated, "unreadable"),
        "garbage": (garbage, "unreadable"),
        "missing": (tmp_path / "spec-0001-50000-0010.fits", "no such file"),
        "good": (good, ""),
    }


def test_bad_spectra_are_flagged_not_raised(tmp_path):
    cases = _bad_files(tmp_path)
    spectra = read_sdss_spectra([path for path, _ in cases.values()])
    assert len(spectra) == len(cases)
    for (name, (path, reason)), spec in zip(cases.items(), spectra):
        assert spec.path == str(path)
        assert spec.flag == (name != "good"), (name, spec.reason)
        assert reason in spec.reason, (name, spec.reason)
        assert spec.wave.shape == spec.flux.shape == spec.ivar.shape == spec.good.shape == (138,)
    by_name = dict(zip(cases, spectra))
    for name in ("zero_ivar", "no_specobj", "no_wdisp", "truncated", "garbage", "missing"):
        assert not by_name[name].good.any() and np.all(by_name[name].ivar == 0), name
    assert by_name["truncated"].id == "0001-50000-0009"  # from the file name when unreadable
    # NaN pixels are masked (the spectrum is flagged as corrupt, but no NaN reaches a good element).
    assert np.all(np.isfinite(by_name["nan_flux"].flux[by_name["nan_flux"].good]))
    assert by_name["nan_flux"].good_fraction > 0.9
    assert by_name["high_z"].coverage < 0.6 and by_name["high_z"].good_fraction < 0.6
    table = spectra_table(spectra)
    assert list(table["flag"]) == [s.flag for s in spectra]
    assert list(table["id"]) == [s.id for s in spectra]
    assert table["flux"].iloc[-1].shape == (138,)


def test_redshift_override(tmp_path):
    flux = observed_spectrum(0.05)
    ivar = np.full(LOGLAM.size, 4.0)
    no_specobj = write_spectrum(tmp_path / "spec-0001-50000-0011.fits", flux, ivar, hdus=("COADD",))
    spec = read_sdss_spectrum(no_specobj, z=0.05)
    assert not spec.flag and spec.zwarning == -1 and spec.z == 0.05
    warned = write_spectrum(tmp_path / "spec-0001-50000-0012.fits", flux, ivar, zwarning=4)
    assert not read_sdss_spectrum(warned, z=0.05).flag  # ZWARNING concerns the pipeline z, not ours
    assert read_sdss_spectrum(warned, z=-1.0).flag
    spectra = read_sdss_spectra([warned, no_specobj], z=[0.05, np.nan])
    assert not spectra[0].flag and spectra[1].flag
    with pytest.raises(ParameterError):
        read_sdss_spectra([warned], z=[0.05, 0.06])
