"""Cluster configuration (YAML), LocalCluster workers and the SLURM path.

The SLURM path is exercised twice: through dask-jobqueue's ``job_script()``
built from ``cluster_configs/slurm.yaml`` (always), and for real on a
one-node SLURM cluster when ``sinfo`` answers (``.ci/slurm_setup.sh`` starts one).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sedscale.cluster import (
    cluster_config_from_dict,
    load_cluster_config,
    open_client,
    slurm_cluster_kwargs,
    tune_malloc,
)
from sedscale.errors import ConfigError
from sedscale.simulate import read_manifest, read_simulation


def test_shipped_configs_load():
    local = load_cluster_config("local")
    assert (local.kind, local.n_workers, local.threads_per_worker) == ("local", 2, 1)
    slurm = load_cluster_config("slurm")
    assert slurm.kind == "slurm" and slurm.threads_per_worker == slurm.job["cores"] // slurm.job["processes"]
    assert slurm.lifetime and slurm.lifetime_stagger
    assert "SLURMCluster" in slurm.describe()
    over = slurm.with_workers(jobs=7)
    assert over.jobs == 7 and over.adaptive is None
    assert local.with_workers(n_workers=1).n_workers == 1
    with pytest.raises(ConfigError, match="10000 local workers on a .*-core machine"):
        local.with_workers(n_workers=10000)


@pytest.mark.parametrize(
    "text, message",
    [
        ("type: local\nn_workers: [2\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("type: kubernetes\n", "'type' must be"),
        ("type: local\nn_wokers: 2\n", "unknown key"),
        ("type: local\nn_workers: two\n", "positive integer"),
        ("type: local\nn_workers: 100000\n", "local workers on a"),
        ("type: slurm\njob: {cores: 4, memory: 8GB}\n", "job.walltime' is required"),
        ("type: slurm\njob: {cores: 4, processes: 3, memory: 8GB, walltime: '01:00:00'}\n", "multiple of"),
        ("type: slurm\njob: {cores: 4, memory: 8GB, walltime: '1:00:00', partition: x}\n", "unknown key"),
        ("type: slurm\njob: {cores: 4, memory: 8GB, walltime: '1:00:00'}\n"
         "adaptive: {minimum_jobs: 3, maximum_jobs: 1}\n", "minimum_jobs"),
        ("type: slurm\njob: {cores: 4, memory: 8GB, walltime: '1:00:00', job_extra_directives: --qos=x}\n",
         "list of strings"),
    ],
)
def test_bad_yaml_gives_clear_errors(tmp_path, text, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_cluster_config(path)
    assert str(path) in str(err.value)


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="not found.*local"):
        load_cluster_config("nonexistent")


def test_slurm_job_script_from_shipped_config():
    """The SLURM job dask-jobqueue would submit for cluster_configs/slurm.yaml."""
    from dask_jobqueue import SLURMCluster

    config = load_cluster_config("slurm")
    data = yaml.safe_load(open(config.source))
    data["job"].update(account="astro42", job_extra_directives=["--qos=regular", "--constraint=cpu"])
    data["dashboard_address"] = ":0"  # the shipped :8787 may be taken on a shared machine
    config = cluster_config_from_dict(data, source="edited")
    cluster = SLURMCluster(**slurm_cluster_kwargs(config))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in ("-p debug", "-A astro42", "--cpus-per-task=16", "-t 02:00:00", "--qos=regular",
                      "--constraint=cpu"):
        assert f"#SBATCH {directive}" in lines, directive
    assert any(line.startswith("#SBATCH --mem=") for line in lines)
    assert "export OMP_NUM_THREADS=1" in lines and "export OPENBLAS_NUM_THREADS=1" in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert worker.startswith(sys.executable)
    for arg in ("--nthreads 1", "--nworkers 16", "--lifetime 110m", "--lifetime-stagger 5m", "--death-timeout 120"):
        assert arg in worker, arg


def test_local_workers_limit_native_threads():
    config = cluster_config_from_dict({"type": "local", "n_workers": 1, "dashboard_address": ":0"})

    def thread_state():
        import torch
        from threadpoolctl import threadpool_info

        return (os.environ["OMP_NUM_THREADS"], torch.get_num_threads(),
                max((p["num_threads"] for p in threadpool_info()), default=1))

    with open_client(config) as client:
        assert client.dashboard_link.startswith("http")
        assert list(client.run(thread_state).values()) == [("1", 1, 1)]
        plugins = client.run(lambda dask_worker: sorted(dask_worker.plugins))
        assert all("sedscale-worker-tuning" in names for names in plugins.values())
        assert all(client.run(tune_malloc).values())  # glibc mallopt available and accepted
        assert len(client.scheduler_info()["workers"]) == 1


def _slurm_partition() -> str | None:
    """Default partition of a SLURM cluster with an idle node, or None."""
    if not shutil.which("sinfo"):
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        name, state = line.split()[:2]
        if state in ("idle", "mix") and name.endswith("*"):
            return name.rstrip("*")
    return None


def _slurm_yaml(tmp_path, job_name: str, *, jobs: int = 1, extra: dict | None = None, **job) -> Path:
    """A cluster YAML of ``jobs`` 1-core SLURM jobs on the idle partition (``job``: more or other job keys)."""
    path = tmp_path / "slurm.yaml"
    path.write_text(json.dumps({
        "type": "slurm", "jobs": jobs, "dashboard_address": ":0", **(extra or {}),
        "job": {"queue": _slurm_partition(), "cores": 1, "processes": 1, "memory": "3GB", "walltime": "00:10:00",
                "local_directory": str(tmp_path), "job_name": job_name, **job},
    }))
    return path


def _left_in_queue(job_name: str) -> bool:
    """Whether SLURM still holds a job of that name (other than completing)."""
    queued = subprocess.run(["squeue", "-h", "-n", job_name, "-o", "%i %T"], capture_output=True, text=True).stdout
    return queued.strip() != "" and "COMPLETING" not in queued


@pytest.mark.skipif(_slurm_partition() is None, reason="no SLURM cluster with an idle node (see .ci/slurm_setup.sh)")
def test_real_slurm_simulation(tmp_path, repo_root):
    """bin/run_simulate --cluster <slurm yaml>: 2 SLURM jobs run the Dask workers."""
    logs = tmp_path / "slurm_logs"
    logs.mkdir()
    cluster_yaml = _slurm_yaml(tmp_path, "sedscale-test", jobs=2, log_directory=str(logs))
    out = tmp_path / "sims"
    cmd = [sys.executable, str(repo_root / "bin" / "run_simulate"), "--model", "dirichlet", "--n", "1000",
           "--partition-size", "250", "--out", str(out), "--cluster", str(cluster_yaml), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SLURMCluster: 2 jobs x 1 workers x 1 threads" in proc.stdout
    assert len(read_manifest(out)["partitions"]) == 4
    assert read_simulation(out).num_rows == 1000
    # Workers really ran as SLURM jobs: each wrote its job log.
    assert len(list(logs.glob("sedscale-test-*.err"))) >= 1


def test_slurm_request_checked_against_the_partition():
    """A request a node cannot hold would pend forever (reason PartitionConfig): refused, naming each mismatch."""
    from sedscale.cluster.slurm import PartitionLimits, check_job_request, memory_mb, slurm_seconds

    assert slurm_seconds("02:00:00") == 7200 and slurm_seconds("1-00:30") == 88200 and slurm_seconds("45") == 2700
    assert slurm_seconds("infinite") == float("inf") and memory_mb("60GB") == 61440 and memory_mb("500MB") == 500
    node = PartitionLimits(name="debug", cpus=2, memory_mb=22057, time_limit_s=3600.0, available=True)
    shipped = load_cluster_config("slurm").job  # 16 cores, 60GB, 2 h
    with pytest.raises(ConfigError) as info:
        check_job_request(shipped, node)
    message = str(info.value)
    assert "job.cores 16 > 2 CPUs per node" in message and "job.memory 60GB > 22057 MiB per node" in message
    assert "job.walltime 02:00:00 > the partition's time limit" in message and "\n" not in message
    assert check_job_request({"cores": 2, "memory": "3GB", "walltime": "00:10:00"}, node) is node


@pytest.mark.skipif(_slurm_partition() is None, reason="no SLURM cluster with an idle node (see .ci/slurm_setup.sh)")
def test_real_slurm_refusals_leave_no_job_behind(tmp_path, repo_root):
    """The shipped 16-core request on a small node, and a worker timeout: one-line errors, nothing left queued."""
    run = [sys.executable, str(repo_root / "bin" / "run_simulate"), "--model", "dirichlet", "--n", "100",
           "--out", str(tmp_path / "sims"), "--no-progress"]
    proc = subprocess.run(run + ["--cluster", "slurm"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "cannot run the job request: job.cores 16 >" in proc.stderr
    # A job SLURM holds back (here: may not begin for an hour) never gives a worker.
    cluster_yaml = _slurm_yaml(tmp_path, "sedscale-timeout", extra={"worker_timeout": 3}, memory="2GB",
                               walltime="00:05:00", job_extra_directives=["--begin=now+3600"])
    proc = subprocess.run(run + ["--cluster", str(cluster_yaml)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "no Dask worker after 3 s: SLURM jobs 1 PENDING (BeginTime)" in proc.stderr
    assert "waiting for SLURM workers" in proc.stdout and "1 PENDING (BeginTime)" in proc.stdout
    assert not _left_in_queue("sedscale-timeout")  # cancelled with the cluster


def _mock_catalog_command(repo_root, out, cluster_yaml, *options: str) -> list[str]:
    """``bin/run_catalog`` on the shipped MOCK catalog with a cluster YAML, no progress bar, and ``options``."""
    return [sys.executable, str(repo_root / "bin" / "run_catalog"), str(repo_root / "catalogs" / "mock_nsa_dirichlet.fits"),
            "--out", str(out), "--cluster", str(cluster_yaml), "--no-progress", *options]


@pytest.mark.skipif(_slurm_partition() is None, reason="no SLURM cluster with an idle node (see .ci/slurm_setup.sh)")
def test_real_slurm_catalog_with_an_mcmc_subset(tmp_path, repo_root):
    """bin/run_catalog --cluster slurm: posteriors and a benchmark galaxy sent to MCMC on the SLURM worker."""
    import pandas as pd

    cluster_yaml = _slurm_yaml(tmp_path, "sedscale-catalog")
    out = tmp_path / "mock.parquet"
    cmd = _mock_catalog_command(repo_root, out, cluster_yaml, "--n-samples", "100", "--mcmc-subset", "1",
                                "--mcmc-sampler", "emcee", "--mcmc-max-iter", "200")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SLURMCluster: 1 jobs x 1 workers x 1 threads" in proc.stdout
    assert "mcmc subset        1 galaxies" in proc.stdout and "chains not converged" in proc.stdout
    assert len(pd.read_parquet(out)) == 1000
    bench = pd.read_parquet(tmp_path / "mock.mcmc.parquet")
    assert bench["galaxy_id"].nunique() == 1 and bench["worker"].str.startswith("tcp://").all()
    assert not _left_in_queue("sedscale-catalog")


@pytest.mark.skipif(_slurm_partition() is None, reason="no SLURM cluster with an idle node (see .ci/slurm_setup.sh)")
def test_real_slurm_job_cancelled_mid_run_loses_nothing_after_resume(tmp_path, repo_root):
    """scancel of the worker job mid-catalog: the driver is stopped (SIGTERM), --resume finishes the run."""
    import signal
    import time

    import pandas as pd

    from sedscale.infer.catalog import read_run_manifest

    cluster_yaml = _slurm_yaml(tmp_path, "sedscale-cancelled")
    out = tmp_path / "mock.parquet"
    cmd = _mock_catalog_command(repo_root, out, cluster_yaml, "--partition-size", "50", "--n-samples", "300",
                                "--keep-parts")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    work = tmp_path / "mock.parquet.parts"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        manifest = read_run_manifest(work) if (work / "_manifest.json").exists() else None
        if manifest and len(manifest["partitions"]) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    subprocess.run(["scancel", "-n", "sedscale-cancelled"], check=True)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "--resume" in stdout + stderr
    done = len(read_run_manifest(work)["partitions"])
    assert 2 <= done < 20
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{20 - done} run, {done} already done, 20 in total" in resumed.stdout
    df = pd.read_parquet(out)
    assert len(df) == 1000 and df["id"].is_unique
    assert not _left_in_queue("sedscale-cancelled")


def test_a_busy_dashboard_port_gives_no_warning():
    """The CLI prints the dashboard URL it got; Dask's 'port already in use' warning must not reach the user."""
    import socket
    import warnings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = cluster_config_from_dict({"type": "local", "n_workers": 1, "dashboard_address": f"127.0.0.1:{port}"})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with open_client(config) as client:
                assert str(port) not in client.dashboard_link
    assert not [w for w in caught if "already in use" in str(w.message)]
