"""Survey-scale simulation (sedscale.simulate, bin/run_simulate) on a real LocalCluster.

Runs are tiny (3000 rows in 6 partitions) and share one 2-worker cluster; the
1-worker reproduction goes through the command line.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sedscale.cli.simulate import main as cli_main
from sedscale.cluster import cluster_config_from_dict, open_client
from sedscale.errors import ConfigError, MissingDataError, SedscaleError
from sedscale.models import get_model
from sedscale.observe.layout import (
    FLUX_COLUMNS,
    FLUX_SIGMA_COLUMNS,
    FLUX_TRUE_COLUMNS,
    MAG_COLUMNS,
    MAG_SIGMA_COLUMNS,
    PHOTOMETRY_X_COLUMNS,
)
from sedscale.observe.noise import REASON_NONPOSITIVE, REASON_RANGE, REASON_SIGMA, load_default_noise_model
from sedscale.simulate import (
    MANIFEST_NAME,
    SimulationConfig,
    partition_filename,
    plan_run,
    read_manifest,
    read_simulation,
    read_simulation_metadata,
    redshift_from_catalog,
    run_simulation,
)
from sedscale.simulate.partition import next_batch_size

N, PART, SEED = 3000, 500, 7
N_PARTS = N // PART


def local_config(n_workers: int) -> dict:
    return {"type": "local", "n_workers": n_workers, "threads_per_worker": 1, "dashboard_address": ":0"}


@pytest.fixture(scope="module")
def client():
    with open_client(cluster_config_from_dict(local_config(2))) as c:
        yield c


@pytest.fixture(scope="module")
def reference(client, tmp_path_factory):
    """A finished 2-worker run: (config, summary, manifest)."""
    config = SimulationConfig("dirichlet", N, tmp_path_factory.mktemp("ref") / "sims", seed=SEED, partition_size=PART)
    summary = run_simulation(config, client)
    return config, summary, read_manifest(config.out)


def snapshot(directory) -> dict:
    """name -> (inode, mtime_ns, size) of every file: detects any rewrite."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(directory.iterdir())}


def shas(manifest) -> dict:
    return {k: v["sha256"] for k, v in manifest["partitions"].items()}


