"""Benchmark of posterior catalogs: galaxies/s on a LocalCluster.

    python -m sedscale.bench catalog [--flow checkpoints/dirichlet_survey]
        [--catalog catalogs/mock_nsa_dirichlet.fits] [--nsa ../shared/data/nsa_lcs]
        [--n-samples 10 100 1000] [--workers 2] [--derived-samples N] [--sedflow-maf]

1. End to end: ``run_catalog`` on a fresh LocalCluster (1 thread per
   worker) after every worker has loaded the flow, the x-support and the
   forward model (a one-off cost per worker, reported separately); the
   clock covers scheduling, input checks, sampling, derived properties,
   summaries and the partition and final writes.  Repeated for each
   ``--n-samples``; the costliest galaxy (most flow draws, ``n_draws``) of
   each catalog is printed with its status: the per-galaxy draw budget
   (``--max-proposals``) bounds what one un-sampleable galaxy costs.
2. Stage costs per galaxy in this process (1 thread): sampling, x-support
   score, derived properties, percentiles.
3. ``--sedflow-maf``: sampling speed of the SEDflow-size MAF (15 MADE blocks
   x 2 x 500, randomly initialised: speed does not depend on the weights),
   per galaxy with 1000 samples, on 1 thread.
4. ``--nsa DIR``: the real NSA rows through the same cluster; stellar masses
   (posterior median ``log_mstar``) against the NSA ``MASS`` column,
   converted from Msun h^-2 (h = 1) to h = 0.7: log M = log10(MASS) - 2 log10(0.7).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cli import run_guarded
from ..cluster import cluster_config_from_dict, open_client
from ..infer.catalog import (
    CatalogOptions,
    load_posterior_cached,
    load_support_cached,
    model_for,
    plan_catalog,
    run_catalog,
)
from ..infer.mock import write_mock_nsa
from ..shipped import default_flow

#: h of the NSA MASS conversion (MASS is in Msun h^-2 with h = 1).
NSA_H = 0.7


def warm_worker(flow: str, flow_sha: str, support: str | None, support_sha: str | None) -> float:
    """Load flow, x-support and forward model in this process (seconds taken)."""
    start = time.perf_counter()
    post = load_posterior_cached(flow, flow_sha)
    if support:
        load_support_cached(support, support_sha)
    model = model_for(post)
    d = post.n_model_params
    theta = (post.prior.low[:d] + post.prior.high[:d])[None, :] / 2
    model.derived(theta, np.array([0.03]))
    post.draw(post.flow.x_mean.numpy()[None, :], 10)
    return time.perf_counter() - start


def bench_cluster(plans: list, n_workers: int) -> list[dict]:
    """Run each plan on one fresh ``n_workers`` LocalCluster after warming the workers."""
    cluster = cluster_config_from_dict(
        {"type": "local", "n_workers": n_workers, "threads_per_worker": 1, "dashboard_address": ":0"}
    )
    results = []
    with open_client(cluster) as client:
        client.wait_for_workers(n_workers)
        spec = plans[0].spec
        build = client.run(warm_worker, spec.flow, spec.flow_sha256, spec.support, spec.support_sha256)
        for plan in plans:
            summary = run_catalog(plan, client)
            results.append({"summary": summary, "build_s": max(build.values())})
    return results


def stage_costs(plan, n_galaxies: int) -> dict[str, float]:
    """Seconds per galaxy of each stage for the first good rows of ``plan``'s catalog (this process)."""
    import torch

    from ..infer.catalog_worker import check_catalog_rows
    from ..infer.rows import draw_samples
    from ..infer.summaries import (
        clip_to_prior,
        derived_quantities,
        physical_quantities,
        summarize,
    )

    torch.set_num_threads(1)
    post, opts = plan.posterior, plan.spec.options
    model = model_for(post)
    df = plan.source.read(max_rows=4 * n_galaxies)
    checked = check_catalog_rows(df, post, opts, plan.spec.z_range)
    good = np.flatnonzero(~checked.bad)[:n_galaxies]
    x, z = checked.x[good], df["z"].to_numpy()[good]
    d = post.n_model_params
    # Warm-up: the forward model's library and the flow's first full-size pass are one-off costs.
    model.derived((post.prior.low[:d] + post.prior.high[:d])[None, :] / 2, np.array([0.05]))
    draw_samples(post, x[:2], opts, 0)
    n = good.size
    t = {}
    t0 = time.perf_counter()
    samples = draw_samples(post, x, opts, 0).samples
    t["sampling"] = time.perf_counter() - t0
    if plan.support is not None:
        t0 = time.perf_counter()
        plan.support.check(x)
        t["support"] = time.perf_counter() - t0
    theta = clip_to_prior(samples, post.prior.low, post.prior.high)
    t0 = time.perf_counter()
    q = {name: theta[:, :, j] for j, name in enumerate(post.param_names)}
    q.update(physical_quantities(post.to_physical(theta), post.param_names))
    t["physical"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # A photometric-redshift flow's samples carry their own z (the last parameter).
    z_derived = theta[:, : opts.n_derived, d] if d < theta.shape[2] else z
    q.update(derived_quantities(model, theta[:, : opts.n_derived, :d], z_derived))
    t["derived"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    summarize(q)
    t["percentiles"] = time.perf_counter() - t0
    return {k: v / n for k, v in t.items()}


def sedflow_maf_rate(n_galaxies: int, n_samples: int, x_dim: int = 11, theta_dim: int = 11) -> float:
    """Galaxies/s sampling ``n_samples`` each from a SEDflow-size MAF on 1 thread (random weights)."""
    import torch

    from ..models import Parameter, Prior
    from ..train.config import PRESETS
    from ..train.flows import Normalization, build_flow

    torch.set_num_threads(1)
    torch.manual_seed(0)
    norm = Normalization(np.zeros(theta_dim), np.ones(theta_dim), np.zeros(x_dim), np.ones(x_dim))
    box = Prior([Parameter(f"theta_{i}", 0.0, 1.0) for i in range(theta_dim)])
    flow = build_flow(PRESETS["sedflow"].flow, box, norm).eval()
    x = torch.randn(n_galaxies, x_dim)
    with torch.no_grad():
        flow.sample(2, x[:2])
        t0 = time.perf_counter()
        for i in range(n_galaxies):
            flow.sample(n_samples, x[i : i + 1])
        dt = time.perf_counter() - t0
    return n_galaxies / dt


def nsa_mass_comparison(table_path: Path) -> dict:
    """Median offset and scatter of posterior-median log M* (living + remnants) minus the NSA MASS (h = 0.7), ok rows."""
    import pandas as pd

    df = pd.read_parquet(table_path, columns=["status", "log_mstar_total_p50", "mass"])
    ok = (df["status"] == "ok") & (df["mass"] > 0) & np.isfinite(df["log_mstar_total_p50"])
    nsa = np.log10(df.loc[ok, "mass"].to_numpy()) - 2 * np.log10(NSA_H)
    delta = df.loc[ok, "log_mstar_total_p50"].to_numpy() - nsa
    mad = np.median(np.abs(delta - np.median(delta)))
    return {
        "n": int(ok.sum()),
        "median_offset": float(np.median(delta)),
        "scatter_nmad": float(1.4826 * mad),
        "scatter_std": float(np.std(delta)),
        "p16_p84": tuple(float(v) for v in np.percentile(delta, [16, 84])),
    }


def costliest_galaxy(table_path: Path) -> dict:
    """The galaxy of a posterior catalog that spent the most flow draws, and the catalog's total."""
    import pandas as pd

    df = pd.read_parquet(table_path, columns=["id", "status", "reason", "n_samples", "n_draws"])
    row = df.loc[df["n_draws"].idxmax()]
    return {"id": row["id"], "n_draws": int(row["n_draws"]), "status": row["status"], "reason": row["reason"],
            "n_samples": int(row["n_samples"]), "total_draws": int(df["n_draws"].sum())}


def _main(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="python -m sedscale.bench catalog", description=__doc__.split("\n")[0])
    p.add_argument("--flow", default=default_flow(), help="checkpoint or shipped name (default: the default flow)")
    p.add_argument("--catalog", help="catalog to time (default: a MOCK NSA catalog of 1,000 galaxies made as the "
                                     "README's catalogs/mock_nsa_dirichlet.fits is, seed 42, z 0.01-0.06)")
    p.add_argument("--nsa", help="folder of real NSA FITS files: also run them and compare stellar masses")
    p.add_argument("--n-samples", type=int, nargs="+", default=[1000],
                   help="samples per galaxy; several values run one after the other (default 1000)")
    p.add_argument("--partition-size", type=int, default=250, help="galaxies per partition (default 250)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    p.add_argument("--derived-samples", type=int, help="samples per galaxy for derived properties (default: all)")
    p.add_argument("--stage-galaxies", type=int, default=50, help="galaxies for the per-stage costs (default 50; 0: skip)")
    p.add_argument("--sedflow-maf", action="store_true", help="also time sampling from a SEDflow-size MAF")
    p.add_argument("--support-sims", help="training simulation to build the x-support from if missing")
    args = p.parse_args(argv)
    for k, n_samples in enumerate(args.n_samples):
        options = CatalogOptions(
            n_samples=n_samples, partition_size=args.partition_size, derived_samples=args.derived_samples
        )
        with tempfile.TemporaryDirectory(prefix="sedscale-bench-catalog-") as tmp_name:
            tmp = Path(tmp_name)
            outputs = [tmp / "mock.parquet"]
            catalog = args.catalog or write_mock_nsa(tmp / "mock.fits", n=1000, seed=42, z_range=(0.01, 0.06))
            plans = [plan_catalog(catalog, args.flow, outputs[0], options, support_sims=args.support_sims)]
            if args.nsa:
                files = sorted(Path(args.nsa).glob("*.fits"))
                outputs.append(tmp / "nsa.parquet")
                plans.append(plan_catalog(files, args.flow, outputs[1], options, keep=["MASS"],
                                          support_sims=args.support_sims))
            post = plans[0].posterior
            if k == 0:
                print(f"flow {post.path}: {post.model_name}, {post.metadata['flow']}", flush=True)
            results = bench_cluster(plans, args.workers)
            for plan, r, out in zip(plans, results, outputs):
                s = r["summary"]
                sources = plan.source.sources or ["?"]
                c = costliest_galaxy(out)
                print(
                    f"{sources[0]}{' ...' if len(sources) > 1 else ''}: "
                    f"{s.n_galaxies} galaxies x {n_samples} samples on {args.workers} workers: {s.inference_s:.1f} s = "
                    f"{s.galaxies_per_s:.1f} galaxies/s (worker warm-up {r['build_s']:.1f} s, not timed); "
                    f"status {s.status_counts}; costliest galaxy {c['id']}: {c['n_draws']} flow draws "
                    f"({c['n_draws'] / n_samples:.0f} x n_samples, {100 * c['n_draws'] / max(c['total_draws'], 1):.2f}% "
                    f"of the catalog's draws), {c['n_samples']} samples, {c['status']} ({c['reason']})",
                    flush=True,
                )
            if args.stage_galaxies and k == len(args.n_samples) - 1:
                costs = stage_costs(plans[0], args.stage_galaxies)
                total = sum(costs.values())
                print(f"per-galaxy cost on 1 thread ({n_samples} samples): "
                      + ", ".join(f"{name} {1e3 * v:.1f} ms" for name, v in costs.items())
                      + f"; total {1e3 * total:.1f} ms = {1 / total:.1f} galaxies/s per core", flush=True)
            if args.nsa and k == len(args.n_samples) - 1:
                m = nsa_mass_comparison(tmp / "nsa.parquet")
                print(
                    f"NSA stellar masses ({m['n']} ok galaxies): log M*(posterior median) - log M*(NSA MASS, h=0.7): "
                    f"median offset {m['median_offset']:+.3f} dex, scatter {m['scatter_nmad']:.3f} dex (NMAD), "
                    f"{m['scatter_std']:.3f} dex (std), 16-84%: {m['p16_p84'][0]:+.3f} .. {m['p16_p84'][1]:+.3f}",
                    flush=True,
                )
    if args.sedflow_maf:
        n = 5
        rate = sedflow_maf_rate(n, args.n_samples[-1])
        print(f"SEDflow-size MAF (15 x 2 x 500): {rate:.2f} galaxies/s per core sampling {args.n_samples[-1]} "
              f"samples ({n} galaxies; sampling only)", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m sedscale.bench catalog``."""
    return run_guarded(_main, argv, "bench catalog")
