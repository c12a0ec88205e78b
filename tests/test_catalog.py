"""Posterior catalogs: bin/run_catalog's pipeline on a mock catalog with truths and on the real NSA rows.

A tiny flow is trained once per session on a few thousand simulations (the
real simulator and trainer, ~30 s); its x-support reference is built from
the same simulations on first use.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sedscale.errors import ConfigError, MissingDataError
from sedscale.infer.catalog import CatalogOptions, plan_catalog, run_catalog
from sedscale.infer.mock import DEFECTS, write_mock_nsa
from sedscale.infer.quality import STATUSES, check_photometry
from sedscale.infer.summaries import STAT_NAMES, summarize
from sedscale.infer.support import XSupport, fit_support
from sedscale.io.catalog import CatalogFormatError, ColumnMapping, read_catalog

Z_RANGE = (0.01, 0.06)


@pytest.fixture(scope="session")
def mock_run(tiny_flow, mock_catalog, tmp_path_factory):
    """The mock catalog through run_catalog (in this process), as Parquet and FITS with samples."""
    out = tmp_path_factory.mktemp("catalog_out")
    options = CatalogOptions(n_samples=200, partition_size=70, save_samples=True, seed=3)
    plan = plan_catalog(mock_catalog, tiny_flow, [out / "post.parquet", out / "post.fits"], options)
    summary = run_catalog(plan)
    return plan, summary, out


def read_truth(path: Path) -> np.ndarray:
    import fitsio

    return fitsio.read(str(path), ext=1)


def test_every_mock_row_is_accounted_for_in_input_order(mock_run, mock_catalog):
    _, summary, out = mock_run
    truth = read_truth(mock_catalog)
    df = pd.read_parquet(out / "post.parquet")
    assert list(df["id"]) == list(truth["NSAID"])
    assert set(df["status"]) <= set(STATUSES)
    assert summary.n_galaxies == 160 and summary.partitions_run == 3
    assert sum(summary.status_counts.values()) == 160
    defects = np.char.strip(truth["MOCK_DEFECT"].astype(str))
    bad = df[defects != ""]
    assert list(bad["status"]) == ["bad_input"] * len(DEFECTS)
    expected = {"nan_flux_g": "nan_flux:g", "zero_ivar_r": "zero_ivar:r", "missing_z": "missing_z",
                "negative_z": "nonpositive_z", "nonpositive_flux_u": "nonpositive_flux:u"}
    assert list(bad["reason"]) == [expected[d] for d in defects[defects != ""]]
    assert bad["log_mstar_p50"].isna().all() and (bad["n_samples"] == 0).all()
    good = df[df["status"] != "bad_input"]
    assert (good["n_samples"] == 200).all() and good["log_mstar_p50"].notna().all()
    # Out-of-support flags are calibrated on training sims to ~1.5%; the mock is drawn like them.
    assert (df["status"] == "out_of_support").sum() <= 10


def test_mock_68_percent_intervals_cover_the_truth_at_the_nominal_rate(mock_run, mock_catalog):
    plan, _, out = mock_run
    truth = read_truth(mock_catalog)
    df = pd.read_parquet(out / "post.parquet")
    ok = (df["status"] != "bad_input").to_numpy()
    hits = []
    for name in plan.posterior.param_names + ("log_mstar",):
        t = truth[f"TRUE_{name.upper()}"][ok]
        inside = (df[f"{name}_p16"].to_numpy()[ok] <= t) & (t <= df[f"{name}_p84"].to_numpy()[ok])
        hits.append(inside)
    coverage = np.mean(hits)
    assert 0.55 < coverage < 0.82, f"pooled 68% coverage {coverage:.3f}"
    mass = np.mean(hits[-1])
    assert 0.5 < mass < 0.9, f"log_mstar 68% coverage {mass:.3f}"


def test_parquet_and_fits_hold_the_same_numbers_units_and_provenance(mock_run):
    from astropy.table import Table

    plan, _, out = mock_run
    df = pd.read_parquet(out / "post.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # units must parse: no UnitsWarning except dex, silenced below
        t = Table.read(out / "post.fits", unit_parse_strict="silent")
    assert t.colnames == list(df.columns)
    for col in df.columns:
        a = df[col].to_numpy()
        b = np.asarray(t[col])
        if col.startswith("samples_"):
            np.testing.assert_array_equal(np.stack(a), b)
        elif a.dtype == object:
            assert [str(v) for v in a] == [v.decode() if isinstance(v, bytes) else str(v) for v in b], col
        else:
            np.testing.assert_array_equal(a, b, err_msg=col)
    assert str(t["mag_r"].unit) == "mag"
    assert str(t["sfr_1gyr_p50"].unit) == "solMass / yr"
    assert str(t["age_mw_mean"].unit) == "Gyr"
    assert str(t["log_mstar_p50"].unit) == "dex(solMass)"
    schema = pq.read_schema(out / "post.parquet")
    assert schema.field("log_mstar_p50").metadata[b"unit"] == b"dex(Msun)"
    assert pa.types.is_fixed_size_list(schema.field("samples_log_mass").type)
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert meta["sedscale.checkpoint_sha256"] == plan.spec.flow_sha256 == t.meta["CKPTHASH"]
    assert meta["sedscale.training_set_sha256"] == plan.posterior.metadata["training_set"]["manifest_sha256"]
    assert json.loads(meta["sedscale.prior"]) == json.loads(t.meta["PRIOR"]) == plan.posterior.metadata["prior"]
    assert meta["sedscale.version"] == t.meta["SEDSCVER"]
    assert meta["sedscale.flux_unit"] == t.meta["FLUXUNIT"] == "nanomaggy (NSA NMGY)"
    assert json.loads(meta["sedscale.units"])["sfr_100myr_p16"] == "Msun/yr"
    for q in ("log_mstar", "log_mstar_total", "log_mformed", "sfr_100myr", "sfr_1gyr", "z_mw", "age_mw", "tau_bc", "tau_ism",
              "log_mass", "sfh_fraction_7"):
        assert all(f"{q}_{s}" in df.columns for s in STAT_NAMES), q


def test_resume_recomputes_only_what_is_missing(tiny_flow, mock_catalog, tmp_path, capsys):
    options = CatalogOptions(n_samples=20, partition_size=60, seed=1)
    plan = plan_catalog(mock_catalog, tiny_flow, tmp_path / "a.parquet", options)
    first = run_catalog(plan)
    assert first.partitions_run == 3
    reference = pd.read_parquet(tmp_path / "a.parquet")
    # A finished run is never recomputed; an unfinished one needs --resume.
    assert run_catalog(plan).partitions_run == 0
    work = plan.work_dir
    (work / "part-000001.parquet").unlink()
    with pytest.raises(ConfigError, match="--resume"):
        run_catalog(plan)
    again = run_catalog(plan, resume=True)
    assert (again.partitions_run, again.partitions_skipped) == (1, 2)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), reference)
    # The partition directory opens as one table too (its _metadata), in input order.
    pd.testing.assert_frame_equal(pd.read_parquet(work), reference)
    # Other options for the same work directory: refused, nothing overwritten.
    other = plan_catalog(mock_catalog, tiny_flow, tmp_path / "a.parquet", CatalogOptions(n_samples=30, partition_size=60))
    with pytest.raises(ConfigError, match=r"different run .*options\.n_samples: 20 -> 30") as info:
        run_catalog(other, resume=True)
    assert "options.partition_size" not in str(info.value)  # only what differs is named
    # The CLI says when it reuses a finished run, and --overwrite recomputes it.
    from sedscale.cli.catalog import main

    argv = [str(mock_catalog), "--flow", str(tiny_flow), "--out", str(tmp_path / "c.parquet"), "--cluster", "none",
            "--n-samples", "20", "--partition-size", "60", "--no-progress"]
    assert main(argv) == 0  # a small catalog: its partitions are removed once assembled
    printed = capsys.readouterr()
    assert "removed the partition directory" in printed.out and not (tmp_path / "c.parquet.parts").exists()
    assert "warning: with 20 samples per galaxy the 2.5/97.5 percentiles" in printed.err
    # An existing output is not replaced without --overwrite (issue 38); --resume reuses the finished run.
    assert main(argv) == 2 and "c.parquet exists: --overwrite replaces it" in capsys.readouterr().err
    (tmp_path / "c.parquet").unlink()
    argv.append("--keep-parts")
    assert main(argv) == 0 and main(argv + ["--resume"]) == 0
    assert "reused             the finished run" in capsys.readouterr().out
    assert main(argv + ["--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "removed the earlier run's work directory (5 files)" in printed and "throughput" in printed
    (tmp_path / "c.parquet.parts" / "notes.txt").write_text("mine")
    assert main(argv + ["--overwrite"]) == 2
    assert (tmp_path / "c.parquet.parts" / "notes.txt").exists()


def test_one_run_at_a_time_per_work_directory(tiny_flow, mock_catalog, tmp_path):
    """A second run on a work directory in use is refused; a lock left by a dead process is taken over."""
    import socket
    import subprocess
    import sys

    from sedscale.io.lock import lock_path

    plan = plan_catalog(mock_catalog, tiny_flow, tmp_path / "a.parquet", CatalogOptions(n_samples=10, partition_size=80))
    lock = lock_path(plan.work_dir)
    host = socket.gethostname()
    lock.write_text(json.dumps({"pid": os.getppid(), "host": host, "since": "earlier"}))  # a live process
    with pytest.raises(ConfigError, match=f"in use by another run \\(pid {os.getppid()} on {host} since earlier\\)"):
        run_catalog(plan)
    assert not plan.work_dir.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": host, "since": "a killed run"}))
    assert run_catalog(plan).partitions_run == 2
    assert not lock.exists()


def test_distributed_client_gives_the_same_catalog(tiny_flow, mock_catalog, tmp_path):
    from distributed import Client, LocalCluster

    options = CatalogOptions(n_samples=20, partition_size=60, seed=1)
    local = run_catalog(plan_catalog(mock_catalog, tiny_flow, tmp_path / "a.parquet", options))
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        dist = run_catalog(plan_catalog(mock_catalog, tiny_flow, tmp_path / "b.parquet", options), client)
    assert dist.partitions_run == local.partitions_run == 3
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet"))


def test_a_parquet_dataset_and_a_csv_file_give_the_catalog_of_the_nsa_file(tiny_flow, mock_catalog, tmp_path):
    """Workers read their own rows (Parquet row groups across files, CSV seeks): same posteriors as the NSA file."""
    import pyarrow as pa

    options = CatalogOptions(n_samples=20, partition_size=60, seed=1)
    rows = read_catalog(mock_catalog)
    (tmp_path / "ds").mkdir()
    table = pa.Table.from_pandas(rows, preserve_index=False)
    pq.write_table(table.slice(0, 100), tmp_path / "ds" / "part-0.parquet", row_group_size=25)
    pq.write_table(table.slice(100), tmp_path / "ds" / "part-1.parquet", row_group_size=25)
    rows.to_csv(tmp_path / "cat.csv", index=False)
    mapping = ["id=id", "z=z", "flux=flux_{band}", "flux_ivar=flux_ivar_{band}", "flux_unit=nanomaggy"]
    outputs = {}
    for name, source in (("nsa", mock_catalog), ("parquet", tmp_path / "ds"), ("csv", tmp_path / "cat.csv")):
        plan = plan_catalog(source, tiny_flow, tmp_path / f"{name}.parquet", options,
                            mapping=None if name == "nsa" else mapping)
        run_catalog(plan)
        outputs[name] = pd.read_parquet(tmp_path / f"{name}.parquet")
    assert len(outputs["nsa"]) == len(rows)
    pd.testing.assert_frame_equal(outputs["parquet"], outputs["nsa"], check_dtype=False)
    pd.testing.assert_frame_equal(outputs["csv"], outputs["nsa"], check_dtype=False)


def test_real_nsa_rows_run_without_crash_and_every_row_is_accounted_for(tiny_flow, shared_data, tmp_path):
    files = sorted((shared_data / "nsa_lcs").glob("*.fits"))
    if not files:
        pytest.skip(f"no NSA FITS files in {shared_data / 'nsa_lcs'}")
    # Few samples, and a short redraw limit: a tiny flow extrapolates badly for the NSA's extreme x.
    options = CatalogOptions(n_samples=8, partition_size=1000, max_time=1.0)
    plan = plan_catalog(files, tiny_flow, tmp_path / "nsa.parquet", options, keep=["MASS"])
    summary = run_catalog(plan)
    df = pd.read_parquet(tmp_path / "nsa.parquet")
    assert summary.n_rows_read == 3947 and summary.n_duplicates == 3947 - 3418
    assert len(df) == 3418 and df["id"].is_unique
    assert list(df["id"]) == list(plan.source.read()["id"])
    assert set(df["status"]) <= set(STATUSES) and sum(summary.status_counts.values()) == 3418
    # The NSA subset holds non-positive fluxes and a zero ivar: flagged, never sampled.
    bad = df[df["status"] == "bad_input"]
    assert len(bad) >= 5 and bad["log_mstar_p50"].isna().all()
    assert bad["reason"].str.contains("nonpositive_flux|zero_ivar").all()
    sampled = df[df["n_samples"] > 0]
    assert sampled["log_mstar_p50"].notna().all() and (df["mass"] > 0).all()
    assert (df.loc[df["status"].isin(["ok", "out_of_support"]), "n_samples"] == 8).all()
    assert (df.loc[df["status"] == "sampling_timeout", "n_samples"] < 8).all()


def test_contraction_is_zero_for_the_prior_and_reported_per_galaxy(mock_run):
    """Posterior width against prior width: ~0 when the 'posterior' is the prior itself, 0.75 at half its width."""
    from sedscale.infer.catalog import model_for
    from sedscale.infer.contraction import DERIVED_CONTRACTION, UNCONSTRAINED_WIDTH, contraction_columns, quantity_values

    plan, _, out = mock_run
    model = model_for(plan.posterior)
    names = ["log_zsol", "tau_ism", *DERIVED_CONTRACTION]
    z = np.full(3, 0.03)
    theta = model.prior.sample(3 * 4000, np.random.default_rng(1), np.full(3 * 4000, 0.03)).reshape(3, 4000, -1)
    values = quantity_values(model, theta, z, names)  # fresh prior draws stand in for posteriors
    width = {n: np.subtract(*np.percentile(values[:, :, j], [84, 16], axis=1)) for j, n in enumerate(names)}
    as_prior = contraction_columns(model, width, z, np.full(3, np.nan))
    for n in names:
        np.testing.assert_allclose(as_prior[f"{n}_contraction"], 0.0, atol=0.12)
    half = contraction_columns(model, {n: w / 2 for n, w in width.items()}, z, None)
    for n in names:
        np.testing.assert_allclose(half[f"{n}_contraction"], 0.75, atol=0.05)
    assert set(as_prior["unconstrained"][0].split(",")) <= set(names) and half["unconstrained"][0] == ""
    # In the catalog: a column per physical parameter (not mass) and derived quantity, and the list.
    df = pd.read_parquet(out / "post.parquet")
    cols = [c for c in df.columns if c.endswith("_contraction")]
    assert "log_mass_contraction" not in cols and {"log_ssfr_100myr_contraction", "age_mw_contraction"} <= set(cols)
    sampled = df["n_samples"] > 0
    assert df.loc[sampled, cols].notna().all().all() and df.loc[~sampled, cols].isna().all().all()
    loose = df.loc[sampled, "tau_ism_contraction"] < 1 - UNCONSTRAINED_WIDTH**2
    assert (df.loc[sampled, "unconstrained"].str.contains("tau_ism") == loose).all()


def test_input_checks_flag_each_kind_of_bad_row():
    flux = np.full((8, 5), 100.0)
    ivar = np.full((8, 5), 1.0)
    z = np.full(8, 0.03)
    flux[1, 0] = np.nan
    ivar[2, 2] = 0.0
    z[3] = np.nan
    z[4] = -0.02
    z[5] = 0.5
    flux[6, 1], flux[6, 4] = 0.0, -3.0
    ivar[7, 3] = -1.0
    checked = check_photometry(flux, ivar, z, Z_RANGE)
    assert list(checked.reason) == [
        "", "nan_flux:u", "zero_ivar:r", "missing_z", "nonpositive_z", "z_outside_training_range",
        "nonpositive_flux:g,z", "invalid_ivar:i",
    ]
    assert list(checked.bad) == [False] + [True] * 7
    assert np.isnan(checked.x[1:]).all()
    np.testing.assert_allclose(checked.x[0], [17.5] * 5 + [1.0857362 / 100] * 5 + [0.03], rtol=1e-6)
    # What was measured is kept for refused rows too (a missing z), unusable bands are NaN.
    assert np.isfinite(checked.mag[3]).all() and np.isnan(checked.mag[1, 0]) and np.isfinite(checked.mag[1, 1:]).all()
    flux[0, 2] = np.inf
    assert check_photometry(flux, ivar, z, Z_RANGE).reason[0] == "infinite_flux:r"


def test_truncated_fits_and_missing_columns_give_clear_errors(mock_catalog, tiny_flow, tmp_path, capsys):
    from sedscale.cli.catalog import main

    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(mock_catalog.read_bytes()[:20000])
    with pytest.raises(CatalogFormatError, match="truncated"):
        read_catalog(truncated)
    assert main([str(truncated), "--flow", str(tiny_flow), "--out", str(tmp_path / "x.parquet"), "--cluster", "none"]) == 2
    assert "truncated" in capsys.readouterr().err
    with pytest.raises(MissingDataError):
        read_catalog(tmp_path / "absent.fits")
    table = pd.DataFrame({"objid": [1, 2], "zspec": [0.02, 0.03], **{f"f_{b}": [10.0, 20.0] for b in "ugriz"}})
    table.to_parquet(tmp_path / "cat.parquet")
    mapping = ColumnMapping.from_pairs(["id=objid", "z=zspec", "flux=f_{band}", "flux_ivar=ivar_{band}"])
    with pytest.raises(CatalogFormatError, match="missing column.*ivar_u"):
        read_catalog(tmp_path / "cat.parquet", mapping)
    with pytest.raises(CatalogFormatError, match="column mapping"):
        read_catalog(tmp_path / "cat.parquet")
    with pytest.raises(ConfigError, match="flux_ivar"):
        ColumnMapping.from_pairs(["z=zspec", "flux=f_{band}"])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CatalogFormatError, match="empty.csv: unreadable csv file"):
        read_catalog(tmp_path / "empty.csv", mapping)
    support = tmp_path / "x_support.npz"
    support.write_bytes((tiny_flow / "x_support.npz").read_bytes()[:3000] if (tiny_flow / "x_support.npz").is_file()
                        else b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError, match="unreadable x-support file .truncated or corrupt"):
        XSupport.load(support)


def test_a_flow_of_the_other_kind_is_refused_before_any_work(mock_catalog, tiny_flow, tmp_path, capsys):
    """A photometric catalog with a spectral flow (or the reverse) is a one-line error, not a 1-row catalog."""
    from sedscale.cli.catalog import main

    spectral = Path(__file__).resolve().parents[1] / "checkpoints" / "delayed_tau_spectra"
    out = tmp_path / "x.parquet"
    for flow in (spectral, spectral / "posterior.pt"):
        assert main([str(mock_catalog), "--flow", str(flow), "--out", str(out), "--cluster", "none"]) == 2
        err = capsys.readouterr().err
        assert "no COADD or B_FLUX HDU" in err and "conditioned on spectra" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not out.with_name(out.name + ".parts").exists()
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdss_spectra"
    spectra = sorted(folder.glob("*spec-*.fits"))
    if not spectra:
        pytest.skip(f"no SDSS spectrum files in {folder}: the reverse case (spectra with a photometric flow) not run")
    assert main([str(spectra[0]), "--flow", str(tiny_flow), "--out", str(out), "--cluster", "none"]) == 2
    assert "is an SDSS spectrum file" in capsys.readouterr().err and not out.exists()
    assert main([str(folder), "--flow", str(tiny_flow), "--out", str(out), "--cluster", "none"]) == 2
    assert "is an SDSS spectrum file" in capsys.readouterr().err
    assert main([str(spectra[0]), "--flow", str(tmp_path / "nope"), "--out", str(out), "--cluster", "none"]) == 2
    err = capsys.readouterr().err
    assert f"no checkpoint at {tmp_path / 'nope'}:" in err and "nope.json" not in err


def test_flux_columns_need_a_unit_from_the_mapping_or_the_file(tmp_path):
    """No silent nanomaggies: a unit from the mapping, or from the file's metadata, and never two that disagree."""
    flux = {f"f_{b}": [10.0, 20.0] for b in "ugriz"}
    table = pd.DataFrame({"zspec": [0.02, 0.03], **flux, **{f"e_{b}": [1.0, 2.0] for b in "ugriz"}})
    bare = tmp_path / "bare.parquet"
    table.to_parquet(bare)
    pairs = ["z=zspec", "flux=f_{band}", "flux_err=e_{band}"]
    with pytest.raises(ConfigError, match="flux columns need a unit .*the file gives none.*flux_unit"):
        read_catalog(bare, ColumnMapping.from_pairs(pairs))
    given = read_catalog(bare, ColumnMapping.from_pairs(pairs + ["flux_unit=uJy"]))
    np.testing.assert_allclose(given["flux_u"], np.array([10.0, 20.0]) / 3.631)
    assert given.attrs["flux_unit"] == "uJy (column mapping)"
    # A Parquet file whose flux fields say 'uJy' (as astropy writes units) needs no flux_unit.
    fields = [pa.field(c, pa.float64(), metadata={"unit": "uJy"} if c.startswith("f_") else None) for c in table]
    labelled = tmp_path / "labelled.parquet"
    pq.write_table(pa.Table.from_pandas(table, schema=pa.schema(fields), preserve_index=False), labelled)
    read = read_catalog(labelled, ColumnMapping.from_pairs(pairs))
    np.testing.assert_allclose(read["flux_u"], given["flux_u"])
    assert read.attrs["flux_unit"] == "uJy (file unit uJy)"
    with pytest.raises(ConfigError, match="flux_unit=nanomaggy but the file gives its flux columns the unit uJy"):
        read_catalog(labelled, ColumnMapping.from_pairs(pairs + ["flux_unit=nanomaggy"]))
    # A unit off by a large factor shows in the median magnitude.
    from sedscale.infer.catalog import implausible_flux_scale

    assert implausible_flux_scale(given, "ugriz") == ""  # ~20 mag
    as_jy = read_catalog(bare, ColumnMapping.from_pairs(pairs + ["flux_unit=Jy"]))
    assert "median magnitude of the catalog is 6.0 with fluxes in Jy" in implausible_flux_scale(as_jy, "ugriz")


