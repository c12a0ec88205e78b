"""A careless user and a flaky machine: inputs changed, misread or corrupt, refusals before a cluster starts.

Each test reproduces a failure found by an adversarial trial of ``bin/run_catalog``
(docs/reliability.md) and checks the one-line error, exit status 2, or the right result.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sedscale.errors import ConfigError, InputChangedError
from sedscale.infer.catalog import CatalogOptions, plan_catalog, run_catalog
from sedscale.io.catalog import CatalogFormatError, read_catalog, write_fits_stream, write_parquet_stream
from sedscale.observe.filters import SDSS_BANDS

REPO = Path(__file__).resolve().parents[1]


def _canonical_frame(mock_catalog: Path) -> pd.DataFrame:
    df = read_catalog(mock_catalog)
    return df[["id", "z", *(f"flux_{b}" for b in SDSS_BANDS), *(f"flux_ivar_{b}" for b in SDSS_BANDS)]]


# ----------------------------------------------------------------------------- 1. input changed during a run
@pytest.mark.parametrize("how", ["in_place", "replaced"])
def test_an_input_rewritten_during_the_run_stops_it_naming_the_file(tiny_flow, mock_catalog, tmp_path, how):
    """After 4 partitions NMGY x 10 is written into the catalog (in place, or a copy os.replace'd): no mixed catalog."""
    import fitsio

    catalog = tmp_path / "cat.fits"
    shutil.copy(mock_catalog, catalog)
    plan = plan_catalog(catalog, tiny_flow, tmp_path / "out.parquet", CatalogOptions(n_samples=20, partition_size=20))

    def rewrite_after_four(entry) -> None:
        if len(list(plan.work_dir.glob("part-*.parquet"))) != 4:
            return
        data = fitsio.read(str(catalog), ext=1)
        data["NMGY"] *= 10
        if how == "in_place":
            with fitsio.FITS(str(catalog), "rw") as fits:
                fits[1].write(data, firstrow=0)
        else:
            copy = tmp_path / "copy.fits"
            fitsio.write(str(copy), data, clobber=True)
            os.replace(copy, catalog)

    with pytest.raises(InputChangedError, match=f"{catalog}: the input file changed during the run"):
        run_catalog(plan, on_partition=rewrite_after_four)
    assert not (tmp_path / "out.parquet").exists()
    # The partitions of the old contents are not resumed into a catalog of the new ones.
    again = plan_catalog(catalog, tiny_flow, tmp_path / "out.parquet", CatalogOptions(n_samples=20, partition_size=20))
    with pytest.raises(ConfigError, match="holds a different run .*catalog.files"):
        run_catalog(again, resume=True)


def test_a_copy_that_kept_size_and_time_is_caught_by_its_fingerprint(mock_catalog, tmp_path):
    """``cp -p`` of other contents of the same size keeps size and mtime: the head/tail fingerprint differs."""
    from sedscale.io.source import open_catalog, read_partition

    catalog = tmp_path / "cat.fits"
    shutil.copy(mock_catalog, catalog)
    source = open_catalog(catalog)
    stat = catalog.stat()
    data = bytearray(catalog.read_bytes())
    data[-100] ^= 0xFF  # inside the last block of table data
    catalog.write_bytes(bytes(data))
    os.utime(catalog, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(InputChangedError, match="contents differ"):
        read_partition(source.partition(0, 50), source.spec)


# ----------------------------------------------------------------------------- 3. sedscale's layout without a unit
def test_sedscales_layout_without_a_flux_unit_is_refused_and_its_unit_is_read(mock_catalog, tmp_path):
    """No unit metadata: refused, never read as nanomaggies; with a Parquet field unit uJy it is converted."""
    from sedscale.io.source import open_catalog

    df = _canonical_frame(mock_catalog)
    bare = tmp_path / "bare.parquet"
    df.to_parquet(bare)
    with pytest.raises(ConfigError, match="in sedscale's layout but its flux columns carry no flux unit"):
        open_catalog(bare)
    ujy = 3.631  # 1 nanomaggy in uJy
    table = pa.Table.from_pandas(df.assign(**{f"flux_{b}": df[f"flux_{b}"] * ujy for b in SDSS_BANDS},
                                           **{f"flux_ivar_{b}": df[f"flux_ivar_{b}"] / ujy**2 for b in SDSS_BANDS}),
                                 preserve_index=False)
    fields = [f.with_metadata({"unit": "uJy"}) if f.name.startswith("flux_") else f for f in table.schema]
    pq.write_table(table.cast(pa.schema(fields)), tmp_path / "ujy.parquet")
    source = open_catalog(tmp_path / "ujy.parquet")
    assert source.flux_unit == "uJy (file unit uJy)"
    np.testing.assert_allclose(source.read()["flux_r"], df["flux_r"], rtol=1e-12)


# ----------------------------------------------------------------------------- 9. refusals before the cluster starts
def _no_cluster(*args, **kwargs):
    raise AssertionError("a cluster was started before the refusal")


@pytest.fixture
def cli(tiny_flow, mock_catalog, tmp_path, monkeypatch, capsys):
    """``run(*extra) -> (status, stderr)`` of bin/run_catalog on the mock catalog; a started cluster fails the test."""
    from sedscale.cli import catalog

    def run(*extra: str, cluster: bool = False, flow: Path = tiny_flow) -> tuple[int, str]:
        if not cluster:
            monkeypatch.setattr(catalog, "announced_client", _no_cluster)
        argv = [str(mock_catalog), "--flow", str(flow), "--out", str(tmp_path / "out.parquet"), "--n-samples", "20",
                "--partition-size", "60", "--no-progress", "--keep-parts", *extra]
        status = catalog.main(argv)
        return status, capsys.readouterr().err

    return run


def test_resume_with_other_options_is_refused_before_a_cluster_starts(cli, tmp_path):
    assert cli("--cluster", "none")[0] == 0
    (tmp_path / "out.parquet.parts" / "part-000001.parquet").unlink()
    status, err = cli("--resume", "--n-samples", "30")
    assert status == 2 and "holds a different run" in err and "options.n_samples: 20 -> 30" in err
    status, err = cli()
    assert status == 2 and "unfinished run of this configuration (2/3 partitions); pass --resume" in err


def test_a_work_directory_in_use_is_refused_before_a_cluster_starts(cli, tmp_path):
    import socket

    from sedscale.io.lock import lock_path

    lock = lock_path(tmp_path / "out.parquet.parts")
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "earlier"}))
    status, err = cli()
    assert status == 2 and "is in use by another run" in err
    assert lock.exists()  # the other run's lock is left alone


