"""``bin/run_simulate``: simulate a training set on a Dask cluster into partitioned Parquet.

Examples
--------
    bin/run_simulate --model dirichlet --n 1000000 --out sims/dirichlet --cluster local
    bin/run_simulate --model provabgs --n 1000000 --out sims/provabgs_nsa --cluster slurm --z-from-catalog nsa.fits
    bin/run_simulate ... --resume          # continue an interrupted run
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..observe.layout import OBSERVABLES
from ..simulate import SimulationConfig, check_output, plan_run, run_simulation
from ..simulate.config import DEFAULT_PARTITION_SIZE, DEFAULT_Z_RANGE
from . import add_cluster_options, announced_client, cluster_from_args, interrupted_resumable, prog_name, run_resumable

PROG = "run_simulate"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name(PROG), description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="forward model: dirichlet, provabgs or delayed_tau")
    p.add_argument("--n", type=int, required=True, help="rows to write (valid simulations)")
    p.add_argument("--out", required=True, help="output directory (Parquet partitions + _manifest.json)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument(
        "--partition-size", type=int, default=DEFAULT_PARTITION_SIZE,
        help=f"rows per Parquet file / task (default {DEFAULT_PARTITION_SIZE})",
    )
    p.add_argument(
        "--observable",
        choices=OBSERVABLES,
        default="photometry",
        help="photometry (noisy ugriz, default) or spectrum (noiseless DIGS spectra; noise is drawn at training)",
    )
    p.add_argument(
        "--noise-model",
        help="noise-model JSON (default: the NSA model shipped with sedscale), or 'none': noiseless photometry "
        "whose uncertainties, noise and band masks are drawn at training (survey flows)",
    )
    p.add_argument(
        "--prior",
        help="dirichlet model: prior preset (flat, continuity, prospector_alpha) or a YAML file (default flat)",
    )
    z = p.add_mutually_exclusive_group()
    z.add_argument(
        "--z-range", nargs=2, type=float, metavar=("ZMIN", "ZMAX"),
        help=f"uniform redshift range (default {DEFAULT_Z_RANGE[0]} {DEFAULT_Z_RANGE[1]})",
    )
    z.add_argument("--z-from-catalog", metavar="FILE", help="draw redshifts from this FITS/Parquet catalog")
    p.add_argument(
        "--z-spacing", choices=("uniform", "survey"), default="uniform",
        help="--z-range draws: uniform in z, or 'survey' (half uniform in z, half in log z)",
    )
    p.add_argument("--z-column", default="z", help="redshift column of --z-from-catalog (case-insensitive; default z)")
    add_cluster_options(p, in_process=False)
    p.add_argument("--resume", action="store_true", help="continue an unfinished run in --out")
    p.add_argument("--nmf-dir", help="provabgs: folder of the PROVABGS NMF tables "
                   "(else $SEDSCALE_PROVABGS_DIR, else the copy shipped with sedscale)")
    p.add_argument("--nebular-log-u", type=float, metavar="LOGU",
                   help="add Cloudy nebular lines and continuum of young stars at this ionization parameter (e.g. -2.5)")
    p.add_argument("--sigma-star-max", type=float, metavar="KMS",
                   help="spectra: draw a stellar velocity dispersion U(0, KMS) km/s per galaxy (broadening "
                        "hypot(350, sigma_star); marginalised by the flow); default: none, the DIGS 350 km/s")
    p.add_argument("--bands", metavar="SET",
                   help="band set of the fluxes (sedscale/data/bands.yaml, e.g. galex_sdss; default sdss ugriz); "
                        "other sets than sdss need --noise-model none")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    """The :class:`SimulationConfig` described by parsed arguments."""
    return SimulationConfig(
        model=args.model,
        n=args.n,
        out=args.out,
        seed=args.seed,
        partition_size=args.partition_size,
        noise_model=args.noise_model,
        z_range=tuple(args.z_range) if args.z_range else DEFAULT_Z_RANGE,
        z_catalog=args.z_from_catalog,
        z_column=args.z_column,
        z_spacing=args.z_spacing,
        model_options=model_options(args),
        observable=args.observable,
        sigma_star_max=args.sigma_star_max,
    )


def model_options(args: argparse.Namespace) -> dict:
    """Forward-model options of the arguments: paths absolute, a prior file as its canonical JSON.

    Workers started in another directory (SLURM jobs) then need no relative
    path, and the prior travels with the data (it is recorded in every file).
    """
    options = {}
    if args.nmf_dir:
        options["nmf_dir"] = str(Path(args.nmf_dir).resolve())
    if args.nebular_log_u is not None:
        options["nebular_log_u"] = args.nebular_log_u
    if args.bands:
        from ..observe.bands import get_band_set

        options["bands"] = get_band_set(args.bands).name
    if args.prior:
        from ..models.physical_prior import load_prior_config, prior_presets

        if args.prior in prior_presets():
            options["prior"] = args.prior
        else:
            import json

            options["prior"] = json.dumps(load_prior_config(args.prior), sort_keys=True)
    return options


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    cluster_config = cluster_from_args(args)
    # Validate model, redshifts and output directory before starting a cluster.
    plan = plan_run(config)
    _, done = check_output(plan, args.resume)
    print(
        f"{PROG}: {config.n} rows of {config.model} -> {config.out} in {config.n_partitions} partitions "
        f"({len(done)} already done); config {plan.config_hash[:12]}",
        flush=True,
    )
    if len(done) == config.n_partitions:
        # A finished run: nothing to compute, so no cluster to start.
        print(run_simulation(config, None).format(), flush=True)
        return 0
    with announced_client(cluster_config, PROG) as client:
        try:
            summary = run_simulation(config, client, resume=args.resume, progress=not args.no_progress)
        except KeyboardInterrupt:
            return interrupted_resumable(PROG)
    print(summary.format(), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bin/run_simulate``; returns the exit status (SIGTERM stops it as Ctrl-C does)."""
    return run_resumable(_main, argv, PROG)