def test_unwritable_outputs_are_refused_before_any_work(mock_catalog, tiny_flow, tmp_path, capsys):
    from sedscale.cli.catalog import main

    (tmp_path / "adir.parquet").mkdir()
    assert main([str(mock_catalog), "--flow", str(tiny_flow), "--out", str(tmp_path / "adir.parquet"),
                 "--cluster", "none"]) == 2
    assert "it is a directory" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert main([str(mock_catalog), "--flow", str(tiny_flow), "--out", str(tmp_path / "y.parquet"),
                 "--work-dir", str(tmp_path / "afile"), "--cluster", "none"]) == 2
    assert "work directory" in capsys.readouterr().err and not (tmp_path / "y.parquet").exists()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write a read-only folder (root): the permission case is untestable")
        rc = main([str(mock_catalog), "--flow", str(tiny_flow), "--out", str(locked / "sub" / "x.parquet"),
                   "--cluster", "none", "--no-progress"])
        assert rc == 2
        err = capsys.readouterr().err.strip()
        assert f"{locked} is not a writable folder" in err and len(err.splitlines()) == 1
    finally:
        locked.chmod(0o755)


def test_an_output_that_is_the_input_catalog_is_refused(mock_catalog, tiny_flow, tmp_path, capsys):
    """--out naming the input (here a copy in FITS, and as a Parquet input) would overwrite it: refused, input intact."""
    import shutil

    from sedscale.cli.catalog import main

    fits = tmp_path / "cat.fits"
    shutil.copy(mock_catalog, fits)
    before = fits.read_bytes()
    assert main([str(fits), "--flow", str(tiny_flow), "--out", str(fits), "--cluster", "none", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is an input catalog and would be overwritten" in err and len(err.splitlines()) == 1
    assert fits.read_bytes() == before


def test_non_ascii_strings_for_a_fits_output_are_refused_before_any_inference(mock_catalog, tiny_flow, tmp_path,
                                                                               capsys, monkeypatch):
    """FITS strings are ASCII: non-ASCII ids stop the plan, a kept column the first partition holding one."""
    import sedscale.infer.catalog_plan as catalog_plan
    from sedscale.cli.catalog import main
    from sedscale.io.catalog import write_fits

    rows = read_catalog(mock_catalog).iloc[:60].reset_index(drop=True)
    rows["name"] = [f"galaxy {k}" for k in range(len(rows))]
    ascii_ids = rows.copy()
    rows["id"] = ["galaxié-1", "銀河2"] + [f"g{k}" for k in range(2, len(rows))]
    rows.to_csv(tmp_path / "unicode_ids.csv", index=False)
    columns = ["id=id", "z=z", "flux=flux_{band}", "flux_ivar=flux_ivar_{band}", "flux_unit=nanomaggy"]
    out = tmp_path / "x.fits"
    argv = [str(tmp_path / "unicode_ids.csv"), "--flow", str(tiny_flow), "--out", str(out), "--columns", *columns,
            "--cluster", "none", "--no-progress", "--no-support-check"]
    for extra in ([], ["--resume"]):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "ids 'galaxié-1', '銀河2' are not ASCII: FITS tables hold ASCII strings only; write Parquet" in err
        assert not list(tmp_path.glob("x.fits.parts/part-*")) and not out.exists()
    # Parquet holds them.
    options = CatalogOptions(n_samples=20, partition_size=20, seed=1, check_support=False)
    plan_catalog(tmp_path / "unicode_ids.csv", tiny_flow, tmp_path / "x.parquet", options, mapping=columns)
    # A kept column read past the plan's first rows: its partition stops before inference, the earlier ones stand.
    ascii_ids.loc[45, "name"] = "NGC 4321 ≡ M100"
    ascii_ids.to_csv(tmp_path / "unicode_names.csv", index=False)
    monkeypatch.setattr(catalog_plan, "SAMPLE_ROWS", 10)
    plan = plan_catalog(tmp_path / "unicode_names.csv", tiny_flow, tmp_path / "y.fits", options, mapping=columns,
                        keep=["name"])
    with pytest.raises(ConfigError, match=r"^values 'NGC 4321 ≡ M100' of column name are not ASCII: .*"
                                          r"or do not keep name$"):
        run_catalog(plan)
    assert sorted(p.name for p in plan.work_dir.glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]
    # The FITS writer's own check, whoever calls it.
    with pytest.raises(ConfigError, match="not ASCII"):
        write_fits(pa.table({"name": ["銀河2"]}), tmp_path / "z.fits")


def test_a_csv_with_quoted_newlines_runs_row_for_row(mock_catalog, tiny_flow, tmp_path, monkeypatch):
    """A quoted CSV field holding a newline is one galaxy; workers seek to rows past such fields."""
    import sedscale.io.source as source

    monkeypatch.setattr(source, "LINE_INDEX_STRIDE", 16)  # seeks inside this small file
    rows = read_catalog(mock_catalog).iloc[:100].reset_index(drop=True)
    rows["name"] = [f"NGC {k}\nM{k}" if k % 3 == 0 else f"galaxy {k}" for k in range(len(rows))]
    rows.to_csv(tmp_path / "cat.csv", index=False)
    columns = ["id=id", "z=z", "flux=flux_{band}", "flux_ivar=flux_ivar_{band}", "flux_unit=nanomaggy"]
    options = CatalogOptions(n_samples=20, partition_size=23, seed=1, check_support=False)
    plan = plan_catalog(tmp_path / "cat.csv", tiny_flow, tmp_path / "x.parquet", options, mapping=columns, keep=["name"])
    run_catalog(plan)
    got = pd.read_parquet(tmp_path / "x.parquet")
    np.testing.assert_array_equal(got["id"], rows["id"])
    assert got["name"].tolist() == rows["name"].tolist()
    np.testing.assert_allclose(got["z"], rows["z"])


def test_sigterm_stops_a_catalog_run_as_ctrl_c_does(mock_catalog, tiny_flow, tmp_path, capsys, monkeypatch):
    """scancel sends SIGTERM: the run must say how to resume, not die silently."""
    import signal
    import time

    import sedscale.cli.catalog as cli

    def killed_while_running(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this at once

    monkeypatch.setattr("sedscale.infer.catalog.run_catalog", killed_while_running)
    before = signal.getsignal(signal.SIGTERM)
    rc = cli.main([str(mock_catalog), "--flow", str(tiny_flow), "--out", str(tmp_path / "x.parquet"), "--cluster", "none"])
    assert rc == 130 and "rerun with --resume" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_distance_column_rescales_the_fluxes_to_the_redshift_distance(tmp_path):
    """Nearby galaxies: fluxes at distance D are read as if at d_L(z) (x (D / d_L)^2), z stays the SED's."""
    from sedscale.cosmology import cosmology_table

    z = np.array([0.004, 0.004, 0.004, 0.02])
    d_l = cosmology_table().luminosity_distance_cm(z) / 3.0856775814913673e24
    table = pd.DataFrame({"z": z, "d": [d_l[0], 2 * d_l[1], -1.0, d_l[3]],
                          **{f"f_{b}": [10.0] * 4 for b in "ugriz"}, **{f"e_{b}": [1.0] * 4 for b in "ugriz"}})
    table.to_csv(tmp_path / "near.csv", index=False)
    pairs = ["z=z", "flux=f_{band}", "flux_err=e_{band}", "flux_unit=nanomaggy"]
    plain = read_catalog(tmp_path / "near.csv", ColumnMapping.from_pairs(pairs))
    near = read_catalog(tmp_path / "near.csv", ColumnMapping.from_pairs(pairs + ["distance=d"]))
    np.testing.assert_allclose(near["flux_r"].iloc[[0, 3]], plain["flux_r"].iloc[[0, 3]], rtol=1e-6)
    np.testing.assert_allclose(near["flux_r"].iloc[1], 4 * plain["flux_r"].iloc[1], rtol=1e-6)
    np.testing.assert_allclose(near["flux_ivar_r"].iloc[1], plain["flux_ivar_r"].iloc[1] / 16, rtol=1e-6)
    np.testing.assert_array_equal(near["z"], z)
    assert np.isnan(near["flux_r"].iloc[2])  # no usable distance: no photometry, flagged nan_flux
    with pytest.raises(ConfigError, match="'distance' needs a 'z' column"):
        ColumnMapping.from_pairs(["z=none", "distance=d", "flux=f_{band}", "flux_err=e_{band}"])


def test_column_mapping_reads_magnitudes_units_and_extinction(tmp_path):
    mags = np.array([[18.0, 17.0, 16.5, 16.2, 16.0]])
    table = pd.DataFrame({
        "Z": [0.02],
        **{f"M_{b}": mags[:, k] for k, b in enumerate("ugriz")},
        **{f"E_{b}": [0.1] for b in "ugriz"},
        **{f"A_{b}": [0.2] for b in "ugriz"},
    })
    table.to_csv(tmp_path / "cat.csv", index=False)
    mapping = ColumnMapping.from_dict({"z": "Z", "mag": "M_{band}", "mag_err": "E_{band}", "extinction": "A_{band}"})
    df = read_catalog(tmp_path / "cat.csv", mapping)
    flux = df[[f"flux_{b}" for b in "ugriz"]].to_numpy()
    np.testing.assert_allclose(flux, 10 ** (-0.4 * (mags - 0.2 - 22.5)))
    checked = check_photometry(flux, df[[f"flux_ivar_{b}" for b in "ugriz"]].to_numpy(), df["z"].to_numpy())
    np.testing.assert_allclose(checked.x[0, :5], mags[0] - 0.2)
    np.testing.assert_allclose(checked.x[0, 5:10], 0.1)
    assert df["id"].tolist() == [0]
    # Fluxes in microjansky with errors: 3.631 uJy is one nanomaggy.
    pd.DataFrame({"z": [0.02], **{f"f{b}": [36.31] for b in "ugriz"}, **{f"e{b}": [3.631] for b in "ugriz"}}).to_parquet(
        tmp_path / "uJy.parquet")
    df = read_catalog(tmp_path / "uJy.parquet", ColumnMapping.from_pairs(["flux=f{band}", "flux_err=e{band}", "flux_unit=uJy"]))
    np.testing.assert_allclose(df[[f"flux_{b}" for b in "ugriz"]], 10.0)
    np.testing.assert_allclose(df[[f"flux_ivar_{b}" for b in "ugriz"]], 1.0)


def test_support_threshold_flags_the_calibrated_fraction(tmp_path):
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.1]])
    train = rng.multivariate_normal(np.zeros(3), cov, 30_000)
    support = fit_support(train, ["a", "b", "c"], n_reference=5000, n_calibration=5000, k=5)
    fresh = rng.multivariate_normal(np.zeros(3), cov, 20_000)
    flagged = np.mean(support.score(fresh) > 1)
    assert 0.008 < flagged < 0.025, flagged
    # Off the correlation (a "colour" outlier) although each value alone is typical.
    _, outside, reason = support.check(np.array([[1.0, -1.0, 0.0], [0.1, 0.1, 0.0], [9.0, 9.0, 0.0]]))
    assert list(outside) == [True, False, True]
    assert reason[0] == "low_training_density" and "outside_training_range:a,b" in reason[2]
    loaded = XSupport.load(support.save(tmp_path / "s.npz"))
    np.testing.assert_array_equal(loaded.score(fresh[:100]), support.score(fresh[:100]))