def test_a_sidecar_naming_another_model_is_refused_before_a_cluster_starts(cli, tiny_flow, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(tiny_flow, edited)
    sidecar = edited / "posterior.json"
    for name, message in (("delayed_tau", "the metadata's model 'delayed_tau' has parameters"),
                          ("no_such_model", "forward model cannot be built")):
        meta = json.loads(sidecar.read_text())
        meta["model"] = {"name": name, "options": {}}
        sidecar.write_text(json.dumps(meta))
        status, err = cli(flow=edited)
        assert status == 2 and message in err and err.count("error:") == 1 and "Traceback" not in err, err


# ----------------------------------------------------------------------------- 9/10. corrupt data on a worker: one line
@pytest.mark.slow
def test_corrupt_data_beyond_the_planned_rows_stops_the_run_in_one_line(mock_catalog, tiny_flow, tmp_path):
    """Row group 3 of 4 damaged: planning reads footers and the first rows; the worker that reads it stops the run.

    A real local cluster in a subprocess: its workers' stderr is the run's stderr, and must hold no traceback.
    """
    df = _canonical_frame(mock_catalog)
    path = tmp_path / "cat.parquet"
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table.cast(pa.schema([f.with_metadata({"unit": "nanomaggy"}) if f.name.startswith("flux_") else f
                                         for f in table.schema])),
                   path, row_group_size=40, compression="none")
    column = pq.ParquetFile(path).metadata.row_group(2).column(3)
    data = bytearray(path.read_bytes())
    start = column.data_page_offset
    data[start : start + 64] = b"\xff" * 64  # the page header: unreadable, not merely other numbers
    path.write_bytes(bytes(data))
    # Planning reads the first SAMPLE_ROWS rows (10,000): fewer here, so that the damage lies beyond them.
    run = ("import sys; import sedscale.infer.catalog_plan as plan; plan.SAMPLE_ROWS = 40; "
           "from sedscale.cli.catalog import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run(
        [sys.executable, "-c", run, str(path), "--flow", str(tiny_flow), "--out", str(tmp_path / "out.parquet"),
         "--n-samples", "10", "--partition-size", "40", "--n-workers", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower() or "Traceback" in line]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and errors[0].startswith("run_catalog: error: ") and "rows 80..119 are unreadable" in errors[0]
    assert not (tmp_path / "out.parquet").exists()


def test_workers_ignore_ctrl_c_and_leave_sedscale_errors_to_the_driver():
    """Ctrl-C reaches the whole process group: the driver handles it; workers must not each print a traceback."""
    from distributed import Client, LocalCluster

    from sedscale.cluster.plugins import ExpectedErrorFilter, WorkerTuning

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(WorkerTuning(1))
        assert client.run(lambda: signal.getsignal(signal.SIGINT) == signal.SIG_IGN) == {
            w: True for w in client.scheduler_info()["workers"]}
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # the driver still takes Ctrl-C

    def record(exception_text: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.worker", logging.ERROR, "", 0,
                                 "Compute Failed\nKey: %s\nState: %s\nTask: %s\nException: %r\nTraceback: %r\n",
                                 ("k", "executing", "task", exception_text, "tb"), None)

    keep = ExpectedErrorFilter()
    assert not keep.filter(record("InputChangedError('cat.fits: the input file changed')"))
    assert not keep.filter(record("CatalogFormatError('corrupt')"))
    assert keep.filter(record("ZeroDivisionError('a bug')"))


# ----------------------------------------------------------------------------- 12. outputs in bounded memory
def _mixed_tables(n_tables: int, rows: int) -> list[pa.Table]:
    rng = np.random.default_rng(1)
    tables = []
    for k in range(n_tables):
        ids = [f"g{k}-{i}" + "x" * int(rng.integers(0, 12)) for i in range(rows)]
        samples = rng.normal(size=(rows, 3)).astype(np.float32)
        tables.append(pa.table({
            "id": ids, "n": np.arange(rows, dtype=np.int64) + k * rows, "x": rng.normal(size=rows),
            "y": rng.normal(size=rows).astype(np.float32), "ok": rng.random(rows) > 0.5,
            "samples": pa.FixedSizeListArray.from_arrays(pa.array(samples.ravel()), 3),
        }))
    return tables


def test_streamed_fits_equals_astropys_writer_of_the_whole_table(tmp_path):
    """One table at a time, strings as wide as the longest in any table, the same cells astropy writes."""
    from astropy.io import fits
    from astropy.table import Table

    tables = _mixed_tables(4, 37)
    schema = tables[0].schema
    write_fits_stream(lambda: iter(tables), tmp_path / "s.fits", schema, {"RUNHASH": ("abc", "run")})
    whole = pa.concat_tables(tables)
    Table.from_pandas(whole.drop_columns("samples").to_pandas()).write(tmp_path / "a.fits")
    ours, ref = Table.read(tmp_path / "s.fits"), Table.read(tmp_path / "a.fits")
    for name in ref.colnames:
        np.testing.assert_array_equal(np.asarray(ours[name]), np.asarray(ref[name]), err_msg=name)
    np.testing.assert_array_equal(np.asarray(ours["samples"]),
                                  np.stack(whole.column("samples").to_pylist()).astype(np.float32))
    with fits.open(tmp_path / "s.fits") as hdus:
        hdus.verify("exception")
        assert hdus[1].name == "POSTERIORS" and hdus[1].header["RUNHASH"] == "abc"


def test_streamed_parquet_gathers_small_tables_into_row_groups(tmp_path):
    """A row group per 250-row partition made the writer's metadata grow with the catalog."""
    tables = _mixed_tables(50, 20)
    write_parquet_stream(iter(tables), tmp_path / "a.parquet", tables[0].schema, row_group_bytes=4 * tables[0].nbytes)
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert meta.num_row_groups == 13 and meta.num_rows == 1000
    assert pq.read_table(tmp_path / "a.parquet").equals(pa.concat_tables(tables))


def test_tasks_are_made_and_submitted_a_window_at_a_time():
    """The driver holds a few tasks at a time, not one per partition of the whole catalog."""
    from dask import delayed
    from distributed import Client, LocalCluster

    from sedscale.cluster.execute import run_tasks

    made, recorded = [], []

    def tasks():
        for i in range(30):
            made.append(i)
            yield delayed(lambda k: k * k, pure=True)(i, dask_key_name=f"square-{i}")

    def record(i, result):
        assert len(made) <= len(recorded) + 2 * 2  # window 2 per thread, 2 threads
        recorded.append((i, result))

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        run_tasks(tasks(), client, record, window=2)
    assert sorted(recorded) == [(i, i * i) for i in range(30)]


def test_a_worker_error_is_raised_in_the_driver_and_stops_the_rest():
    from dask import delayed
    from distributed import Client, LocalCluster

    from sedscale.cluster.execute import run_tasks

    def task(i):
        if i == 3:
            raise CatalogFormatError("part 3 is corrupt")
        return i

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        recorded: list = []
        with pytest.raises(CatalogFormatError, match="part 3 is corrupt"):
            run_tasks((delayed(task)(i) for i in range(10)), client, lambda i, r: recorded.append(r), window=1)
        assert recorded == [0, 1, 2]
