"""MCMC inside a catalog run: a benchmark subset, and the fallback for galaxies the flow cannot serve.

Two uses of the converged-MCMC machinery of :mod:`sedscale.validate.mcmc`,
run on the catalog's own Dask cluster once its partitions are done:

* ``--mcmc-subset N`` draws N galaxies with status ``ok`` (seeded, stratified
  in terciles of magnitude, colour and redshift so that the benchmark covers
  the catalog) and runs, per galaxy and in the same task, the amortized
  posterior and an MCMC until converged (:func:`~sedscale.validate.mcmc.mcmc_task`).
  The table ``<catalog>.mcmc.parquet`` beside the first output holds per
  galaxy and parameter the median shift in MCMC sigmas, the width ratio, a
  two-sample KS test, the convergence diagnostics and the CPU cost of both.
* ``--fallback mcmc`` sends every galaxy flagged ``out_of_support`` or
  ``sampling_timeout`` to MCMC (:func:`fallback_task`): the same likelihood
  as the flow's training noise (the catalog's uncertainties with the run's
  error floor), the same prior, a per-galaxy iteration budget.  In the
  assembled catalog their rows get the MCMC posterior's summaries and
  samples, ``method = "mcmc"`` (``"anpe"`` or ``"is"`` elsewhere), the diagnostics
  ``mcmc_converged``, ``mcmc_max_rhat``, ``mcmc_min_ess``, ``mcmc_n_iter``,
  ``mcmc_cpu_s``, and status ``ok`` or ``mcmc_not_converged``; the reason
  that sent them keeps saying why.  The partition directory holds the
  amortized rows only.

Every galaxy is one task; the driver writes each result atomically into the
work directory (``mcmc-<kind>-<row>.parquet``) and records it in the run
manifest, so ``--resume`` keeps the finished galaxies and a killed worker's
task is simply run again by Dask.  Results of other MCMC settings are not
reused.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError
from ..io.atomic import write_table
from ..io.runs import verified_entries
from ..units import mag_sigma_to_flux_sigma
from ..validate.mcmc import MCMCConfig, PhotometryLogPosterior, run_mcmc
from ..validate.mcmc_benchmark import GalaxyObservation, mcmc_task
from .catalog_worker import check_catalog_rows, load_posterior_cached, model_for
from .quality import (
    METHOD_ANPE,
    METHOD_MCMC,
    STATUS_MCMC_NOT_CONVERGED,
    STATUS_OK,
    STATUS_OUT_OF_SUPPORT,
    STATUS_POOR_FIT,
    STATUS_TIMEOUT,
)
from .rows import sample_quantities, summary_columns
from .summaries import clip_to_prior
from .support import SUPPORT_LABELS

__all__ = [
    "CatalogMCMC", "DEFAULT_MAX_ITER", "FALLBACK_STATUSES", "MCMCOutcome", "STATUS_MCMC_NOT_CONVERGED",
    "fallback_task", "mcmc_table_path", "patched_tables", "run_catalog_mcmc", "select_fallback", "select_subset",
]

#: Statuses sent to MCMC by ``--fallback mcmc``.
FALLBACK_STATUSES = (STATUS_OUT_OF_SUPPORT, STATUS_TIMEOUT)
#: Default iteration budget per galaxy (x 30 walkers; ~20-40 CPU-minutes for the 11-parameter models).
DEFAULT_MAX_ITER = 20_000
#: Columns the fallback adds to every row of the assembled catalog, with their fill for amortized rows
#: (no nulls: FITS has none for booleans and integers).
FALLBACK_COLUMNS = {
    "method": (pa.string(), METHOD_ANPE), "mcmc_converged": (pa.bool_(), False), "mcmc_max_rhat": (pa.float32(), np.nan),
    "mcmc_min_ess": (pa.float32(), np.nan), "mcmc_n_iter": (pa.int32(), 0), "mcmc_cpu_s": (pa.float32(), np.nan),
}
#: Agreement of a galaxy-parameter pair (issue 13): |median shift| <= 0.3 MCMC sigma, width ratio 0.8-1.25.
AGREE_SHIFT, AGREE_WIDTH = 0.3, (0.8, 1.25)


@dataclass(frozen=True)
class CatalogMCMC:
    """What a catalog run sends to MCMC.

    Attributes
    ----------
    subset : int
        Galaxies with status ``ok`` benchmarked against MCMC (0: none).
    fallback : bool
        MCMC for the galaxies flagged ``out_of_support`` / ``sampling_timeout``.
    config : MCMCConfig
        Sampler and per-galaxy budget (default: until split-R-hat < 1.01 and
        1,000 effective samples per parameter, at most :data:`DEFAULT_MAX_ITER`
        iterations; benchmark walkers start at amortized-posterior samples,
        fallback walkers at the best prior draws).
    anpe_samples : int
        Amortized samples per benchmark galaxy (timed against the MCMC).
    seed : int
        Seeds the subset draw.
    """

    subset: int = 0
    fallback: bool = False
    config: MCMCConfig = field(default_factory=lambda: MCMCConfig.until_converged(DEFAULT_MAX_ITER))
    anpe_samples: int = 10_000
    seed: int = 0

    def __post_init__(self):
        for name in ("subset", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"MCMC {name} must be a non-negative integer, got {value!r}")
        if isinstance(self.anpe_samples, bool) or not isinstance(self.anpe_samples, int) or self.anpe_samples < 2:
            raise ConfigError(f"anpe_samples must be an integer >= 2, got {self.anpe_samples!r}")

    @property
    def active(self) -> bool:
        return self.subset > 0 or self.fallback

    def identity(self) -> dict:
        """What the MCMC results depend on (besides the catalog run)."""
        return {"subset": self.subset, "fallback": self.fallback, "config": self.config.to_dict(),
                "anpe_samples": self.anpe_samples, "seed": self.seed}


@dataclass
class MCMCOutcome:
    """What the MCMC step of a catalog run did.

    Attributes
    ----------
    subset_rows, fallback_rows : ndarray of int
        Catalog rows (input order) of each kind.
    run, reused : int
        Galaxies computed by this call / kept from an earlier one.
    table : Path or None
        The benchmark table (subset).
    benchmark : pandas.DataFrame or None
        Its rows (galaxy x parameter).
    fallback : dict of int to pyarrow.Table
        Row index -> the MCMC columns of that row.
    wall_s : float
    """

    subset_rows: np.ndarray
    fallback_rows: np.ndarray
    run: int = 0
    reused: int = 0
    table: Path | None = None
    benchmark: pd.DataFrame | None = None
    fallback: dict = field(default_factory=dict)
    wall_s: float = 0.0

    def format(self) -> list[str]:
        """Closing lines of the catalog run."""
        lines = []
        if self.benchmark is not None and len(self.benchmark):
            per_gal = self.benchmark.drop_duplicates("galaxy_id")
            conv = self.benchmark[self.benchmark["converged"]]
            pairs = conv if len(conv) else self.benchmark
            agree = ((pairs["delta_median_sigma"].abs() <= AGREE_SHIFT) & pairs["width_ratio"].between(*AGREE_WIDTH)).mean()
            which = "converged" if len(conv) else "(none converged: all)"
            lines.append(
                f"mcmc subset        {len(per_gal)} galaxies, {int(per_gal['converged'].sum())} converged; ANPE agrees "
                f"(|shift| <= {AGREE_SHIFT} sigma, width {AGREE_WIDTH[0]}-{AGREE_WIDTH[1]}) for {agree:.0%} of the "
                f"{which} galaxy-parameter pairs; CPU per galaxy: MCMC {per_gal['mcmc_cpu_s'].median():.1f} s, "
                f"ANPE {per_gal['anpe_cpu_s'].median():.3f} s (median); table {self.table}"
            )
        if self.fallback_rows.size:
            conv = sum(bool(t.column("mcmc_converged")[0].as_py()) for t in self.fallback.values())
            lines.append(f"mcmc fallback      {self.fallback_rows.size} galaxies: {conv} ok (converged), "
                         f"{self.fallback_rows.size - conv} {STATUS_MCMC_NOT_CONVERGED}")
        if self.benchmark is not None and not self.benchmark["converged"].all():
            lines.append(f"mcmc warning       chains not converged within the budget (max split-R-hat "
                         f"{self.benchmark['max_rhat'].max():.2f}): raise --mcmc-max-iter before trusting the comparison")
        lines.append(f"mcmc work          {self.run} galaxies run, {self.reused} reused, {self.wall_s:.1f} s wall")
        return lines


# ------------------------------------------------------------------------------------- selection
def select_subset(rows: pd.DataFrame, bands, n: int, seed: int) -> np.ndarray:
    """``n`` rows with status ok, stratified by magnitude, colour and z terciles (seeded).

    Parameters
    ----------
    rows : pandas.DataFrame
        ``status``, ``z`` and ``mag_<band>`` of every catalog row (input order).
    bands : sequence of str
    n : int
    seed : int

    Returns
    -------
    ndarray of int
        Sorted row indices; every cell of the 3 x 3 x 3 grid contributes in
        turn, so a small subset still spans the catalog.
    """
    ok = np.flatnonzero(rows["status"].to_numpy() == STATUS_OK)
    if n >= ok.size:
        return ok
    mags = rows[[f"mag_{b}" for b in bands]].to_numpy(dtype=float)[ok]
    # Colour of the two most often measured bands, bluer minus redder (band-set order).
    seen = np.argsort(-np.isfinite(mags).sum(axis=0), kind="stable")[:2]
    blue, red = np.sort(seen)
    with np.errstate(invalid="ignore"):
        variables = (np.nanmedian(mags, axis=1), mags[:, blue] - mags[:, red], rows["z"].to_numpy(dtype=float)[ok])
    cell = np.zeros(ok.size, dtype=np.int64)
    for values in variables:
        finite = np.isfinite(values)
        edges = np.nanquantile(values[finite], [1 / 3, 2 / 3]) if finite.any() else np.zeros(2)
        cell = cell * 4 + np.where(finite, np.searchsorted(edges, values), 3)
    order = np.random.default_rng([seed, 20]).permutation(ok.size)
    turn = pd.Series(cell[order]).groupby(cell[order]).cumcount().to_numpy()
    picked = order[np.argsort(turn, kind="stable")[:n]]
    return np.sort(ok[picked])


def select_fallback(rows: pd.DataFrame) -> np.ndarray:
    """Rows flagged ``out_of_support`` or ``sampling_timeout``, also those outside the support whose flow posterior
    the fit check then found ``poor_fit`` (its status takes precedence), sorted."""
    outside = rows["reason"].fillna("").str.contains("|".join(SUPPORT_LABELS)).to_numpy()
    poor = (rows["status"] == STATUS_POOR_FIT).to_numpy()
    return np.flatnonzero(rows["status"].isin(FALLBACK_STATUSES).to_numpy() | (poor & outside))


def observations(plan, index: np.ndarray) -> tuple[list[GalaxyObservation], np.ndarray]:
    """What the MCMC of catalog rows ``index`` needs: fluxes and uncertainties as the flow saw them, z, x.

    Returns the observations (``galaxy_id``: the row) and the rows' catalog ids;
    only the input partitions holding the rows are read.
    """
    post = plan.posterior
    bands = post.bands
    part = plan.read_rows(index)
    flux = part[list(bands.columns("flux_"))].to_numpy(dtype=float)
    checked = check_catalog_rows(part, post, plan.spec.options, plan.spec.z_range)
    # The uncertainty the flow conditions on (error floor included), in flux units; masked bands NaN.
    sigma = np.where(checked.used, mag_sigma_to_flux_sigma(flux, checked.mag_sigma), np.nan)
    flux = np.where(checked.used, flux, np.nan)
    return [GalaxyObservation(galaxy_id=int(i), flux=tuple(flux[k]), flux_sigma=tuple(sigma[k]),
                              z=float(part["z"].iloc[k]), x=tuple(checked.x[k].astype(float)))
            for k, i in enumerate(index)], part["id"].to_numpy()


# ------------------------------------------------------------------------------------- worker side
def fallback_task(galaxy: GalaxyObservation, flow: str, flow_sha256: str, config: MCMCConfig, n_samples: int,
                  n_derived: int, save_samples: bool) -> pa.Table:
    """MCMC posterior of one galaxy the flow could not serve, as the catalog columns of its row (runs on a worker).

    The flow is not trusted for these galaxies (that is why they are here):
    the walkers start at the best of ``config.n_init`` prior draws, whatever
    ``config.init`` says, and the convergence diagnostics decide.
    ``n_samples`` samples are drawn from the chain thinned by its
    autocorrelation time (with replacement when it holds fewer).

    Returns
    -------
    pyarrow.Table
        One row: ``status``, the sampling, summary and contraction columns of
        :func:`~sedscale.infer.rows.summary_columns` (``n_draws``: model
        evaluations; ``acceptance`` NaN), and :data:`FALLBACK_COLUMNS`.
    """
    post = load_posterior_cached(flow, flow_sha256)
    model = model_for(post)
    logpost = PhotometryLogPosterior(model, galaxy.flux, galaxy.flux_sigma, galaxy.z)
    result = run_mcmc(logpost, config)
    chain = result.independent_samples()
    rng = np.random.default_rng([config.seed, galaxy.galaxy_id])
    pick = rng.choice(chain.shape[0], n_samples, replace=chain.shape[0] < n_samples)
    theta = clip_to_prior(chain[pick][None].astype(np.float32), post.prior.low, post.prior.high)
    z = np.array([galaxy.z])
    quantities = sample_quantities(post, model, theta, z, min(n_derived, n_samples))
    converged = result.converged
    cols = {"status": pa.array([STATUS_OK if converged else STATUS_MCMC_NOT_CONVERGED], pa.string())}
    cols.update(summary_columns(post, model, quantities, z, np.array([0]), 1, [n_samples], [result.n_model_evals],
                                [np.nan], save_samples))
    summary = result.summary()
    values = {"method": METHOD_MCMC, "mcmc_converged": converged, "mcmc_max_rhat": summary["max_rhat"],
              "mcmc_min_ess": summary["min_ess"], "mcmc_n_iter": result.n_iter, "mcmc_cpu_s": result.cpu_s}
    cols.update({k: pa.array([values[k]], FALLBACK_COLUMNS[k][0]) for k in FALLBACK_COLUMNS})
    return pa.table(cols)


# ------------------------------------------------------------------------------------- driver
def mcmc_table_path(out: str | Path) -> Path:
    """The benchmark table of a catalog output: ``post.parquet`` -> ``post.mcmc.parquet``."""
    out = Path(out)
    stem = out.name.split(".")[0]
    return out.with_name(f"{stem}.mcmc.parquet")


def _catalog_rows(plan, manifest: dict) -> pd.DataFrame:
    """Status, reason, z and magnitudes of every row, read from the partition files (input order)."""
    bands = plan.posterior.bands
    columns = ["status", "reason", "z", *bands.columns("mag_")]
    parts = manifest["partitions"]
    return pd.concat([pq.read_table(plan.work_dir / parts[str(i)]["file"], columns=columns).to_pandas()
                      for i in range(plan.n_partitions)], ignore_index=True)


def _benchmark_table(res, row: int, catalog_id) -> pa.Table:
    """A benchmark result as rows (one per parameter) with the galaxy's diagnostics and costs."""
    comp = res.comparison.copy()
    keep = ("z", "converged", "max_rhat", "min_ess", "max_tau", "n_iter", "n_walkers", "mcmc_init", "mcmc_cpu_s",
            "mcmc_wall_s", "n_model_evals", "anpe_cpu_s", "anpe_wall_s", "anpe_samples", "speedup_cpu", "worker")
    comp.insert(0, "row", row)
    comp.insert(0, "galaxy_id", catalog_id)
    for key in keep:
        comp[key] = res.summary[key]
    comp["rhat"] = [res.summary[f"rhat_{p}"] for p in comp["parameter"]]
    comp["tau"] = [res.summary[f"tau_{p}"] for p in comp["parameter"]]
    return pa.Table.from_pandas(comp, preserve_index=False)