def test_summary_percentiles_are_numpys_bit_for_bit():
    rng = np.random.default_rng(2)
    for s in (1, 2, 3, 40, 41, 1000):
        values = rng.normal(size=(20, s)) * 10 ** rng.uniform(-5, 5, (20, 1))
        values[:4] = np.round(values[:4])  # ties
        stats = summarize({"q": values})
        expected = np.percentile(values, [2.5, 16, 50, 84, 97.5], axis=1)
        for k, stat in enumerate(STAT_NAMES[:-1]):
            np.testing.assert_array_equal(stats[f"q_{stat}"], expected[k], err_msg=f"{s} samples, {stat}")
        np.testing.assert_array_equal(stats["q_mean"], values.mean(axis=1))


def test_summaries_ignore_missing_samples():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(3, 4001))
    values[1, :2001] = np.nan
    values[2] = np.nan
    stats = summarize({"q": values})
    assert list(stats) == [f"q_{s}" for s in STAT_NAMES]
    np.testing.assert_allclose(stats["q_p50"][0], np.median(values[0]))
    np.testing.assert_allclose(stats["q_p16"][1], np.percentile(values[1, 2001:], 16))
    assert np.isnan(stats["q_mean"][2])
    assert abs(stats["q_p975"][0] - 1.96) < 0.1


