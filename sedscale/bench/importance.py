"""Cost and efficiency of importance sampling per galaxy: ``python -m sedscale.bench importance``.

For a few galaxies of a catalog (default: MOCK galaxies of the flow's model,
simulated here), :func:`sedscale.infer.importance.importance_sample` runs
with each number of proposals on one thread; the benchmark prints the
CPU-seconds per galaxy (``time.process_time``: flow draws and densities,
forward model, prior, weights) and the sampling efficiency (ESS /
proposals) of each galaxy.

Example (the figures in docs/benchmarks.md)::

    python -m sedscale.bench importance --proposals 1000 10000 100000 --galaxies 5
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    from ..shipped import default_flow

    p = argparse.ArgumentParser(prog="python -m sedscale.bench importance", description=__doc__.split("\n")[0])
    p.add_argument("--flow", default=default_flow(),
                   help="checkpoint that takes z, band-masked or SEDflow layout (default: the shipped default)")
    p.add_argument("--catalog", help="NSA-format catalog (default: MOCK galaxies of the flow's model, z 0.02-0.1)")
    p.add_argument("--proposals", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="proposals per galaxy")
    p.add_argument("--galaxies", type=int, default=5, help="galaxies (the first usable ones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from ..cluster import limit_threads
    from ..infer.catalog_plan import CatalogOptions, resolve_error_floor, training_z_range
    from ..infer.catalog_worker import check_catalog_rows, model_for
    from ..infer.importance import importance_sample
    from ..infer.mock import write_mock_nsa
    from ..infer.posterior import Posterior
    from ..io.catalog import read_catalog

    args = build_parser().parse_args(argv)
    limit_threads(1)
    post = Posterior.load(args.flow)
    model = model_for(post)
    with tempfile.TemporaryDirectory(prefix="sedscale-bench-is-") as tmp:
        catalog = args.catalog or write_mock_nsa(Path(tmp) / "mock.fits", n=4 * args.galaxies, seed=args.seed + 1,
                                                 model=post.model_name, z_range=(0.02, 0.1), n_defects=0)
        frame = read_catalog(catalog)
    floor = resolve_error_floor(post, None)
    checked = check_catalog_rows(frame, post, CatalogOptions(error_floor=floor), training_z_range(post.metadata))
    x = checked.x[~checked.bad][: args.galaxies]
    importance_sample(post, model, x[:1], n_samples=10, error_floor=floor, n_proposals=100)  # warm caches
    results: dict = {"machine": platform.node(), "date": time.strftime("%Y-%m-%d"), "flow": str(args.flow),
                     "torch_threads": torch.get_num_threads(), "runs": []}
    for n in args.proposals:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        res = importance_sample(post, model, x, n_samples=1000, error_floor=floor, n_proposals=n, seed=args.seed)
        cpu = (time.process_time() - cpu0) / x.shape[0]
        wall = (time.perf_counter() - wall0) / x.shape[0]
        run = {"proposals": n, "cpu_s_per_galaxy": cpu, "wall_s_per_galaxy": wall,
               "efficiency": res.efficiency.tolist(), "median_efficiency": float(np.median(res.efficiency))}
        results["runs"].append(run)
        print(f"{n:>8,} proposals: {cpu:7.2f} CPU-s per galaxy ({wall:.2f} s wall), efficiency median "
              f"{run['median_efficiency']:.3f} [{', '.join(f'{e:.3f}' for e in res.efficiency)}]", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0
