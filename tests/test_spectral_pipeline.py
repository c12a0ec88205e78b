"""Spectra (DIGS) end to end: noise and x layout, spectral simulation, training with an
embedding net and on-the-fly noise, calibration on fresh spectra, and spectral catalogs
of real SDSS spectra and of bad spectra."""
from __future__ import annotations

import glob

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

from sedscale.errors import ConfigError
from sedscale.infer.catalog import CatalogOptions
from sedscale.infer.spectra import (
    read_spectral_inputs,
    run_spectral_catalog,
    write_spectral_catalog,
)
from sedscale.io.sdss import SDSSSpectrum, spectra_table
from sedscale.models import get_model
from sedscale.observe.layout import (
    MISSING_LOG_SIGMA,
    SPECTRUM_TRUE_COLUMN,
    SPECTRUM_X_COLUMNS,
    drop_elements,
    normalization_window,
    spectrum_x,
)
from sedscale.observe.spectra import DIGS_WAVELENGTH, SpectrumOperator, observed_flambda
from sedscale.observe.spectral_noise import SPECTRAL_NOISE_PRESETS, SpectralNoiseModel
from sedscale.simulate import SimulationConfig, read_simulation_metadata, run_simulation
from sedscale.train import resolve_config, train
from sedscale.train.checkpoint import CheckpointError
from sedscale.train.data import Split, open_training_set, read_chunks
from sedscale.validate.spectra import run_spectral_validation