def _random_flow(kind: str, **options):
    """A randomly initialised flow of ``kind`` on the dirichlet prior (sampling does not need training)."""
    import torch

    from sedscale.models import get_model
    from sedscale.train.config import FlowConfig
    from sedscale.train.flows import Normalization, build_flow

    torch.manual_seed(0)
    prior = get_model("dirichlet").prior
    rng = np.random.default_rng(0)
    norm = Normalization(rng.normal(size=prior.dim), rng.uniform(0.5, 2, prior.dim), rng.normal(size=11),
                         rng.uniform(0.5, 2, 11))
    config = FlowConfig(kind=kind, num_transforms=4, hidden_features=32, num_blocks=2, theta_transform="logit",
                        **options)
    return build_flow(config, prior, norm).eval()


@pytest.mark.parametrize("embedding", [None, "mlp"])
def test_coupling_sampler_draws_what_the_flow_draws(embedding):
    """The direct coupling inverse gives zuko's samples (same seed) to float32 rounding, with or
    without an embedding net."""
    import torch

    from sedscale.infer.posterior import CouplingSampler

    flow = _random_flow("zuko_nice", embedding=embedding, embedding_features=8, embedding_hidden=16)
    x = torch.randn(5, 11)
    with torch.inference_mode():
        torch.manual_seed(3)
        expected = flow.sample(300, x)
        # One pass; passes of 2 galaxies; passes of 128 samples of one galaxy.
        for rows in (10_000, 600, 128):
            sampler = CouplingSampler.from_flow(flow, rows_per_pass=rows)
            assert sampler is not None
            torch.manual_seed(3)
            got = sampler.sample(300, x)
            assert got.shape == expected.shape == (300, 5, 11)
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"{rows} rows")
    assert CouplingSampler.from_flow(_random_flow("zuko_nsf")) is None


