"""Benchmark of ``run_simulation``: rows/s on a LocalCluster with 1 and 2 workers.

    python -m sedscale.bench simulate [--n 100000] [--model dirichlet] [--workers 1 2]

Each worker count gets a fresh LocalCluster (1 thread per worker).  Workers
build their forward model before the clock starts (a one-off cost per
worker process, reported separately), then the same run (same seed) is
timed end to end: scheduling, simulation, noise, derived properties,
Parquet writes and manifest updates.  Scaling efficiency of w workers is
``rate(w) / (w * rate(1))``.  On a shared machine, compare also rows per
CPU-second and the CPU share (CPU time / (wall time x workers)): a CPU share
well below 100% means other processes took the cores.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cli import run_guarded
from ..cluster import cluster_config_from_dict, open_client
from ..simulate import SimulationConfig, run_simulation
from ..simulate.config import load_model, load_noise_model


def warm_worker(model_key: tuple, noise_model: str | None) -> float:
    """Build the model (SSP grid, library, filter tables) in this process; seconds taken."""
    start = time.perf_counter()
    model = load_model(model_key)
    load_noise_model(noise_model)
    rng = np.random.default_rng(0)
    model.photometry(model.prior.sample(64, rng), np.full(64, 0.03))
    return time.perf_counter() - start


def bench_workers(config: SimulationConfig, n_workers: int) -> dict:
    """Time one run of ``config`` on a fresh ``n_workers`` LocalCluster."""
    cluster = cluster_config_from_dict(
        {"type": "local", "n_workers": n_workers, "threads_per_worker": 1, "dashboard_address": ":0"}
    )
    with open_client(cluster) as client:
        client.wait_for_workers(n_workers)
        build = client.run(warm_worker, config.model_key, config.noise_model)
        summary = run_simulation(config, client)
    return {
        "workers": n_workers,
        "build_s": max(build.values()),
        "wall_s": summary.wall_s,
        "rows": summary.rows_new,
        "rows_per_s": summary.rows_per_s,
        "models_per_s": summary.models_per_s,
        "rows_per_cpu_s": summary.rows_per_cpu_s,
        # Fraction of the workers' wall time spent computing: < 1 when other
        # processes compete for the cores (or the scheduler starves workers).
        "cpu_share": summary.cpu_s / (summary.wall_s * n_workers),
    }


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="python -m sedscale.bench simulate", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="rows per run (default 100000)")
    p.add_argument("--model", default="dirichlet", help="forward model (default dirichlet)")
    p.add_argument("--partition-size", type=int, default=10_000, help="rows per partition (default 10000)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    p.add_argument("--nmf-dir", help="provabgs NMF tables (else $SEDSCALE_PROVABGS_DIR)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    options = {"nmf_dir": args.nmf_dir} if args.nmf_dir else {}
    results = []
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="sedscale-bench-") as tmp:
        for w in args.workers:
            config = SimulationConfig(
                args.model, args.n, Path(tmp) / f"w{w}", seed=args.seed, partition_size=args.partition_size,
                model_options=options,
            )
            results.append(bench_workers(config, w))
            r = results[-1]
            print(f"{w} worker(s): {r['rows']} rows in {r['wall_s']:.1f} s = {r['rows_per_s']:,.0f} rows/s "
                  f"({r['models_per_s']:,.0f} models/s, {r['rows_per_cpu_s']:,.0f} rows per CPU-s, "
                  f"CPU share {r['cpu_share']:.0%}); model build {r['build_s']:.1f} s per worker", flush=True)
    base = next((r for r in results if r["workers"] == 1), None)
    print(f"\nload average before/after: {load_before} / {_load()}")
    print("\n| model | n | workers | wall (s) | rows/s | models/s | rows/CPU-s | CPU share | scaling efficiency |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        eff = f"{r['rows_per_s'] / (r['workers'] * base['rows_per_s']):.0%}" if base else "-"
        print(f"| {args.model} | {r['rows']} | {r['workers']} | {r['wall_s']:.1f} | {r['rows_per_s']:,.0f} | "
              f"{r['models_per_s']:,.0f} | {r['rows_per_cpu_s']:,.0f} | {r['cpu_share']:.0%} | {eff} |")
    return 0


def _load() -> str:
    """1-minute load average: other processes on the cores distort wall-time rates."""
    return f"{os.getloadavg()[0]:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded(_main, argv, "sedscale.bench simulate")