def run_catalog_mcmc(plan, manifest: dict, client, request: CatalogMCMC, write_manifest: Callable[[dict], None],
                     log: Callable[[str], None] = print) -> MCMCOutcome:
    """Select, run (or reuse) and collect the MCMC galaxies of a finished set of partitions.

    Parameters
    ----------
    plan : CatalogPlan
    manifest : dict
        The run manifest (its ``mcmc`` entry is created or updated).
    client : distributed.Client or None
        None runs the galaxies here, one after another.
    request : CatalogMCMC
    write_manifest : callable
        Persists ``manifest`` (called after every finished galaxy).
    log : callable

    Returns
    -------
    MCMCOutcome
    """
    import dask

    from ..cluster.execute import run_tasks

    start = time.perf_counter()
    identity = {**request.identity(), "run": plan.config_hash}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    state = manifest.get("mcmc")
    if not state or state.get("key") != key:
        if state:
            log("mcmc: settings changed since the last run; earlier MCMC results are not reused")
            for entry in state.get("galaxies", {}).values():
                (plan.work_dir / entry["file"]).unlink(missing_ok=True)
        state = {"key": key, "identity": identity, "galaxies": {}}
        manifest["mcmc"] = state
        write_manifest(manifest)
    done = state["galaxies"]
    rows = _catalog_rows(plan, manifest)
    outcome = MCMCOutcome(
        subset_rows=select_subset(rows, plan.posterior.bands.bands, request.subset, request.seed)
        if request.subset else np.zeros(0, dtype=np.int64),
        fallback_rows=select_fallback(rows) if request.fallback else np.zeros(0, dtype=np.int64),
    )
    jobs = [("subset", int(r)) for r in outcome.subset_rows] + [("fallback", int(r)) for r in outcome.fallback_rows]
    name = {job: f"mcmc-{job[0]}-{job[1]:09d}.parquet" for job in jobs}
    kept = verified_entries(plan.work_dir, done)
    verified = {job for job in jobs if name[job] in kept}
    todo = [job for job in jobs if job not in verified]
    outcome.reused = len(verified)
    if todo:
        log(f"mcmc: {len(todo)} galaxies to run ({sum(k == 'subset' for k, _ in todo)} benchmark, "
            f"{sum(k == 'fallback' for k, _ in todo)} fallback), {outcome.reused} already done; {request.config}")
    galaxies, row_ids = observations(plan, np.array([r for _, r in todo], dtype=np.int64)) if todo else ([], np.array([]))
    obs, ids = dict(zip(todo, galaxies)), {row: i for (_, row), i in zip(todo, row_ids.tolist())}
    opts = plan.spec.options

    def submit(job):
        kind, row = job
        if kind == "subset":
            return mcmc_task, (obs[job], plan.spec.flow, request.config, request.anpe_samples)
        return fallback_task, (obs[job], plan.spec.flow, plan.spec.flow_sha256, request.config, opts.n_samples,
                               opts.n_derived, opts.save_samples)

    def record(job, result) -> None:
        kind, row = job
        table = _benchmark_table(result, row, ids[row]) if kind == "subset" else result
        done[name[job]] = write_table(plan.work_dir / name[job], table)
        write_manifest(manifest)
        outcome.run += 1
        log(f"mcmc: {kind} galaxy {ids[row]} (row {row}) done, {outcome.run}/{len(todo)}: "
            + (f"converged={result.summary['converged']}, {result.summary['mcmc_cpu_s']:.0f} CPU-s"
               if kind == "subset" else f"status {table.column('status')[0].as_py()}"))

    tasks = [dask.delayed(fn, pure=False)(*args) for fn, args in map(submit, todo)]
    run_tasks(tasks, client, lambda k, result: record(todo[k], result))

    tables = {job: pq.read_table(plan.work_dir / name[job]) for job in jobs}
    if outcome.subset_rows.size:
        outcome.benchmark = pd.concat([tables[("subset", int(r))].to_pandas() for r in outcome.subset_rows],
                                      ignore_index=True)
        outcome.table = mcmc_table_path(plan.outputs[0])
        write_table(outcome.table, pa.Table.from_pandas(outcome.benchmark, preserve_index=False))
    outcome.fallback = {int(r): tables[("fallback", int(r))] for r in outcome.fallback_rows}
    outcome.wall_s = time.perf_counter() - start
    return outcome


def patched_tables(tables: Iterator[pa.Table], fallback: dict) -> Iterator[pa.Table]:
    """Partition tables with the fallback galaxies' rows replaced by their MCMC columns and :data:`FALLBACK_COLUMNS` added.

    Parameters
    ----------
    tables : iterator of pyarrow.Table
        The partitions in input order.
    fallback : dict of int to pyarrow.Table
        Row index (input order) -> one-row table of :func:`fallback_task`.
    """
    offset = 0
    for table in tables:
        n = table.num_rows
        rows = {r - offset: t for r, t in fallback.items() if offset <= r < offset + n}
        for col, (dtype, fill) in FALLBACK_COLUMNS.items():
            if col not in table.column_names:  # ``method`` is in every partition
                table = table.append_column(pa.field(col, dtype), pa.array([fill] * n, dtype))
        if rows:
            for col in table.column_names:
                if not any(col in t.column_names for t in rows.values()):
                    continue
                values = table.column(col).to_pylist()
                for j, t in rows.items():
                    if col in t.column_names:
                        values[j] = t.column(col)[0].as_py()
                index = table.column_names.index(col)
                table = table.set_column(index, table.schema.field(col), pa.array(values, table.schema.field(col).type))
        offset += n
        yield table