N_SIMS = 4000
TINY_SPECTRAL = resolve_config(
    "spectra",
    flow={"num_transforms": 4, "hidden_features": 64, "embedding_hidden": 128, "embedding_features": 32},
    batch_size=128,
    learning_rate=2e-3,
    max_epochs=80,
    patience=8,
    seed=3,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def spec_sims(tmp_path_factory):
    out = tmp_path_factory.mktemp("spec") / "sims"
    run_simulation(SimulationConfig(model="delayed_tau", n=N_SIMS, out=out, seed=11, partition_size=2000,
                                    observable="spectrum"))
    return out


@pytest.fixture(scope="module")
def spec_flow(spec_sims, tmp_path_factory):
    out = tmp_path_factory.mktemp("spec") / "flow"
    train(spec_sims, out, TINY_SPECTRAL, progress=False, log=lambda s: None)
    return out


# ----------------------------------------------------------------------- noise and x layout
def test_fractional_noise_is_digs_5_percent():
    flux = np.full((4000, DIGS_WAVELENGTH.size), 2.0e5)
    noisy = SPECTRAL_NOISE_PRESETS["digs"].apply(flux, np.random.default_rng(0))
    rel = noisy.flux / flux - 1
    assert abs(rel.std() - 0.05) < 0.001 and abs(rel.mean()) < 0.001
    assert noisy.good.all()
    # The uncertainty the flow sees comes from the noisy flux, not the truth.
    np.testing.assert_allclose(noisy.sigma, 0.05 * np.abs(noisy.flux), rtol=1e-6)


def test_survey_noise_spans_sdss_coverage_and_snr():
    noise = SPECTRAL_NOISE_PRESETS["survey"]
    flux = np.full((5000, DIGS_WAVELENGTH.size), 1.0)
    noisy = noise.apply(flux, np.random.default_rng(1))
    # 9200 A observed is never reached at rest wavelengths above 9200 A.
    assert not noisy.good[:, DIGS_WAVELENGTH > 9200].any()
    assert noisy.good[:, normalization_window(DIGS_WAVELENGTH)].mean() > 0.98
    snr = 1.0 / np.median(noisy.sigma[:, normalization_window(DIGS_WAVELENGTH)], axis=1)
    assert 4 < snr.min() and snr.max() < 600 and np.median(snr) > 30
    assert np.isinf(noisy.sigma[~noisy.good]).all() and (noisy.flux[~noisy.good] == 0).all()


def test_survey_uncertainty_follows_noisy_flux_not_truth():
    noise = SpectralNoiseModel(poisson_range=(2.0, 2.0), snr_range=(20, 20), tilt_range=(0, 0), spike_rate=0.0,
                               gap_rate=0.0, mask_z_range=(0.0, 0.0))
    wave = DIGS_WAVELENGTH
    flux = np.where(np.abs(wave - 5000) < 100, 0.3, 1.0)[None, :].repeat(2000, axis=0)
    noisy = noise.apply(flux, np.random.default_rng(2))
    ok = noisy.good
    # p = 2 is the DIGS fractional model: sigma = |f| / S/N, here of the noisy flux.
    np.testing.assert_allclose(noisy.sigma[ok], np.abs(noisy.flux[ok]) / 20, rtol=1e-4)
    rel = (noisy.flux / flux - 1)[ok]
    assert abs(rel.std() - 0.05) < 0.002


def test_elements_never_observed_in_training_are_dropped_at_inference():
    survey = SPECTRAL_NOISE_PRESETS["survey"].observable_elements()
    assert not survey[DIGS_WAVELENGTH > 9200].any() and survey[DIGS_WAVELENGTH < 9200].all()
    assert SPECTRAL_NOISE_PRESETS["digs"].observable_elements().all()
    m = DIGS_WAVELENGTH.size
    x, _ = spectrum_x(np.ones((2, m)), np.full((2, m), 0.01), np.ones((2, m), dtype=bool))
    dropped = drop_elements(x, survey)
    expected = np.r_[[0.0] * (~survey).sum(), [MISSING_LOG_SIGMA] * (~survey).sum()]
    assert (dropped[:, 1:][:, np.r_[~survey, ~survey]] == expected).all()
    np.testing.assert_array_equal(dropped[:, 1:][:, np.r_[survey, survey]], x[:, 1:][:, np.r_[survey, survey]])
    np.testing.assert_array_equal(dropped[:, 0], x[:, 0])


def test_noise_model_options_checked_and_round_trip():
    model = SpectralNoiseModel(snr_range=(10, 100), gap_rate=0.0)
    assert SpectralNoiseModel.from_dict(model.to_dict()) == model
    with pytest.raises(ConfigError):
        SpectralNoiseModel(kind="poisson")
    with pytest.raises(ConfigError):
        SpectralNoiseModel(snr_range=(100, 10))
    with pytest.raises(ConfigError):
        SpectralNoiseModel.from_dict({"snr": 3})


def test_spectrum_x_normalizes_and_marks_missing():
    m = DIGS_WAVELENGTH.size
    flux = np.full((3, m), 4.0e5)
    sigma = np.full((3, m), 4.0e3)
    good = np.ones((3, m), dtype=bool)
    good[1, :10] = False
    good[2, normalization_window(DIGS_WAVELENGTH)] = False
    x, valid = spectrum_x(flux, sigma, good)
    assert x.shape == (3, len(SPECTRUM_X_COLUMNS)) and x.dtype == np.float32
    assert valid.tolist() == [True, True, False]
    np.testing.assert_allclose(x[0, 0], np.log10(4.0e5), rtol=1e-6)
    np.testing.assert_allclose(x[0, 1 : 1 + m], 1.0)
    np.testing.assert_allclose(x[0, 1 + m :], -2.0, atol=1e-6)
    assert (x[1, 1:11] == 0).all() and (x[1, 1 + m : 11 + m] == MISSING_LOG_SIGMA).all()
    assert np.isnan(x[2]).all()
    # NaN flux or zero/inf uncertainty count as missing, never as data.
    flux[0, 50], sigma[0, 60] = np.nan, 0.0
    x, _ = spectrum_x(flux, sigma, np.ones_like(good))
    assert x[0, 1 + 50] == 0 and x[0, 1 + m + 60] == MISSING_LOG_SIGMA


# ----------------------------------------------------------------------- simulation
def test_spectral_simulation_stores_noiseless_list_column(spec_sims):
    meta = read_simulation_metadata(spec_sims)
    assert meta["observable"] == "spectrum" and meta["x_source"] == SPECTRUM_TRUE_COLUMN
    assert meta["x_columns"] == list(SPECTRUM_X_COLUMNS)
    assert meta["units"][SPECTRUM_TRUE_COLUMN] == "Lsun/Angstrom"
    first = sorted(glob.glob(str(spec_sims / "part-*.parquet")))[0]
    table = pq.read_table(first)
    assert str(table.schema.field(SPECTRUM_TRUE_COLUMN).type) == "fixed_size_list<element: float>[138]"
    spec = table.column(SPECTRUM_TRUE_COLUMN).combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    model = get_model("delayed_tau")
    theta = np.column_stack([table.column(p).to_numpy() for p in model.param_names])[:20]
    z = table.column("z").to_numpy()[:20]
    # The stored spectra are the model's DIGS data vectors of the stored parameters, in Lsun/A.
    expected = SpectrumOperator().model_spectra(model, theta, z, dtype=np.float64)
    np.testing.assert_allclose(spec[:20], expected, rtol=2e-3)


def test_training_noise_is_fresh_for_training_and_fixed_for_validation(spec_sims):
    ts = open_training_set(spec_sims).with_noise("survey", None)
    val = Split("val", 0.1, 0)
    a = np.concatenate([x for _, x, _ in read_chunks(ts, val)])
    b = np.concatenate([x for _, x, _ in read_chunks(ts, val)])
    np.testing.assert_array_equal(a, b)
    train_split = Split("train", 0.1, 0)
    rng = np.random.default_rng(5)
    c = next(read_chunks(ts, train_split, rng=rng))[1]
    d = next(read_chunks(ts, train_split, rng=rng))[1]
    assert c.shape == d.shape and not np.array_equal(c, d)
    np.testing.assert_allclose(np.median(c[:, 0] - d[:, 0]), 0.0, atol=0.01)


def test_spectral_noise_is_rejected_at_simulation(tmp_path):
    from sedscale.simulate import plan_run

    with pytest.raises(ConfigError, match="noise"):
        plan_run(SimulationConfig(model="delayed_tau", n=10, out=tmp_path / "s", observable="spectrum",
                                  noise_model="x.json"))
    with pytest.raises(ConfigError, match="observable"):
        SimulationConfig(model="delayed_tau", n=10, out=tmp_path / "s", observable="sed")


# ----------------------------------------------------------------------- training and calibration
@pytest.mark.slow
def test_spectral_checkpoint_records_layout_noise_and_embedding(spec_flow):
    from sedscale.infer import Posterior

    post = Posterior.load(spec_flow, x_columns=SPECTRUM_X_COLUMNS)
    meta = post.metadata
    assert meta["observable"] == "spectrum"
    assert meta["spectral_noise"]["kind"] == "survey"
    assert meta["flow"]["embedding"] == "mlp"
    assert len(meta["wavelength"]) == DIGS_WAVELENGTH.size
    with pytest.raises(CheckpointError):
        Posterior.load(spec_flow, x_columns=("mag_u",))


@pytest.mark.slow
def test_tiny_spectral_flow_recovers_truth_at_nominal_coverage(spec_flow, tmp_path):
    result = run_spectral_validation({"tiny": spec_flow}, tmp_path, n_test=300, n_samples=300, seed=99)
    by = result.set_index("parameter")
    # The amplitude carries the mass: recovered to ~0.1 dex from 4,000 training spectra.
    assert by.loc["log_mass", "nmad"] < 0.25 and by.loc["log_mstar (derived)", "nmad"] < 0.25
    assert by.loc["log_mass", "contraction"] > 0.9
    # Central 68% intervals hold the truth at about the nominal rate (|2u - 1| < 0.68 for 68%).
    ranks = pd.read_parquet(tmp_path / "spectral_validation.parquet")
    assert (ranks["parameter"] == "log_mass").any()
    assert 0.35 < by.loc["log_mass", "mean_width_level"] < 0.65
    assert by.loc["log_mass", "max_coverage_error"] < 0.12
    assert (tmp_path / "spectral_validation.md").read_text().count("| tiny |") >= 5


# ----------------------------------------------------------------------- spectral catalogs
def test_sdss_spectra_catalog(spec_flow, shared_data, tmp_path):
    obs = read_spectral_inputs([shared_data / "sdss_spectra"])
    assert len(obs) == 6
    table = run_spectral_catalog(obs, spec_flow, CatalogOptions(n_samples=200, seed=1), check_support=True)
    paths = write_spectral_catalog(table, [tmp_path / "s.parquet", tmp_path / "s.fits"])
    df = pd.read_parquet(paths[0])
    fits = Table.read(paths[1])
    assert df["id"].tolist() == [str(i) for i in obs.ids] == [str(v).strip() for v in fits["id"]]
    np.testing.assert_allclose(df["log_mstar_p50"].to_numpy(), np.asarray(fits["log_mstar_p50"]), equal_nan=True)
    flagged = obs.flagged
    assert (df.loc[flagged, "status"] == "bad_input").all() and df.loc[flagged, "reason"].str.len().gt(0).all()
    used = df[~flagged]
    assert used["status"].isin(["ok", "out_of_support", "sampling_timeout"]).all()
    assert np.isfinite(used["log_mstar_p50"]).all() and np.isfinite(used["chi2_ppc"]).all()
    assert (used["chi2_dof"] > 80).all()
    # Fibre luminosities of z ~ 0.02-0.06 galaxies: 10^5-10^7 Lsun/A at 4500-6500 A.
    assert used["log_lnorm"].between(5, 7).all()
    assert fits["log_mstar_p50"].unit == "dex(Msun)" or str(fits["log_mstar_p50"].unit) == "dex(solMass)"


def test_x_support_of_another_training_set_is_refitted_or_refused(spec_flow, tmp_path):
    """An x_support.npz left beside a retrained checkpoint is never used silently."""
    import json
    import shutil

    from sedscale.infer.posterior import Posterior
    from sedscale.infer.spectra import spectral_support
    from sedscale.infer.support import XSupport, support_path

    flow = tmp_path / "flow"
    shutil.copytree(spec_flow, flow)
    post = Posterior.load(flow)
    expected = post.metadata["training_set"]["config_hash"]
    path = support_path(post.path)
    path.unlink(missing_ok=True)
    fitted = spectral_support(post)
    assert fitted is not None and fitted.provenance["config_hash"] == expected
    stale = XSupport.load(path)
    stale.provenance["config_hash"] = "0" * 64
    stale.save(path)
    assert spectral_support(post).provenance["config_hash"] == expected      # refitted from the training set
    stale.save(path)
    sidecar = flow / "posterior.json"
    meta = json.loads(sidecar.read_text())
    meta["training_set"]["path"] = str(tmp_path / "gone")
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="another training set than the checkpoint's"):
        spectral_support(Posterior.load(flow))


