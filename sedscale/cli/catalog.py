"""``bin/run_catalog``: posterior catalogs for survey catalogs on a Dask cluster.

Examples
--------
    bin/run_catalog catalogs/mock_nsa_dirichlet.fits --out posteriors.parquet      # the default survey flow
    bin/run_catalog catalogs/mock_nsa_dirichlet.fits --flow checkpoints/dirichlet_nsa --out nsa_flow.parquet
    bin/run_catalog ../shared/data/nsa_lcs/*.fits --out nsa.parquet --out nsa.fits --save-samples
    bin/run_catalog sdss.parquet --columns z=zspec flux=flux_{band} flux_err=fluxerr_{band} flux_unit=uJy
    bin/run_catalog cat.fits --columns z=Z flux=NMGY[2:7] flux_ivar=NMGY_IVAR[2:7] flux_unit=nanomaggy --error-floor 0.03
    bin/run_catalog ... --resume            # continue after a killed worker or job
    bin/run_catalog ... --cluster slurm     # the shipped slurm.yaml template (or a YAML path)
    bin/run_catalog ... --mcmc-subset 20    # + ANPE-vs-MCMC benchmark of 20 galaxies (<out>.mcmc.parquet)
    bin/run_catalog ... --fallback is       # importance sampling for the galaxies outside the flow's support
    bin/run_catalog ... --fallback mcmc     # MCMC posteriors for the galaxies the flow cannot serve
    bin/run_catalog ../shared/data/sdss_spectra --flow checkpoints/delayed_tau_spectra --out spectra.parquet

With a spectral checkpoint the inputs are SDSS spec-PLATE-MJD-FIBER.fits files
(or directories of them) or one Parquet spectra table (sedscale.io.sdss.spectra_table).

``bin/make_mock_catalog`` writes the MOCK NSA-format catalog with known truths.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..shipped import DEFAULT_FLOW_NAME, default_flow
from . import (
    add_cluster_options,
    announced_client,
    cluster_from_args,
    interrupted_resumable,
    prog_name,
    run_guarded,
    run_resumable,
)

PROG = "run_catalog"
#: Below this many samples per galaxy the tail percentiles are noise (a warning, not an error:
#: medians from 10-100 samples are fine for quick looks).
MIN_SAMPLES_FOR_INTERVALS = 100
#: Catalogs larger than this keep their partition directory (a partitioned Parquet dataset).
KEEP_PARTS_ABOVE = 100_000
MOCK_PROG = "make_mock_catalog"


def build_parser() -> argparse.ArgumentParser:
    from ..infer.catalog_plan import (
        DEFAULT_ERROR_FLOOR,
        DEFAULT_MAX_PROPOSALS_OUTSIDE,
        DEFAULT_MAX_TIME,
        DEFAULT_N_SAMPLES,
        DEFAULT_PARTITION_SIZE,
    )
    from ..infer.importance import DEFAULT_PROPOSALS, MIN_EFFICIENCY, MIN_ESS
    from ..infer.posterior import DEFAULT_MAX_PROPOSALS
    from ..infer.zprior import DEFAULT_Z_PRIOR, Z_PRIORS
    from ..validate.mcmc import SAMPLERS, SEDFLOW_WALKERS

    p = argparse.ArgumentParser(
        prog=prog_name(PROG), description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "catalog", nargs="+",
        help="catalog files: NSA FITS, or FITS/Parquet/CSV with --columns/--column-map; for a spectral --flow, "
        "SDSS spectrum files/directories or a Parquet spectra table",
    )
    p.add_argument("--flow", default=default_flow(),
                   help="checkpoint directory or shipped flow name (default: $SEDSCALE_FLOW, else the shipped "
                        f"{DEFAULT_FLOW_NAME})")
    p.add_argument(
        "--out", action="append", metavar="FILE",
        help="output .parquet or .fits; repeat for both (default: posteriors.parquet)",
    )
    add_cluster_options(p)
    p.add_argument("--n-samples", type=int, default=DEFAULT_N_SAMPLES,
                   help=f"posterior samples per galaxy (default {DEFAULT_N_SAMPLES})")
    p.add_argument(
        "--partition-size", type=int, default=DEFAULT_PARTITION_SIZE,
        help=f"galaxies per partition / task (default {DEFAULT_PARTITION_SIZE})",
    )
    p.add_argument("--save-samples", action="store_true", help="store the posterior samples as list/vector columns")
    p.add_argument(
        "--error-floor", type=float, metavar="MAG",
        help="magnitudes added in quadrature to every band's uncertainty, for what the SPS model and the "
        f"calibration do not reproduce (default {DEFAULT_ERROR_FLOOR:g}, chosen on the real catalogs: docs/catalog.md); "
        "a smaller floor sharpens photometric redshifts a little (SDSS MGS NMAD 0.0238 at 0.002, 0.0264 at 0.05) "
        "but leaves more galaxies poor_fit",
    )
    p.add_argument(
        "--min-snr", type=float, metavar="SNR",
        help="band-masked flows: mask bands measured below this S/N (flux x sqrt(ivar); non-detections, "
        "reason low_snr); default: the lowest S/N the flow was trained on (1.09 for the survey flows); 0 keeps all",
    )
    p.add_argument("--z-prior", choices=Z_PRIORS,
                   help=f"photometric-redshift flows: the redshift prior (default {DEFAULT_Z_PRIOR}; 'training' keeps "
                        "the flow's training distribution)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--max-time", type=float, default=DEFAULT_MAX_TIME,
        help=f"seconds a partition may spend redrawing samples outside the prior (default {DEFAULT_MAX_TIME:g})",
    )
    p.add_argument(
        "--max-proposals", type=float, default=DEFAULT_MAX_PROPOSALS, metavar="K",
        help=f"flow draws a galaxy may spend per sample before it is flagged (default {DEFAULT_MAX_PROPOSALS:g}; "
        f"{DEFAULT_MAX_PROPOSALS_OUTSIDE:g} for galaxies outside the training support)",
    )
    p.add_argument(
        "--derived-samples", type=int,
        help="samples per galaxy used for derived properties (default: all; fewer is faster)",
    )
    p.add_argument("--importance-sampling", nargs="?", type=int, const=DEFAULT_PROPOSALS, default=0, metavar="N",
                   help="correct each galaxy's posterior by importance sampling against the exact likelihood of its "
                        f"photometry, N proposals per galaxy (default {DEFAULT_PROPOSALS:,}; ~1-3 CPU-s per galaxy): "
                        "columns is_ess, is_efficiency, log_evidence; status low_is_efficiency below "
                        f"{MIN_EFFICIENCY:g} efficiency or {MIN_ESS:.0f} effective samples")
    p.add_argument("--fit-check", action=argparse.BooleanOptionalAction, default=None,
                   help="goodness of fit per galaxy, on by default for photometric catalogs: model magnitudes of 50 "
                        "posterior samples against every measured band (columns model_mag_<band>, chi2_best, "
                        "n_bands_fit, ppc_p; status poor_fit below p = 0.001); --no-fit-check skips it")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run (same options)")
    p.add_argument("--keep-parts", action="store_true",
                   help=f"keep the partition directory after the catalog is assembled (kept anyway above "
                   f"{KEEP_PARTS_ABOVE:,} galaxies: it is the partitioned output of a survey-size run)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the work directory of an earlier run of these outputs and recompute everything")
    p.add_argument("--work-dir", help="partition directory (default: <first --out>.parts)")
    m = p.add_argument_group("catalog columns (non-NSA catalogs)")
    m.add_argument(
        "--columns", nargs="+", metavar="KEY=COL",
        help="column mapping, e.g. id=objid z=zspec flux=flux_{band} flux_ivar=ivar_{band} flux_unit=uJy "
        "[extinction=a_{band}] or mag=m_{band} mag_err=e_{band}",
    )
    m.add_argument("--column-map", metavar="YAML", help="column mapping file (same keys as --columns)")
    m.add_argument("--keep", nargs="+", default=[], metavar="COL", help="input columns to copy into the output")
    s = p.add_argument_group("out-of-support detection")
    s.add_argument("--support", metavar="FILE", help="x-support file (default: x_support.npz beside the checkpoint)")
    s.add_argument("--support-sims", metavar="DIR", help="training simulation to build the x-support from if missing")
    s.add_argument("--no-support-check", action="store_true", help="skip out-of-support detection")
    mc = p.add_argument_group("MCMC in the same run (sedscale.infer.catalog_mcmc)")
    mc.add_argument("--mcmc-subset", type=int, default=0, metavar="N",
                    help="benchmark N galaxies with status ok (stratified by magnitude, colour, z) against MCMC "
                         "run until converged; table <out>.mcmc.parquet")
    mc.add_argument("--fallback", choices=("none", "is", "mcmc"), default="none",
                    help="is: importance sampling against the exact likelihood for the galaxies flagged "
                         "out_of_support (method=is; status ok, or low_is_efficiency; proposals: "
                         f"--importance-sampling N, default {DEFAULT_PROPOSALS:,}); mcmc: MCMC posteriors for the "
                         "galaxies flagged out_of_support or sampling_timeout (method=mcmc; status ok or "
                         "mcmc_not_converged)")
    mc.add_argument("--mcmc-max-iter", type=int,
                    help="iteration budget per galaxy (default 20,000: catalog_mcmc.DEFAULT_MAX_ITER); chains stop "
                         "earlier once split-R-hat < 1.01 and every parameter has >= 1,000 effective samples")
    mc.add_argument("--mcmc-walkers", type=int, default=SEDFLOW_WALKERS, help=f"walkers (default {SEDFLOW_WALKERS})")
    mc.add_argument("--mcmc-sampler", choices=SAMPLERS, default=SAMPLERS[0], help=f"ensemble sampler (default {SAMPLERS[0]})")
    p.add_argument("--best-fit", action="store_true",
                   help="spectra: also fit each spectrum by least squares from its posterior median (chi2_best)")
    p.add_argument("--ignore-mask-bits", metavar="NAMES",
                   help="SDSS spectra: and_mask bits that do not make a pixel bad, comma-separated SPPIXMASK names "
                        "(e.g. MANYBADCOLUMNS,NEARBADPIXEL: fiber-level warnings SDSS can set over a whole arm); "
                        "default: every bit masks")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _mapping(args):
    """The --columns pairs or the --column-map path (parsed for the flow's bands by plan_catalog)."""
    from ..errors import ConfigError

    if args.columns and args.column_map:
        raise ConfigError("give --columns or --column-map, not both")
    return args.columns or args.column_map


def _check_input_kind(paths: Sequence[str], flow: str, spectral: bool) -> None:
    """Refuse, before any work, inputs of the other kind than the flow's (spectra vs a photometric table).

    SDSS spectrum files carry a ``COADD`` HDU; photometric catalogs do not.
    A directory given to a photometric flow is checked by its first files.

    Raises
    ------
    ConfigError
        Naming the first mismatching file, what it holds and what the flow expects.
    """
    from ..io.source import expand_catalog_paths

    for name in paths:
        files = [Path(name)]
        if files[0].is_dir() and not spectral:
            files = expand_catalog_paths(files[0])[:5]
        for path in files:
            _check_file_kind(path, flow, spectral)


def _check_file_kind(path: Path, flow: str, spectral: bool) -> None:
    """ConfigError when a FITS file is a spectrum and the flow photometric, or the other way round."""
    from astropy.io import fits

    from ..errors import ConfigError

    if not path.is_file() or not path.name.lower().endswith((".fits", ".fits.gz", ".fit")):
        return
    with fits.open(path) as hdus:
        names = [hdu.name for hdu in hdus]
    is_desi = "FIBERMAP" in names and "B_FLUX" in names
    is_spectrum = "COADD" in names or is_desi
    kind = "a DESI coadd file (FIBERMAP, B_FLUX HDUs)" if is_desi else "an SDSS spectrum file (COADD HDU)"
    if spectral and not is_spectrum:
        raise ConfigError(
            f"{path} is not an SDSS spectrum or DESI coadd file (no COADD or B_FLUX HDU; a photometric catalog?), "
            f"but the flow {flow} is conditioned on spectra: use a photometric flow (e.g. checkpoints/dirichlet_dwarf) "
            "for catalogs"
        )
    if not spectral and is_spectrum:
        raise ConfigError(
            f"{path} is {kind}, but the flow {flow} is conditioned on photometry: "
            "use a spectral flow (e.g. checkpoints/dirichlet_spectra) for spectra"
        )


def _spectral_main(args, options) -> int:
    """The spectral catalog: read and check the spectra, sample on the cluster, write the outputs."""
    import time

    from ..cluster import limit_threads
    from ..errors import ConfigError
    from ..infer.spectra import read_spectral_inputs, run_spectral_catalog, status_counts, write_spectral_catalog

    for name in ("columns", "column_map", "support", "support_sims", "keep", "importance_sampling", "fit_check",
                 "mcmc_subset"):
        if getattr(args, name):
            raise ConfigError(f"--{name.replace('_', '-')} applies to photometric catalogs only")
    if args.fallback != "none":
        raise ConfigError("--fallback applies to photometric catalogs only")
    _check_outputs_new(args)
    from ..infer.catalog import default_work_dir
    from ..io.atomic import check_writable

    start = time.perf_counter()
    outputs = args.out or ["posteriors.parquet"]
    for out in outputs:
        check_writable(out)
    check_writable(args.work_dir or default_work_dir(outputs[0]), "work directory")
    from ..io.sdss import ALL_MASK_BITS, sppixmask

    ignored = [n.strip() for n in (args.ignore_mask_bits or "").split(",") if n.strip()]
    obs = read_spectral_inputs(args.catalog, mask_bits=ALL_MASK_BITS & ~sppixmask(*ignored))
    print(f"{PROG}: {len(obs)} spectra ({int(obs.flagged.sum())} flagged by the reader) -> {', '.join(outputs)}",
          flush=True)

    kwargs = {"check_support": not args.no_support_check, "progress": not args.no_progress, "fit": args.best_fit,
              "work_dir": args.work_dir or default_work_dir(outputs[0]), "resume": args.resume}
    try:
        if args.cluster == "none":
            limit_threads(1)
            table = run_spectral_catalog(obs, args.flow, options, None, **kwargs)
        else:
            cluster_config = cluster_from_args(args)
            with announced_client(cluster_config, PROG) as client:
                table = run_spectral_catalog(obs, args.flow, options, client, **kwargs)
    except KeyboardInterrupt:
        return interrupted_resumable(PROG)
    written = write_spectral_catalog(table, outputs)
    wall = time.perf_counter() - start
    counts = ", ".join(f"{k} {v}" for k, v in sorted(status_counts(table).items()))
    print(f"{PROG}: {len(obs)} spectra in {wall:.1f} s ({len(obs) / wall:.2f}/s): {counts}", flush=True)
    print(f"{PROG}: written {', '.join(map(str, written))}", flush=True)
    return 0


def _main(argv: Sequence[str] | None) -> int:
    from ..errors import ConfigError
    from ..infer.catalog import CatalogOptions, plan_catalog
    from ..io.lock import exclusive_run

    args = build_parser().parse_args(argv)
    options = CatalogOptions(
        n_samples=args.n_samples,
        partition_size=args.partition_size,
        save_samples=args.save_samples,
        seed=args.seed,
        max_time=args.max_time,
        max_proposals=args.max_proposals,
        derived_samples=args.derived_samples,
        check_support=not args.no_support_check,
        error_floor=args.error_floor,
        min_snr=args.min_snr,
        z_prior=args.z_prior,
        importance_proposals=args.importance_sampling,
        importance_fallback=args.fallback == "is",
        fit_check=args.fit_check is not False,
    )
    from ..train.checkpoint import checkpoint_observable

    if args.n_samples < MIN_SAMPLES_FOR_INTERVALS:
        print(f"{PROG}: warning: with {args.n_samples} samples per galaxy the 2.5/97.5 percentiles rest on "
              f"{max(args.n_samples // 40, 0)} samples each; use >= {MIN_SAMPLES_FOR_INTERVALS} for credible intervals",
              file=sys.stderr, flush=True)
    spectral = checkpoint_observable(args.flow) == "spectrum"
    _check_input_kind(args.catalog, args.flow, spectral)
    if args.overwrite and args.resume:
        raise ConfigError("--overwrite and --resume exclude each other")
    if spectral:
        for name in ("error_floor", "min_snr"):
            if getattr(args, name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} applies to photometric checkpoints only")
        return _spectral_main(args, options)
    for name in ("best_fit", "ignore_mask_bits"):
        if getattr(args, name):
            raise ConfigError(f"--{name.replace('_', '-')} applies to spectral checkpoints only")
    # Validate catalog, checkpoint and outputs before starting a cluster.
    plan = plan_catalog(
        args.catalog, args.flow, args.out or ["posteriors.parquet"], options, mapping=_mapping(args),
        keep=args.keep, support=args.support, support_sims=args.support_sims, work_dir=args.work_dir,
        mcmc=_mcmc_request(args),
    )
    # Held from here to the end: every refusal about the work directory comes before a cluster starts.
    with exclusive_run(plan.work_dir, "work directory"):
        return _run_planned(args, plan)


def _check_outputs_new(args) -> None:
    """Refuse to replace an existing output unless ``--overwrite`` (or ``--resume``, which finishes the run that
    writes it) says so, as ``bin/run_simulate`` and ``bin/run_train`` do."""
    from ..errors import ConfigError

    if args.overwrite or args.resume:
        return
    inputs = {Path(c).resolve() for c in args.catalog}
    for out in args.out or ["posteriors.parquet"]:
        # The planner refuses a directory, and an input named as output, more precisely.
        if Path(out).is_file() and Path(out).resolve() not in inputs:
            raise ConfigError(f"{out} exists: --overwrite replaces it")


def _run_planned(args, plan) -> int:
    """Check the work directory, report the plan, run it on the cluster, tidy up (under the work-dir lock)."""
    from ..cluster import limit_threads
    from ..infer.catalog import check_work_dir, clear_work_dir, run_catalog
    from ..io.source import DEDUP_MAX_ROWS

    if args.overwrite:
        removed = clear_work_dir(plan.work_dir)
        if removed:
            print(f"{PROG}: --overwrite: removed the earlier run's work directory ({removed} files)", flush=True)
    else:
        check_work_dir(plan, args.resume)
    # After the work directory's own advice (an unfinished run of these options wants --resume).
    _check_outputs_new(args)
    options = plan.spec.options
    source = plan.source
    if plan.flux_warning:
        print(f"{PROG}: warning: {plan.flux_warning}", file=sys.stderr, flush=True)
    repeats = f"{source.n_duplicates} repeated ids dropped" if source.dedup_checked else \
        f"ids not checked for repeats above {DEDUP_MAX_ROWS:,} rows"
    print(
        f"{PROG}: {plan.n_galaxies} galaxies from {len(source.files)} file(s) "
        f"({repeats}; fluxes in {source.flux_unit}) -> {', '.join(map(str, plan.outputs))}",
        flush=True,
    )
    print(
        f"{PROG}: flow {plan.posterior.path} ({plan.posterior.model_name}, {plan.posterior.metadata['flow']['kind']}); "
        f"{options.n_samples} samples/galaxy; error floor {plan.spec.options.error_floor:g} mag; "
        + (f"bands below S/N {plan.spec.options.min_snr:.3g} masked; " if plan.spec.options.min_snr else "")
        + f"{plan.n_partitions} partitions; run {plan.config_hash[:12]}",
        flush=True,
    )
    progress = not args.no_progress

    def log(message: str) -> None:
        print(f"{PROG}: {message}", flush=True)

    try:
        if args.cluster == "none":
            # As in a worker: one torch/BLAS thread (oversubscribed torch ran 3-5x slower here).
            limit_threads(1)
            summary = run_catalog(plan, None, resume=args.resume, progress=progress, log=log)
        else:
            cluster_config = cluster_from_args(args)
            with announced_client(cluster_config, PROG) as client:
                summary = run_catalog(plan, client, resume=args.resume, progress=progress, log=log)
    except KeyboardInterrupt:
        return interrupted_resumable(PROG)
    print(summary.format(), flush=True)
    _tidy_parts(plan, keep=args.keep_parts)
    return 0


def _mcmc_request(args):
    """The MCMC part of the run (None without --mcmc-subset / --fallback mcmc)."""
    from ..infer.catalog_mcmc import DEFAULT_MAX_ITER, CatalogMCMC
    from ..validate.mcmc import MCMCConfig

    if not args.mcmc_subset and args.fallback != "mcmc":
        return None
    max_iter = DEFAULT_MAX_ITER if args.mcmc_max_iter is None else args.mcmc_max_iter
    config = MCMCConfig.until_converged(max_iter, check_every=min(2_000, max_iter),
                                        n_walkers=args.mcmc_walkers, sampler=args.mcmc_sampler, seed=args.seed)
    return CatalogMCMC(subset=args.mcmc_subset, fallback=args.fallback == "mcmc", config=config, seed=args.seed)


def _tidy_parts(plan, keep: bool) -> None:
    """Report the partition directory's size; remove it after a small catalog is assembled unless ``keep``.

    A run with MCMC galaxies keeps it: their results (minutes each) live there.
    """
    from ..infer.catalog import clear_work_dir

    work = plan.work_dir
    size = sum(p.stat().st_size for p in work.iterdir() if p.is_file()) if work.is_dir() else 0
    if keep or plan.n_galaxies > KEEP_PARTS_ABOVE or plan.mcmc is not None:
        print(f"{PROG}: partitions kept in {work} ({size / 2**20:.1f} MiB)", flush=True)
        return
    clear_work_dir(work)
    print(f"{PROG}: removed the partition directory {work} ({size / 2**20:.1f} MiB; --keep-parts keeps it)",
          flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bin/run_catalog``; returns the exit status (SIGTERM stops it as Ctrl-C does)."""
    return run_resumable(_main, argv, PROG)


def build_mock_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name(MOCK_PROG),
        description="Simulate a MOCK NSA-format FITS catalog with known truths (TRUE_* columns) for bin/run_catalog.",
        epilog="Example: bin/make_mock_catalog --out catalogs/mock_nsa_dirichlet.fits --n 1000 --seed 42 "
        "--flow checkpoints/dirichlet_survey --z-range 0.01 0.06",
    )
    p.add_argument("--out", required=True, help="output FITS file (put 'mock' in its name)")
    p.add_argument("--n", type=int, default=1000, help="galaxies (default 1000)")
    p.add_argument("--seed", type=int, default=42, help="simulation seed (default 42)")
    p.add_argument("--model", help="forward model (default: the --flow checkpoint's, else dirichlet)")
    p.add_argument("--flow", help="take model, prior and redshift range from this checkpoint's training set")
    p.add_argument("--z-range", nargs=2, type=float, metavar=("ZMIN", "ZMAX"), help="uniform redshift range (default 0.01 0.06)")
    p.add_argument("--defects", type=int, default=10, help="rows damaged on purpose to show the quality flags (default 10)")
    p.add_argument("--noise-model", help="noise-model JSON (default: the shipped NSA model)")
    return p


def _mock_main(argv: Sequence[str] | None) -> int:
    from ..errors import ConfigError
    from ..infer.catalog import training_z_range
    from ..infer.mock import write_mock_nsa
    from ..models import DEFAULT_MODEL
    from ..train.checkpoint import checkpoint_paths, read_json

    args = build_mock_parser().parse_args(argv)
    if "mock" not in Path(args.out).name.lower():
        raise ConfigError(f"{args.out}: a mock catalog's file name must say 'mock'")
    model, z_range = args.model, args.z_range
    options: dict = {}
    if args.flow:
        meta = read_json(checkpoint_paths(args.flow)[1])
        model = model or meta["model"]["name"]
        options = meta["model"].get("options") or {} if model == meta["model"]["name"] else {}
        z_range = z_range or training_z_range(meta)
    path = write_mock_nsa(
        args.out, n=args.n, seed=args.seed, model=model or DEFAULT_MODEL, z_range=tuple(z_range or (0.01, 0.06)),
        n_defects=args.defects, noise_model=args.noise_model, model_options=options,
    )
    print(f"{MOCK_PROG}: wrote {path} ({args.n} MOCK galaxies, {args.defects} with defects, model {model or DEFAULT_MODEL}, "
          f"z {tuple(z_range or (0.01, 0.06))})")
    return 0


def mock_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bin/make_mock_catalog``; returns the exit status."""
    return run_guarded(_mock_main, argv, MOCK_PROG)
