"""MCMC vs amortized posterior cost: ``python -m sedscale.bench mcmc``.

Simulates ``--n-galaxies`` fresh test galaxies with a checkpoint's model,
prior, noise model and redshift distribution, and runs one Dask task per
galaxy (:func:`sedscale.validate.mcmc.mcmc_task`): the amortized posterior
(``--anpe-samples`` draws) and a zeus MCMC (SEDflow: 30 walkers, 10,000
iterations, 2,000 burn-in; ``--n-iter`` for shorter chains) of the same
galaxy, timed with the same clocks (wall, process CPU) in the same worker
process.  Prints the speed-up table (markdown) and writes it as JSON with
the forward-model evaluation rate and the time extrapolated to the full
SEDflow chain length.  Example::

    python -m sedscale.bench mcmc --flow checkpoints/dirichlet_nsa --n-galaxies 2 --n-iter 1000 --burn-in 200
"""
from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def build_parser() -> argparse.ArgumentParser:
    from ..validate.mcmc import SEDFLOW_BURN_IN, SEDFLOW_ITERATIONS, SEDFLOW_WALKERS

    p = argparse.ArgumentParser(prog="python -m sedscale.bench mcmc", description=__doc__.split("\n")[0])
    p.add_argument("--flow", required=True, help="checkpoint directory")
    p.add_argument("--n-galaxies", type=int, default=2, help="test galaxies, one Dask task each (default 2)")
    p.add_argument("--walkers", type=int, default=SEDFLOW_WALKERS, help=f"default {SEDFLOW_WALKERS}")
    p.add_argument("--n-iter", type=int, default=SEDFLOW_ITERATIONS, help=f"iterations incl. burn-in (default {SEDFLOW_ITERATIONS})")
    p.add_argument("--burn-in", type=int, default=SEDFLOW_BURN_IN, help=f"default {SEDFLOW_BURN_IN}")
    p.add_argument("--anpe-samples", type=int, default=10_000, help="amortized samples per galaxy (default 10000)")
    p.add_argument("--seed", type=int, default=2024, help="test-set and sampler seed (default 2024)")
    p.add_argument("--cluster", default="local", help="cluster config name or YAML; 'none' runs in this process")
    p.add_argument("--n-workers", type=int, help="local cluster: worker processes")
    p.add_argument("--out", help="write the results as JSON here")
    return p


def speedup_rows(results) -> pd.DataFrame:
    """One row per galaxy: MCMC and ANPE costs and their ratio."""
    from ..validate.report import speedup_table

    return speedup_table(pd.DataFrame([r.summary for r in results]))


def main(argv: Sequence[str] | None = None) -> int:
    from ..cluster import load_cluster_config, open_client
    from ..infer import Posterior
    from ..validate.mcmc import MCMCConfig, run_mcmc_benchmark
    from ..validate.report import (
        markdown_table,
        noise_for_checkpoint,
        observations_from_test_set,
        redshift_from_metadata,
        simulate_test_set,
        validation_streams,
    )

    args = build_parser().parse_args(argv)
    config = MCMCConfig(n_walkers=args.walkers, n_iter=args.n_iter, burn_in=args.burn_in, seed=args.seed)
    post = Posterior.load(args.flow)
    model = post.model
    meta = post.metadata
    redshift = redshift_from_metadata((meta.get("training_set") or {}).get("redshift"), model.z_max)
    noise = noise_for_checkpoint(meta)
    test = simulate_test_set(model, noise, redshift, args.n_galaxies, validation_streams(args.seed))
    galaxies = observations_from_test_set(test, post.param_names, range(args.n_galaxies))
    if args.cluster == "none":
        results = run_mcmc_benchmark(None, galaxies, args.flow, config, args.anpe_samples)
        where = "in process"
    else:
        cluster_config = load_cluster_config(args.cluster).with_workers(args.n_workers)
        where = cluster_config.describe()
        with open_client(cluster_config) as client:
            results = run_mcmc_benchmark(client, galaxies, args.flow, config, args.anpe_samples)
    table = speedup_rows(results)
    print(f"\nMCMC ({config.n_walkers} walkers x {config.n_iter} iterations, {config.burn_in} burn-in) vs ANPE "
          f"({args.anpe_samples} samples), {where}, {platform.processor() or platform.machine()}:\n")
    print(markdown_table(table, list(table.columns)))
    if args.out:
        from ..validate.report import write_text

        record = {
            "flow": str(args.flow),
            "mcmc_config": config.to_dict(),
            "anpe_samples": args.anpe_samples,
            "where": where,
            "galaxies": [r.summary for r in results],
            "comparison": [r.comparison.assign(galaxy_id=r.galaxy_id).to_dict(orient="records") for r in results],
            "median_speedup_cpu": float(np.median([r.summary["speedup_cpu"] for r in results])),
        }
        write_text(Path(args.out), json.dumps(record, indent=1, default=float) + "\n")
    return 0
