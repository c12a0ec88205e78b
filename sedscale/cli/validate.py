"""``bin/run_validate``: calibration report of a trained checkpoint, optionally with the MCMC benchmark.

Examples
--------
    bin/run_validate --flow checkpoints/dirichlet_nsa --n-test 1000
    bin/run_validate --flow checkpoints/dirichlet_nsa --n-test 1000 --mcmc 4          # + zeus on 4 test galaxies
    bin/run_validate --flow checkpoints/dirichlet_nsa --mcmc 2 --catalog nsa.fits \\
        --mcmc-iter 2000 --mcmc-burn-in 500 --out reports/nsa_mcmc                   # catalog galaxies, short chains
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..validate.calibration import (
    DEFAULT_N_BINS,
    DEFAULT_P_VALUE,
    CalibrationThresholds,
)
from ..validate.mcmc import (
    SAMPLERS,
    SEDFLOW_BURN_IN,
    SEDFLOW_ITERATIONS,
    SEDFLOW_WALKERS,
    MCMCConfig,
)
from ..validate.report import ValidationConfig, run_validation
from . import add_cluster_options, announced_client, cluster_from_args, prog_name, run_guarded

PROG = "run_validate"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name(PROG), description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--flow", required=True, help="checkpoint directory (bin/run_train output)")
    p.add_argument("--out", help="report directory (default: reports/<checkpoint name>)")
    p.add_argument("--n-test", type=int, default=1000, help="fresh test simulations (default 1000)")
    p.add_argument("--n-samples", type=int, default=1000, help="posterior samples per test galaxy (default 1000)")
    p.add_argument("--seed", type=int, help="test-set seed (default: the training seed + 1)")
    p.add_argument("--noise-model", help="noise-model JSON (default: the NSA model shipped with sedscale)")
    p.add_argument("--z-range", nargs=2, type=float, metavar=("ZMIN", "ZMAX"),
                   help="test redshift range (default: the training set's redshift distribution)")
    p.add_argument("--max-time", type=float, default=60.0,
                   help="seconds a sampling batch may redraw out-of-prior samples (default 60)")
    p.add_argument("--p-value", type=float, default=DEFAULT_P_VALUE,
                   help=f"a uniformity test fails below this p-value (default {DEFAULT_P_VALUE})")
    p.add_argument("--rank-bins", type=int, default=DEFAULT_N_BINS, help=f"rank-histogram bins (default {DEFAULT_N_BINS})")
    p.add_argument("--observed-bands", nargs="+", metavar="BAND",
                   help="band-masked flows: test galaxies observed in exactly these bands of the flow's set "
                        "(one survey's pattern; default: the training mix of patterns and masks)")
    p.add_argument("--redshift-case", choices=("photometric", "mixed"), default="photometric",
                   help="photometric-redshift flows: test galaxies without a given z (default) or with the training "
                        "mix of none and redshifts with uncertainties")
    p.add_argument("--strata-bins", type=int, default=3, help="quantile bins of z, r mag and r S/N (default 3)")
    sp = p.add_argument_group("spectral checkpoints")
    sp.add_argument("--compare", action="append", default=[], metavar="LABEL=CKPT",
                    help="another spectral checkpoint validated on the same test spectra (repeatable)")
    sp.add_argument("--spectral-noise", help="noise of the test spectra: digs or survey (default: the --flow checkpoint's)")
    m = p.add_argument_group("MCMC benchmark")
    m.add_argument("--mcmc", type=int, default=0, metavar="N", help="run MCMC on N galaxies (default 0: none)")
    m.add_argument("--catalog", help="draw the MCMC galaxies from this catalog (NSA FITS or sedscale layout)")
    m.add_argument("--mcmc-sampler", choices=SAMPLERS, default="zeus", help="zeus (default) or emcee (if installed)")
    m.add_argument("--mcmc-walkers", type=int, default=SEDFLOW_WALKERS, help=f"walkers (default {SEDFLOW_WALKERS})")
    m.add_argument("--mcmc-iter", type=int, default=SEDFLOW_ITERATIONS,
                   help=f"iterations incl. burn-in (default {SEDFLOW_ITERATIONS})")
    m.add_argument("--mcmc-burn-in", type=int, default=SEDFLOW_BURN_IN, help=f"burn-in (default {SEDFLOW_BURN_IN})")
    m.add_argument("--mcmc-init", type=int, default=10_000,
                   help="prior draws searched for the walkers' start (default 10000)")
    m.add_argument("--anpe-samples", type=int, default=10_000,
                   help="amortized samples per MCMC galaxy, timed against the MCMC (default 10000)")
    m.add_argument("--corner", type=int, default=3, help="corner plots of the first MCMC galaxies (default 3)")
    c = p.add_argument_group("cluster")
    add_cluster_options(c)
    return p


def config_from_args(args: argparse.Namespace) -> ValidationConfig:
    """The :class:`ValidationConfig` described by parsed arguments."""
    out = args.out or str(Path("reports") / Path(args.flow).resolve().name)
    return ValidationConfig(
        flow=args.flow,
        out=out,
        n_test=args.n_test,
        n_samples=args.n_samples,
        seed=args.seed,
        noise_model=args.noise_model,
        z_range=tuple(args.z_range) if args.z_range else None,
        max_time=args.max_time,
        strata_bins=args.strata_bins,
        thresholds=CalibrationThresholds(p_value=args.p_value, n_bins=args.rank_bins),
        mcmc=args.mcmc,
        mcmc_config=MCMCConfig(
            n_walkers=args.mcmc_walkers, n_iter=args.mcmc_iter, burn_in=args.mcmc_burn_in, sampler=args.mcmc_sampler,
            n_init=args.mcmc_init,
        ),
        catalog=args.catalog,
        anpe_samples=args.anpe_samples,
        n_corner=args.corner,
        observed_bands=tuple(args.observed_bands) if args.observed_bands else None,
        redshift_case=args.redshift_case,
    )


def _spectral_flows(args) -> dict:
    from ..errors import ConfigError

    flows = {Path(args.flow).resolve().name: args.flow}
    for item in args.compare:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise ConfigError(f"--compare expects LABEL=CHECKPOINT, got {item!r}")
        flows[label] = path
    return flows


def _spectral_main(args) -> int:
    from ..validate.spectra import run_spectral_validation

    out = args.out or str(Path("reports") / Path(args.flow).resolve().name)
    flows = _spectral_flows(args)
    print(f"{PROG}: spectral flows {list(flows)} -> {out}: {args.n_test} test spectra", flush=True)
    kwargs = {"n_test": args.n_test, "n_samples": args.n_samples, "seed": args.seed, "noise": args.spectral_noise,
              "max_time": args.max_time,
              "thresholds": CalibrationThresholds(p_value=args.p_value, n_bins=args.rank_bins)}
    if args.cluster == "none":
        run_spectral_validation(flows, out, client=None, **kwargs)
        return 0
    cluster_config = cluster_from_args(args)
    with announced_client(cluster_config, PROG) as client:
        run_spectral_validation(flows, out, client=client, **kwargs)
    return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from ..train.checkpoint import checkpoint_observable

    if checkpoint_observable(args.flow) == "spectrum":
        return _spectral_main(args)
    if args.compare or args.spectral_noise:
        from ..errors import ConfigError

        raise ConfigError("--compare and --spectral-noise apply to spectral checkpoints only")
    config = config_from_args(args)
    print(f"{PROG}: {config.flow} -> {config.out}: {config.n_test} test simulations, MCMC on {config.mcmc}", flush=True)
    if args.cluster == "none":
        info = run_validation(config, None)
    else:
        cluster_config = cluster_from_args(args)
        with announced_client(cluster_config, PROG) as client:
            info = run_validation(config, client)
    # Exit status 1 when the flow fails its validation, so that scripts notice.
    return 0 if info["verdict"]["usable"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bin/run_validate``; returns the exit status."""
    return run_guarded(_main, argv, PROG)
