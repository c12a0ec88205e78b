"""Driver of a simulation run: plan, schedule partitions on Dask, keep the manifest.

:func:`run_simulation` builds a :mod:`dask.bag` with one element (and one
bag partition) per simulation partition still to do, maps
:func:`~sedscale.simulate.partition.simulate_partition` over it, and records
each partition in ``_manifest.json`` as soon as its file is written.  With
a :class:`distributed.Client` the partitions run on the cluster (a killed
worker's partitions are rescheduled by the scheduler); without one they run
one after another in this process.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__
from ..errors import ConfigError
from ..io.lock import exclusive_run
from ..io.runs import open_run_dir, remove_temporary_files, verify_run_dir, write_manifest
from ..models.derived import DERIVED_UNITS
from ..observe.filters import SDSS_FILTERS
from ..observe.layout import (
    FLUX_COLUMNS,
    FLUX_SIGMA_COLUMNS,
    FLUX_TRUE_COLUMNS,
    MAG_COLUMNS,
    MAG_SIGMA_COLUMNS,
    PHOTOMETRY_X_COLUMNS,
    REDSHIFT_COLUMN,
    SPECTRUM_TRUE_COLUMN,
    SPECTRUM_X_COLUMNS,
    SPECTRUM_X_UNITS,
)
from ..observe.spectra import DIGS_WAVELENGTH
from .config import (
    NOISELESS,
    SimulationConfig,
    config_hash,
    identity,
    load_model,
    load_noise_model,
)
from .manifest import MANIFEST_FORMAT
from .partition import ID_COLUMN, TaskSpec, simulate_partition

#: Prefix of the Parquet key-value metadata keys.
META_PREFIX = "sedscale."


@dataclass(frozen=True)
class RunPlan:
    """A configured run: task spec, identity and config hash."""

    config: SimulationConfig
    spec: TaskSpec
    identity: dict
    config_hash: str


def plan_run(config: SimulationConfig) -> RunPlan:
    """Resolve model, noise model and redshift distribution; hash the run.

    Cheap: the model's SSP library is not built here.

    Raises
    ------
    SedscaleError
        Unknown model (ParameterError), bad options, noise model or redshifts.
    """
    model = load_model(config.model_key)
    redshift = config.redshift_distribution(model.z_max)
    spectral = config.observable == "spectrum"
    if spectral and config.noise_model is not None:
        raise ConfigError("spectra are stored noiseless (noise is drawn at training); a noise model does not apply")
    noiseless = config.noise_model == NOISELESS
    noise_dict = {} if spectral or noiseless else load_noise_model(config.noise_model).to_dict()
    if not spectral and not noiseless and model.bands.filters != SDSS_FILTERS:
        raise ConfigError(f"band set {model.bands.name!r} needs --noise-model none (the NSA noise model is ugriz only)")
    filters = () if spectral else model.bands.filters
    ident = identity(config, model.prior.to_dict(), model.cosmology, filters, noise_dict, redshift.to_dict())
    digest = config_hash(ident)
    metadata = parquet_metadata(model, noise_dict, redshift.to_dict(), config.seed, digest, config.observable,
                                noiseless=noiseless, model_options=config.model_options,
                                sigma_star_max=config.sigma_star_max)
    spec = TaskSpec(
        model_key=config.model_key,
        # Absolute, for workers started in another directory (SLURM jobs).
        noise_model=(
            config.noise_model if noiseless or not config.noise_model else str(Path(config.noise_model).resolve())
        ),
        redshift=redshift,
        seed=config.seed,
        n=config.n,
        partition_size=config.partition_size,
        out=str(Path(config.out).resolve()),
        metadata=metadata,
        observable=config.observable,
        sigma_star_max=config.sigma_star_max,
    )
    return RunPlan(config=config, spec=spec, identity=ident, config_hash=digest)


def parquet_metadata(
    model, noise_dict: dict, redshift: dict, seed: int, digest: str, observable: str = "photometry",
    noiseless: bool = False, model_options: dict | None = None, sigma_star_max: float | None = None,
) -> dict[str, str]:
    """Key-value metadata of every Parquet file of a run (values are JSON or plain strings).

    ``x_columns`` are the flow inputs: Parquet columns for noisy photometry;
    for spectra the inputs :func:`~sedscale.observe.layout.spectrum_x`
    makes from ``spec_true`` once noise is drawn, for noiseless photometry
    those :func:`~sedscale.observe.layout.masked_photometry_x` makes from
    the true fluxes (the source recorded in ``x_source``).
    """
    units = {ID_COLUMN: "", REDSHIFT_COLUMN: ""}
    units.update({p.name: p.unit for p in model.prior.parameters})
    if observable == "spectrum":
        units[SPECTRUM_TRUE_COLUMN] = "Lsun/Angstrom"
        units.update(SPECTRUM_X_UNITS)
        x_columns = SPECTRUM_X_COLUMNS
    elif noiseless:
        units.update({c: "nanomaggy" for c in model.bands.columns("flux_true_")})
        units.update(model.bands.masked_x_units)
        x_columns = model.bands.masked_x_columns
    else:
        units.update({c: "nanomaggy" for c in FLUX_TRUE_COLUMNS + FLUX_COLUMNS + FLUX_SIGMA_COLUMNS})
        units.update({c: "mag(AB)" for c in MAG_COLUMNS})
        units.update({c: "mag" for c in MAG_SIGMA_COLUMNS})
        x_columns = PHOTOMETRY_X_COLUMNS
    units.update(DERIVED_UNITS)
    if sigma_star_max is not None:
        units["sigma_star"] = "km/s"
    entries = {
        "model": model.name,
        "param_names": json.dumps(list(model.param_names)),
        "prior": json.dumps(model.prior.to_dict(), sort_keys=True),
        "noise_model": json.dumps(noise_dict, sort_keys=True),
        "filters": json.dumps([] if observable == "spectrum" else list(model.bands.filters)),
        "cosmology": model.cosmology,
        "redshift": json.dumps(redshift, sort_keys=True),
        "seed": str(seed),
        "x_columns": json.dumps(list(x_columns)),
        "units": json.dumps(units, sort_keys=True),
        "version": __version__,
        "config_hash": digest,
    }
    if model_options:
        entries["model_options"] = json.dumps({k: str(v) for k, v in sorted(model_options.items())})
    if observable == "spectrum":
        entries["observable"] = observable
        entries["x_source"] = SPECTRUM_TRUE_COLUMN
        entries["wavelength"] = json.dumps(DIGS_WAVELENGTH.tolist())
        if sigma_star_max is not None:
            entries["sigma_star_kms"] = json.dumps([0.0, float(sigma_star_max)])
    elif noiseless:
        entries["x_source"] = "flux_true"
        entries["bands"] = json.dumps(list(model.bands.bands))
    return {META_PREFIX + k: v for k, v in entries.items()}


@dataclass
class SimulationSummary:
    """Outcome of :func:`run_simulation`.

    Attributes
    ----------
    out : Path
    config_hash : str
    n_partitions : int
        Partitions of the whole dataset.
    partitions_run, partitions_skipped : int
        Computed by this call / already finished and verified.
    rows_total : int
        Rows in the dataset (all finished partitions).
    rows_new, drawn_new : int
        Rows written and forward-model evaluations made by this call.
    dropped : dict of str to int
        Rejected draws by reason over the whole dataset.
    wall_s : float
        Wall time of this call in seconds.
    cpu_s : float
        CPU seconds the partitions of this call took (summed over workers).
    """

    out: Path
    config_hash: str
    n_partitions: int
    partitions_run: int = 0
    partitions_skipped: int = 0
    rows_total: int = 0
    rows_new: int = 0
    drawn_new: int = 0
    dropped: dict = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def rows_per_s(self) -> float:
        """Rows written per second of wall time (this call)."""
        return self.rows_new / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def models_per_s(self) -> float:
        """Forward-model evaluations per second of wall time (this call)."""
        return self.drawn_new / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def rows_per_cpu_s(self) -> float:
        """Rows written per CPU-second (per core, independent of other load)."""
        return self.rows_new / self.cpu_s if self.cpu_s > 0 else 0.0

    def format(self) -> str:
        """Multi-line human-readable summary."""
        total_dropped = sum(self.dropped.values())
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.dropped.items())) or "none"
        lines = [
            f"output          {self.out}  (config {self.config_hash[:12]})",
            f"partitions      {self.partitions_run} run, {self.partitions_skipped} already done, "
            f"{self.n_partitions} in total",
            f"rows written    {self.rows_new} now, {self.rows_total} in the dataset",
            f"rows dropped    {total_dropped} ({reasons})",
            f"wall time       {self.wall_s:.1f} s",
            f"throughput      {self.rows_per_s:,.0f} rows/s, {self.models_per_s:,.0f} models/s",
            f"cpu time        {self.cpu_s:.1f} s in partitions ({self.rows_per_cpu_s:,.0f} rows per CPU-second)",
        ]
        return "\n".join(lines)


def check_output(plan: RunPlan, resume: bool) -> tuple[dict | None, dict]:
    """Check that ``plan`` may run in its output directory (read-only).

    Returns
    -------
    manifest : dict or None
        The existing manifest of this run, None for a new run.
    verified : dict
        Its partition entries whose files verify.

    Raises
    ------
    ConfigError
        A different run or foreign files are in ``out``, or an unfinished
        run of this configuration is there and ``resume`` is False.
    """
    config = plan.config
    return verify_run_dir(config.out, MANIFEST_FORMAT, plan.config_hash, plan.identity, config.n_partitions, resume,
                          resume_flag="--resume (resume=True)")


def _resume_state(plan: RunPlan, resume: bool) -> dict:
    """Manifest to continue from, holding only finished, verified partitions."""
    config = plan.config
    return open_run_dir(config.out, MANIFEST_FORMAT, plan.config_hash, plan.identity, config.n_partitions, resume,
                        extra={"options": config.describe()}, resume_flag="--resume (resume=True)")


def run_simulation(
    config: SimulationConfig,
    client=None,
    *,
    resume: bool = False,
    progress: bool = False,
    on_partition: Callable[[dict], None] | None = None,
) -> SimulationSummary:
    """Simulate a training set into partitioned Parquet.

    Parameters
    ----------
    config : SimulationConfig
    client : distributed.Client, optional
        Run the partitions on this cluster; None runs them in this process.
    resume : bool
        Continue an unfinished run in ``config.out``: partitions listed in the
        manifest whose files verify are kept, all others are (re)done.  A
        finished run is never recomputed, with or without ``resume``.
    progress : bool
        Show a tqdm progress bar over partitions.
    on_partition : callable, optional
        Called in this process with each finished partition's manifest entry.

    Returns
    -------
    SimulationSummary

    Raises
    ------
    SedscaleError
        Bad configuration, or ``config.out`` holding another run (nothing is
        overwritten then).
    """
    with exclusive_run(config.out, "simulation output"):
        return _run_simulation(config, client, resume, progress, on_partition)


def _run_simulation(config: SimulationConfig, client, resume: bool, progress: bool,
                    on_partition: Callable[[dict], None] | None) -> SimulationSummary:
    start = time.perf_counter()
    plan = plan_run(config)
    manifest = _resume_state(plan, resume)
    remove_temporary_files(config.out)
    done = manifest["partitions"]
    todo = [i for i in range(config.n_partitions) if str(i) not in done]
    summary = SimulationSummary(
        out=Path(config.out), config_hash=plan.config_hash, n_partitions=config.n_partitions,
        partitions_skipped=len(done),
    )

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="partition", desc=f"simulate {config.model}")

    def record(result: dict) -> None:
        entry = {k: v for k, v in result.items() if k != "index"}
        done[str(result["index"])] = entry
        write_manifest(config.out, manifest)
        summary.partitions_run += 1
        summary.rows_new += result["rows"]
        summary.drawn_new += result["drawn"]
        summary.cpu_s += result["cpu_seconds"]
        if bar is not None:
            bar.update(1)
        if on_partition is not None:
            on_partition(result)

    try:
        _execute(todo, plan.spec, client, record)
    finally:
        if bar is not None:
            bar.close()
    # A worker killed mid-write during this run leaves its temporary file;
    # every partition is now recorded, so whatever .tmp remains is debris.
    remove_temporary_files(config.out)
    summary.rows_total = sum(e["rows"] for e in done.values())
    for entry in done.values():
        for reason, count in entry["dropped"].items():
            summary.dropped[reason] = summary.dropped.get(reason, 0) + count
    summary.wall_s = time.perf_counter() - start
    return summary


def _execute(todo: list[int], spec: TaskSpec, client, record: Callable[[dict], None]) -> None:
    """Run ``simulate_partition`` over ``todo`` as a dask bag, recording each result."""
    if not todo:
        return
    import dask
    import dask.bag as db

    from ..cluster.execute import run_tasks

    # One Delayed for the spec: a single graph node shared by all tasks.
    spec_node = dask.delayed(spec, pure=True)
    bag = db.from_sequence(todo, npartitions=len(todo)).map(simulate_partition, spec=spec_node)

    def record_part(_, results: list[dict]) -> None:
        for result in results:
            record(result)

    run_tasks(bag.to_delayed(), client, record_part)