def test_a_partition_without_usable_rows_has_the_schema_of_the_others(mock_run):
    from sedscale.infer.catalog import infer_frame, model_for

    plan, _, _ = mock_run
    part = plan.source.read(max_rows=4)
    part["z"] = np.nan
    table = infer_frame(part, plan.posterior, model_for(plan.posterior), plan.support, plan.spec.options,
                        plan.spec.z_range, 0)
    reference = pq.read_schema(plan.work_dir / "part-000000.parquet")
    assert table.schema.equals(reference.remove_metadata())
    assert set(table.column("status").to_pylist()) == {"bad_input"}


@pytest.mark.slow
def test_mcmc_subset_and_fallback_in_the_same_run(tiny_flow, tmp_path):
    """A galaxy pushed outside the support gets an MCMC posterior (method mcmc) consistent with its truth;
    a benchmark subset gets an ANPE-vs-MCMC table; --resume keeps every finished MCMC galaxy."""
    import fitsio

    from sedscale.infer.catalog_mcmc import CatalogMCMC, mcmc_table_path, select_subset
    from sedscale.validate.mcmc import MCMCConfig

    path = write_mock_nsa(tmp_path / "mock_small.fits", n=12, seed=9, z_range=Z_RANGE, n_defects=0)
    data = fitsio.read(str(path), ext=1)
    plan = plan_catalog(path, tiny_flow, tmp_path / "unused.parquet", CatalogOptions(n_samples=10))
    # Galaxy 0: its noiseless ugriz with errors 3x larger than the noise model gives at its flux -> outside the
    # training support, with the truth at the likelihood's peak.
    names = plan.posterior.param_names
    theta = np.array([[data[f"TRUE_{p.upper()}"][0] for p in names]])
    data["NMGY"][0, 2:] = plan.posterior.model.photometry(theta, data["Z"][:1])[0]
    data["NMGY_IVAR"][0] /= 9.0
    pushed = tmp_path / "mock_pushed.fits"
    fitsio.write(str(pushed), data, clobber=True)
    # emcee: one model call per walker step (zeus slice steps cost ~20), so the chains take seconds.
    short = MCMCConfig.until_converged(1200, n_walkers=24, check_every=600, rhat_max=1.2, min_ess=50.0, n_init=2000,
                                       sampler="emcee")
    request = CatalogMCMC(subset=2, fallback=True, config=short, anpe_samples=400)
    # The 15-epoch test flow fits few galaxies well enough for the fit check: the subset needs ok rows.
    options = CatalogOptions(n_samples=200, partition_size=6, seed=2, fit_check=False)
    lines = []
    plan = plan_catalog(pushed, tiny_flow, [tmp_path / "cat.parquet", tmp_path / "cat.fits"], options, mcmc=request)
    summary = run_catalog(plan, log=lines.append)
    df = pd.read_parquet(tmp_path / "cat.parquet")
    fits_rows = fitsio.read(str(tmp_path / "cat.fits"), ext=1)
    assert fits_rows["method"][0].strip() == "mcmc" and not fits_rows["mcmc_converged"][1]
    row = df.iloc[0]
    assert row["method"] == "mcmc" and row["status"] in ("ok", "mcmc_not_converged")
    assert "outside" in row["reason"] or "sigma" in row["reason"]  # why it was sent stays said
    assert row["mcmc_n_iter"] >= 600 and row["n_samples"] == 200 and row["mcmc_max_rhat"] > 1
    truth = read_truth(pushed)
    for name in ("log_mass", "log_mstar"):
        assert row[f"{name}_p025"] <= truth[f"TRUE_{name.upper()}"][0] <= row[f"{name}_p975"], name
    served = df[df["method"] == "anpe"]
    assert not served["mcmc_converged"].any() and (served["mcmc_n_iter"] == 0).all()
    assert len(served) == 12 - (df["method"] == "mcmc").sum()
    # The benchmark: 2 ok galaxies x 11 parameters, shift/width/KS, diagnostics and both CPU costs.
    bench = pd.read_parquet(mcmc_table_path(tmp_path / "cat.parquet"))
    assert bench["galaxy_id"].nunique() == 2 and len(bench) == 22
    assert {"delta_median_sigma", "width_ratio", "ks_p", "rhat", "converged", "mcmc_cpu_s", "anpe_cpu_s"} <= set(bench)
    assert set(df.set_index("id").loc[bench["galaxy_id"].unique(), "status"]) == {"ok"}
    text = summary.format()
    assert "mcmc subset        2 galaxies" in text and "mcmc fallback" in text
    n_mcmc = summary.mcmc.run
    assert n_mcmc == 2 + summary.mcmc.fallback_rows.size and any("mcmc: " in m for m in lines)
    # Resumed (or rerun): every finished MCMC galaxy is kept, the catalog is the same.
    again = run_catalog(plan, resume=True, log=lines.append)
    assert (again.mcmc.run, again.mcmc.reused) == (0, n_mcmc)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cat.parquet"), df)
    # The subset is stratified and seeded: the same rows for the same seed, ok rows only.
    rows = pd.DataFrame({"status": ["ok"] * 30 + ["bad_input"] * 5, "z": np.linspace(0.01, 0.06, 35),
                         **{f"mag_{b}": np.linspace(15, 18, 35)[::-1] + k for k, b in enumerate("ugriz")}})
    pick = select_subset(rows, tuple("ugriz"), 9, seed=1)
    assert pick.size == 9 and pick.max() < 30 and np.array_equal(pick, select_subset(rows, tuple("ugriz"), 9, seed=1))
    with pytest.raises(ConfigError, match="subset must be a non-negative integer"):
        CatalogMCMC(subset=-1)
    # A zero budget is refused before any work, not replaced by the default.
    from sedscale.cli.catalog import main

    argv = [str(pushed), "--flow", str(tiny_flow), "--out", str(tmp_path / "z.parquet"), "--cluster", "none",
            "--fallback", "mcmc", "--mcmc-max-iter", "0"]
    assert main(argv) == 2 and not (tmp_path / "z.parquet.parts").exists()


