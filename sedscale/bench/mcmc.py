"""MCMC vs amortized posterior cost: ``python -m sedscale.bench mcmc``.

Simulates ``--n-galaxies`` fresh test galaxies with a checkpoint's model,
prior, noise model and redshift distribution, and runs one Dask task per
galaxy (:func:`sedscale.validate.mcmc.mcmc_task`): the amortized posterior
(``--anpe-samples`` draws) and a zeus MCMC (SEDflow: 30 walkers, 10,000
iterations, 2,000 burn-in; ``--n-iter`` for shorter chains) of the same
galaxy, timed with the same clocks (wall, process CPU) in the same worker
process.  Prints the speed-up table (markdown) and writes it as JSON with
the forward-model evaluation rate and the time extrapolated to the full
SEDflow chain length.  Examples::

    python -m sedscale.bench mcmc --flow checkpoints/dirichlet_nsa --n-galaxies 2 --n-iter 1000 --burn-in 200
    python -m sedscale.bench mcmc --flow checkpoints/provabgs_nsa --n-galaxies 20 \
        --nsa ../shared/data/nsa_lcs --n-nsa 20 --until-converged --out mcmc.json

``--until-converged`` runs each chain until split-R-hat < 1.01 and >= 1,000
effective samples per parameter (walkers started at amortized-posterior
samples, the first half of the chain discarded; at most ``--n-iter``), and
reports for the converged galaxies how many galaxy-parameter pairs agree:
|median shift| <= 0.3 MCMC sigma and width ratio 0.8-1.25.  ``--nsa`` adds
real NSA galaxies (ugriz ``NMGY`` with their errors; SEDflow-layout flows).
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
    from ..cli import add_cluster_options
    from ..validate.mcmc import SAMPLERS, SEDFLOW_BURN_IN, SEDFLOW_ITERATIONS, SEDFLOW_WALKERS

    p = argparse.ArgumentParser(prog="python -m sedscale.bench mcmc", description=__doc__.split("\n")[0])
    p.add_argument("--flow", required=True, help="checkpoint directory")
    p.add_argument("--n-galaxies", type=int, default=2, help="test galaxies, one Dask task each (default 2)")
    p.add_argument("--sampler", choices=SAMPLERS, default=SAMPLERS[0], help=f"ensemble sampler (default {SAMPLERS[0]})")
    p.add_argument("--walkers", type=int, default=SEDFLOW_WALKERS, help=f"default {SEDFLOW_WALKERS}")
    p.add_argument("--n-iter", type=int, default=SEDFLOW_ITERATIONS,
                   help=f"iterations incl. burn-in (default {SEDFLOW_ITERATIONS})")
    p.add_argument("--burn-in", type=int, default=SEDFLOW_BURN_IN, help=f"default {SEDFLOW_BURN_IN}")
    p.add_argument("--anpe-samples", type=int, default=10_000, help="amortized samples per galaxy (default 10000)")
    p.add_argument("--seed", type=int, default=2024, help="test-set and sampler seed (default 2024)")
    p.add_argument("--until-converged", action="store_true",
                   help="run each chain until R-hat < 1.01 and ESS >= 1000 per parameter (at most --n-iter)")
    p.add_argument("--nsa", help="folder of NSA FITS files: also run real galaxies")
    p.add_argument("--n-nsa", type=int, default=20, help="real NSA galaxies (default 20; random, seeded)")
    add_cluster_options(p)
    p.add_argument("--out", help="write the results as JSON here")
    return p


def nsa_galaxies(folder: str, post, n: int, seed: int) -> list:
    """``n`` random usable NSA galaxies (in the flow's redshift range) as MCMC work items."""
    from ..observe.layout import PHOTOMETRY_X_COLUMNS
    from ..validate.report import catalog_observations, training_z_range

    if tuple(post.x_columns) != PHOTOMETRY_X_COLUMNS:
        raise SystemExit("--nsa needs a flow with SEDflow's x layout (ugriz mags, sigmas, z)")
    return catalog_observations(sorted(Path(folder).glob("*.fits")), n, np.random.default_rng(seed),
                                training_z_range(post.metadata))


def agreement(results) -> dict:
    """Of the converged galaxies' parameters: the fraction with |shift| <= 0.3 sigma and width ratio 0.8-1.25."""
    rows = pd.concat([r.comparison.assign(galaxy_id=r.galaxy_id) for r in results if r.summary["converged"]]) \
        if any(r.summary["converged"] for r in results) else pd.DataFrame()
    if rows.empty:
        return {"n_converged": 0}
    good = (rows["delta_median_sigma"].abs() <= 0.3) & rows["width_ratio"].between(0.8, 1.25)
    return {
        "n_converged": int(rows["galaxy_id"].nunique()),
        "n_pairs": int(len(rows)),
        "fraction_agreeing": float(good.mean()),
        "median_abs_shift_sigma": float(rows["delta_median_sigma"].abs().median()),
        "median_width_ratio": float(rows["width_ratio"].median()),
        "exceptions": rows.loc[~good, ["galaxy_id", "parameter", "delta_median_sigma", "width_ratio", "ks_p"]]
        .to_dict(orient="records"),
    }


def speedup_rows(results) -> pd.DataFrame:
    """One row per galaxy: MCMC and ANPE costs and their ratio."""
    from ..validate.render import speedup_table

    return speedup_table(pd.DataFrame([r.summary for r in results]))


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli import cluster_from_args
    from ..cluster import open_client
    from ..infer import Posterior
    from ..validate.mcmc import MCMCConfig
    from ..validate.mcmc_benchmark import run_mcmc_benchmark
    from ..validate.render import markdown_table
    from ..validate.report import observations_from_test_set
    from ..validate.test_set import noise_for_checkpoint, redshift_from_metadata, simulate_test_set, validation_streams

    args = build_parser().parse_args(argv)
    if args.until_converged:
        config = MCMCConfig.until_converged(max_iter=args.n_iter, n_walkers=args.walkers, seed=args.seed,
                                            sampler=args.sampler)
    else:
        config = MCMCConfig(n_walkers=args.walkers, n_iter=args.n_iter, burn_in=args.burn_in, seed=args.seed,
                            sampler=args.sampler)
    post = Posterior.load(args.flow)
    model = post.model
    meta = post.metadata
    redshift = redshift_from_metadata((meta.get("training_set") or {}).get("redshift"), model.z_max)
    noise = noise_for_checkpoint(meta)
    test = simulate_test_set(model, noise, redshift, args.n_galaxies, validation_streams(args.seed))
    galaxies = observations_from_test_set(test, post.param_names, range(args.n_galaxies))
    if args.nsa:
        galaxies += nsa_galaxies(args.nsa, post, args.n_nsa, args.seed)
    if args.cluster == "none":
        results = run_mcmc_benchmark(None, galaxies, args.flow, config, args.anpe_samples)
        where = "in process"
    else:
        cluster_config = cluster_from_args(args)
        where = cluster_config.describe()
        with open_client(cluster_config) as client:
            results = run_mcmc_benchmark(client, galaxies, args.flow, config, args.anpe_samples)
    table = speedup_rows(results)
    print(f"\nMCMC ({config.n_walkers} walkers x {config.n_iter} iterations, {config.burn_in} burn-in) vs ANPE "
          f"({args.anpe_samples} samples), {where}, {platform.processor() or platform.machine()}:\n")
    print(markdown_table(table, list(table.columns)))
    groups = {"all": results}
    if args.nsa:
        n_sim = args.n_galaxies
        groups = {"simulated": results[:n_sim], "real NSA": results[n_sim:]}
    agree = {name: agreement(group) for name, group in groups.items()}
    for name, a in agree.items():
        if a["n_converged"]:
            print(f"\n{name}: {a['n_converged']} converged galaxies, {a['n_pairs']} galaxy-parameter pairs: "
                  f"{100 * a['fraction_agreeing']:.1f}% agree (|shift| <= 0.3 sigma, width ratio 0.8-1.25); median "
                  f"|shift| {a['median_abs_shift_sigma']:.2f} sigma, median width ratio {a['median_width_ratio']:.2f}")
        else:
            print(f"\n{name}: no converged galaxy")
    if args.out:
        from ..validate.render import write_text

        record = {
            "flow": str(args.flow),
            "mcmc_config": config.to_dict(),
            "anpe_samples": args.anpe_samples,
            "where": where,
            "galaxies": [r.summary for r in results],
            "comparison": [r.comparison.assign(galaxy_id=r.galaxy_id).to_dict(orient="records") for r in results],
            "median_speedup_cpu": float(np.median([r.summary["speedup_cpu"] for r in results])),
            "agreement": agree,
        }
        write_text(Path(args.out), json.dumps(record, indent=1, default=float) + "\n")
    return 0