def test_bad_spectra_are_flagged_not_fatal(spec_flow, spec_sims, tmp_path):
    m = DIGS_WAVELENGTH.size
    first = sorted(glob.glob(str(spec_sims / "part-*.parquet")))[0]
    table = pq.read_table(first)
    lum = table.column(SPECTRUM_TRUE_COLUMN).combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)[0]
    z = 0.04
    # Rest-frame flux (1e-17 erg/s/cm^2/A) that the reader would give for this luminosity.
    flux = (1 + z) * observed_flambda(lum, z)
    ivar = 1.0 / (0.02 * flux) ** 2
    good = DIGS_WAVELENGTH < 9000
    rows = [
        SDSSSpectrum(id="good", path="", z=z, flux=flux, ivar=ivar, good=good),
        SDSSSpectrum(id="zero_ivar", path="", z=z, flux=flux, ivar=np.zeros(m), good=np.ones(m, bool)),
        SDSSSpectrum(id="nan_flux", path="", z=z, flux=np.full(m, np.nan), ivar=ivar, good=np.ones(m, bool)),
        SDSSSpectrum(id="no_z", path="", z=np.nan, flux=flux, ivar=ivar, good=good),
        SDSSSpectrum(id="red_only", path="", z=z, flux=flux, ivar=ivar, good=DIGS_WAVELENGTH > 7000),
        # A 20% ripple no galaxy of the model has: fitted, then flagged.
        SDSSSpectrum(id="ripple", path="", z=z, flux=flux * (1 + 0.2 * np.sin(DIGS_WAVELENGTH / 150)), ivar=ivar,
                     good=good),
    ]
    path = tmp_path / "spectra.parquet"
    frame = spectra_table(rows)
    frame.loc[len(frame)] = frame.iloc[0]
    frame.at[len(frame) - 1, "id"] = "short"
    frame.at[len(frame) - 1, "flux"] = flux[:100]
    frame.to_parquet(path)
    obs = read_spectral_inputs([path])
    out = run_spectral_catalog(obs, spec_flow, CatalogOptions(n_samples=100), check_support=False, fit=True)
    out = out.to_pandas()
    status = dict(zip(out["id"], out["status"]))
    reason = dict(zip(out["id"], out["reason"]))
    assert status["good"] == "ok"
    # Noiseless model spectrum with 2% errors: the best fit reaches chi2 << dof.
    good_row = out.set_index("id").loc["good"]
    assert good_row["chi2_best"] < 0.5 * good_row["chi2_dof"]
    assert status["ripple"] == "out_of_support" and "poor_fit" in reason["ripple"]
    for bad in ("zero_ivar", "nan_flux", "no_z", "red_only", "short"):
        assert status[bad] == "bad_input", (bad, reason[bad])
        assert reason[bad]
    assert "redshift" in reason["no_z"] and "138" in reason["short"]
    assert np.isnan(out.set_index("id").loc["zero_ivar", "log_mstar_p50"])