@pytest.mark.slow
def test_killed_worker_damaged_and_foreign_partitions_lose_and_duplicate_nothing(tiny_flow, mock_catalog, tmp_path):
    """A worker SIGKILLed mid-run, then a truncated partition and one of another run: the catalog of a clean run."""
    import os
    import shutil
    import signal

    from sedscale.cluster import cluster_config_from_dict, open_client

    options = CatalogOptions(n_samples=20, partition_size=20, seed=4)
    run_catalog(plan_catalog(mock_catalog, tiny_flow, tmp_path / "clean.parquet", options))
    clean = pd.read_parquet(tmp_path / "clean.parquet")
    plan = plan_catalog(mock_catalog, tiny_flow, tmp_path / "run.parquet", options)
    config = {"type": "local", "n_workers": 2, "threads_per_worker": 1, "memory_limit": "auto",
              "dashboard_address": None}
    killed, seen = [], []
    with open_client(cluster_config_from_dict(config)) as client:
        def kill_a_busy_worker(entry):
            seen.append(entry["file"])
            if killed:
                return
            pids, assigned = client.run(os.getpid), client.processing()
            address = max(pids, key=lambda a: len(assigned.get(a, ())))
            os.kill(pids[address], signal.SIGKILL)
            killed.append(len(assigned.get(address, ())))

        summary = run_catalog(plan, client, on_partition=kill_a_busy_worker)
    assert killed and killed[0] >= 1  # the killed worker held unfinished partitions
    assert sorted(seen) == [f"part-{i:06d}.parquet" for i in range(plan.n_partitions)]  # each once
    assert summary.galaxies_run == len(clean)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run.parquet"), clean)
    # A truncated partition file and a partition file of another run (other seed) in its place.
    other = plan_catalog(mock_catalog, tiny_flow, tmp_path / "other.parquet", CatalogOptions(n_samples=20, partition_size=20,
                                                                                          seed=5))
    run_catalog(other)
    work = plan.work_dir
    data = (work / "part-000002.parquet").read_bytes()
    (work / "part-000002.parquet").write_bytes(data[: len(data) // 2])
    shutil.copy(other.work_dir / "part-000005.parquet", work / "part-000005.parquet")
    again = run_catalog(plan, resume=True)
    assert (again.partitions_run, again.partitions_skipped) == (2, plan.n_partitions - 2)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run.parquet"), clean)


def test_the_mcmc_fallback_takes_rows_outside_the_support_also_when_the_fit_check_flagged_them():
    from sedscale.infer.catalog_mcmc import select_fallback

    rows = pd.DataFrame({
        "status": ["ok", "out_of_support", "poor_fit", "poor_fit", "sampling_timeout", "bad_input"],
        "reason": ["", "low_training_density", "outside_training_range:mag_u;poor_fit:p=1e-05", "poor_fit:p=0.0e+00",
                   "low_acceptance:3/10_samples_from_500_draws", "nan_flux:u"],
    })
    assert select_fallback(rows).tolist() == [1, 2, 4]


def test_an_nsa_file_is_refused_for_a_flow_whose_bands_of_those_names_are_other_filters(mock_catalog, tmp_path):
    """The NSA's g r z are SDSS's; the Legacy-Surveys flow's g r z are DECam's: refused, not silently swapped."""
    with pytest.raises(ConfigError, match=r"bands g \(decam_g\), r \(decam_r\), z \(decam_z\) are not the NSA's"):
        plan_catalog(mock_catalog, "legacy_wise", tmp_path / "a.parquet")
    assert plan_catalog(mock_catalog, "galex_sdss", tmp_path / "b.parquet").source.kind == "nsa"