def wait_until_idle(client, timeout=60.0) -> None:
    """Wait for cancelled tasks that were already running to finish (and write their files)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(client.run(lambda dask_worker: dask_worker.state.executing_count).values()):
            return
        time.sleep(0.1)
    raise TimeoutError("workers still busy")


def test_dataset_schema_rows_and_metadata(reference):
    config, summary, manifest = reference
    model = get_model("dirichlet")
    table = read_simulation(config.out)
    assert table.num_rows == N == summary.rows_total == summary.rows_new
    np.testing.assert_array_equal(table["sim_id"].to_numpy(), np.arange(N))  # each row exactly once
    layout = FLUX_TRUE_COLUMNS + FLUX_COLUMNS + FLUX_SIGMA_COLUMNS + MAG_COLUMNS + MAG_SIGMA_COLUMNS
    derived = ("age_mw", "log_mformed", "log_mstar", "log_mstar_total", "sfr_100myr", "sfr_1gyr", "z_mw")
    assert table.column_names == ["sim_id", *model.param_names, "z", *layout, *derived]
    assert table.schema.field("sim_id").type == pa.int64()
    assert all(table.schema.field(c).type == pa.float32() for c in table.column_names[1:])
    df = table.to_pandas()
    assert df[list(PHOTOMETRY_X_COLUMNS) + list(derived)].notna().all().all()
    assert model.prior.in_support(df[list(model.param_names)].to_numpy(np.float64)).mean() > 0.999  # float32 rounding
    assert df["z"].between(0.01, 0.06).all()
    assert (df[list(MAG_SIGMA_COLUMNS)] > 0).all().all()
    np.testing.assert_allclose(df["mag_r"], 22.5 - 2.5 * np.log10(df["flux_r"]), atol=1e-4)
    # Bookkeeping: rejected draws counted by reason, never more than drawn.
    assert set(summary.dropped) <= {REASON_RANGE, REASON_SIGMA, REASON_NONPOSITIVE}
    assert summary.dropped[REASON_RANGE] > 0
    drawn = sum(p["drawn"] for p in manifest["partitions"].values())
    assert N + sum(summary.dropped.values()) <= drawn == summary.drawn_new
    # Manifest and per-file metadata describe the run.
    assert manifest["n_partitions"] == N_PARTS and sorted(manifest["partitions"], key=int) == [
        str(i) for i in range(N_PARTS)
    ]
    assert sorted(p.name for p in config.out.iterdir()) == sorted(
        [MANIFEST_NAME] + [partition_filename(i) for i in range(N_PARTS)]
    )
    meta = read_simulation_metadata(config.out)
    assert meta["model"] == "dirichlet"
    assert meta["param_names"] == list(model.param_names)
    assert meta["prior"] == model.prior.to_dict()
    assert meta["noise_model"] == json.loads(json.dumps(load_default_noise_model().to_dict()))
    assert meta["filters"] == ["sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0"]
    assert meta["cosmology"] == model.cosmology
    assert meta["config_hash"] == manifest["config_hash"]
    assert meta["redshift"] == {"kind": "uniform", "low": 0.01, "high": 0.06}
    assert meta["units"]["flux_r"] == "nanomaggy" and meta["units"]["log_mass"] == "dex(Msun)"
    assert "version" in meta


def test_rerunning_a_finished_run_changes_nothing(reference, client):
    config, _, _ = reference
    before = snapshot(config.out)
    for resume in (False, True):
        summary = run_simulation(config, client, resume=resume)
        assert summary.partitions_run == 0 and summary.partitions_skipped == N_PARTS
        assert summary.rows_total == N
    assert snapshot(config.out) == before


def test_output_holding_another_run_is_refused_untouched(reference, client):
    config, _, _ = reference
    before = snapshot(config.out)
    for changed in (dict(seed=SEED + 1), dict(n=N + 1), dict(z_range=(0.01, 0.05))):
        other = SimulationConfig(**{**_config_kwargs(config), **changed})
        with pytest.raises(ConfigError, match="different run"):
            run_simulation(other, client, resume=True)
    assert snapshot(config.out) == before


def _config_kwargs(config: SimulationConfig) -> dict:
    return dict(model=config.model, n=config.n, out=config.out, seed=config.seed, partition_size=config.partition_size)


def test_foreign_directory_and_bad_input_errors(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        run_simulation(SimulationConfig("dirichlet", 10, foreign))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    out = tmp_path / "sims"
    with pytest.raises(SedscaleError, match="unknown model 'nope'"):
        plan_run(SimulationConfig("nope", 10, out))
    with pytest.raises(ConfigError, match="exceeds the model's limit"):
        plan_run(SimulationConfig("dirichlet", 10, out, z_range=(0.01, 5.0)))
    with pytest.raises(ConfigError, match="0 < low < high"):
        plan_run(SimulationConfig("dirichlet", 10, out, z_range=(0.05, 0.01)))
    with pytest.raises(ConfigError, match="positive integer"):
        SimulationConfig("dirichlet", 0, out)
    with pytest.raises(MissingDataError):
        plan_run(SimulationConfig("dirichlet", 10, out, noise_model=str(tmp_path / "missing.json")))
    with pytest.raises(MissingDataError):
        plan_run(SimulationConfig("dirichlet", 10, out, z_catalog=str(tmp_path / "missing.parquet")))
    with pytest.raises(ConfigError, match="does not accept options"):
        plan_run(SimulationConfig("dirichlet", 10, out, model_options={"bogus": 1}))
    assert not out.exists()


def test_batch_sizes_depend_only_on_partition_history():
    assert next_batch_size(1000, 0, 0) == 2000
    assert next_batch_size(100, 900, 2000) == next_batch_size(100, 900, 2000)
    assert next_batch_size(10, 0, 10_000) <= 4 * 10 + 4096  # low acceptance: more rounds, bounded memory


def test_redshifts_drawn_from_a_catalog(client, tmp_path):
    values = np.array([0.015, 0.02, 0.03, 0.04, 0.05, np.nan, -1.0])
    catalog = tmp_path / "cat.parquet"
    pq.write_table(pa.table({"Z": values}), catalog)
    config = SimulationConfig("dirichlet", 600, tmp_path / "sims", partition_size=300, z_catalog=str(catalog))
    run_simulation(config, client)
    z = read_simulation(config.out, columns=["z"])["z"].to_numpy()
    assert set(np.unique(z)) <= set(values[:5].astype(np.float32))
    assert len(np.unique(z)) >= 3
    meta = read_simulation_metadata(config.out)["redshift"]
    assert meta["kind"] == "catalog" and meta["count"] == 5 and meta["column"] == "z"


def test_nsa_catalog_redshifts(shared_data):
    path = sorted((shared_data / "nsa_lcs").glob("*.fits"))[0]
    dist = redshift_from_catalog(path, "z", z_max=0.98)
    assert dist.count > 100 and 0.005 < dist.low < dist.high < 0.06
    draws = dist.sample(1000, np.random.default_rng(0))
    assert set(np.unique(draws)) <= set(dist.values())
    with pytest.raises(ConfigError, match="above the model's limit"):
        redshift_from_catalog(path, "z", z_max=0.01)
    with pytest.raises(ConfigError, match="no column"):
        redshift_from_catalog(path, "redshift")


def test_interrupted_run_resumes_without_redoing_finished_partitions(reference, client, tmp_path):
    _, _, ref_manifest = reference
    config = SimulationConfig("dirichlet", N, tmp_path / "sims", seed=SEED, partition_size=PART)
    finished = []

    def interrupt_after_two(result):
        finished.append(result["index"])
        if len(finished) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does in the driver

    with pytest.raises(KeyboardInterrupt):
        run_simulation(config, client, on_partition=interrupt_after_two)
    wait_until_idle(client)
    manifest = read_manifest(config.out)
    assert sorted(map(int, manifest["partitions"])) == sorted(finished)
    with pytest.raises(ConfigError, match="unfinished run"):
        run_simulation(config, client)

    # Damage: a finished partition corrupted after the fact, a half-written
    # partition and temp-file debris from a crashed write.
    kept, corrupted = (config.out / manifest["partitions"][str(i)]["file"] for i in finished)
    corrupted.write_bytes(corrupted.read_bytes()[:100])
    pending = next(i for i in range(N_PARTS) if i not in finished)
    (config.out / partition_filename(pending)).write_bytes(b"PAR1 half written")
    (config.out / f".{partition_filename(pending)}.abc123.tmp").write_bytes(b"debris")
    kept_stat = snapshot(config.out)[kept.name]

    redone = []
    summary = run_simulation(config, client, resume=True, on_partition=lambda r: redone.append(r["index"]))
    assert sorted(redone) == sorted(set(range(N_PARTS)) - {finished[0]})  # each missing partition once
    assert summary.partitions_skipped == 1 and summary.rows_total == N
    assert snapshot(config.out)[kept.name] == kept_stat  # the verified partition was not rewritten
    assert not list(config.out.glob("*.tmp")) and not list(config.out.glob(".*"))
    assert shas(read_manifest(config.out)) == shas(ref_manifest)  # identical to the uninterrupted run
    np.testing.assert_array_equal(read_simulation(config.out)["sim_id"].to_numpy(), np.arange(N))


@pytest.mark.slow
def test_cli_one_worker_reproduces_the_two_worker_dataset(reference, tmp_path, repo_root, capsys):
    """bin/run_simulate on a 1-worker cluster writes byte-identical partitions."""
    _, _, ref_manifest = reference
    cluster_yaml = tmp_path / "local1.yaml"
    cluster_yaml.write_text(json.dumps(local_config(1)))  # JSON is YAML
    out = tmp_path / "sims"
    cmd = [sys.executable, str(repo_root / "bin" / "run_simulate"), "--model", "dirichlet", "--n", str(N),
           "--partition-size", str(PART), "--seed", str(SEED), "--out", str(out), "--cluster", str(cluster_yaml),
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "dashboard http" in proc.stdout and "1 workers x 1 threads" in proc.stdout
    assert f"rows written    {N} now" in proc.stdout and "flux_outside_reference_range" in proc.stdout
    assert shas(read_manifest(out)) == shas(ref_manifest)

    # Re-running (no cluster needed) and a conflicting run, in-process to save interpreter starts.
    assert cli_main(cmd[2:]) == 0
    assert "0 run, 6 already done" in capsys.readouterr().out
    assert cli_main(cmd[2:-1] + ["--seed", "99"]) == 2
    err = capsys.readouterr().err
    assert "different run" in err and "Traceback" not in err
    assert shas(read_manifest(out)) == shas(ref_manifest)


def test_killed_worker_run_completes_with_every_partition_once(reference, client, tmp_path):
    _, _, ref_manifest = reference
    config = SimulationConfig("dirichlet", N, tmp_path / "sims", seed=SEED, partition_size=PART)
    pids_before = set(client.run(os.getpid).values())
    killed = []

    def kill_a_busy_worker(result):
        """SIGKILL the worker holding the most unfinished partitions (they must be rescheduled)."""
        if killed:
            return
        pids = client.run(os.getpid)
        assigned = client.processing()
        address = max(pids, key=lambda a: len(assigned.get(a, ())))
        os.kill(pids[address], signal.SIGKILL)
        killed.append((pids[address], len(assigned.get(address, ()))))

    seen = []
    summary = run_simulation(config, client, on_partition=lambda r: (seen.append(r["index"]), kill_a_busy_worker(r)))
    (pid, lost_tasks), = killed
    assert pid in pids_before and lost_tasks >= 1
    assert sorted(seen) == list(range(N_PARTS))  # every partition reported exactly once
    assert summary.rows_total == N
    assert shas(read_manifest(config.out)) == shas(ref_manifest)
    assert sorted(p.name for p in config.out.iterdir()) == sorted(
        [MANIFEST_NAME] + [partition_filename(i) for i in range(N_PARTS)]
    )
    np.testing.assert_array_equal(read_simulation(config.out)["sim_id"].to_numpy(), np.arange(N))