def test_photometric_checkpoint_refused_for_spectra(repo_root, shared_data):
    obs = read_spectral_inputs([shared_data / "sdss_spectra"])
    with pytest.raises(CheckpointError, match="spectra need a flow trained on spectra"):
        run_spectral_catalog(obs, repo_root / "checkpoints" / "dirichlet_nsa")


def test_missing_spectra_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no spectrum files"):
        read_spectral_inputs([tmp_path])
    pd.DataFrame({"id": ["a"], "z": [0.1]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match="lacks columns"):
        read_spectral_inputs([tmp_path / "t.parquet"])


def test_spectral_catalog_resumes_without_recomputing(spec_flow, shared_data, tmp_path, monkeypatch):
    import sedscale.infer.spectra as spectra_mod

    monkeypatch.setattr(spectra_mod, "CHUNK_SPECTRA", 2)
    obs = read_spectral_inputs([shared_data / "sdss_spectra"])
    options = CatalogOptions(n_samples=100, seed=4)
    work = tmp_path / "parts"
    full = run_spectral_catalog(obs, spec_flow, options, check_support=False, work_dir=work)
    parts = sorted(work.glob("part-*.parquet"))
    assert len(parts) == 3
    kept_mtime = parts[0].stat().st_mtime_ns
    parts[2].unlink()
    with pytest.raises(ConfigError, match="--resume"):
        run_spectral_catalog(obs, spec_flow, options, check_support=False, work_dir=work)
    with pytest.raises(ConfigError, match="different run"):
        run_spectral_catalog(obs, spec_flow, CatalogOptions(n_samples=50), check_support=False, work_dir=work,
                             resume=True)
    resumed = run_spectral_catalog(obs, spec_flow, options, check_support=False, work_dir=work, resume=True)
    assert parts[0].stat().st_mtime_ns == kept_mtime
    assert resumed.column_names == full.column_names
    for name in ("id", "status"):
        assert resumed.column(name).to_pylist() == full.column(name).to_pylist()
    for name in ("log_mstar_p50", "log_zsol_p16"):
        np.testing.assert_array_equal(resumed.column(name).to_numpy(), full.column(name).to_numpy())


def test_spectral_cli_reports_what_it_wrote(spec_flow, shared_data, tmp_path, capsys):
    from sedscale.cli.catalog import main

    out = tmp_path / "cli.parquet"
    assert main([str(shared_data / "sdss_spectra"), "--flow", str(spec_flow), "--out", str(out), "--n-samples", "100",
                 "--cluster", "none", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"run_catalog: written {out}" in printed and len(pd.read_parquet(out)) == 6
