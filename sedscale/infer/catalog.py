"""Posterior catalogs at survey scale: a Dask dataframe of catalog partitions through the flow.

Example::

    from sedscale.cluster import load_cluster_config, open_client
    from sedscale.infer.catalog import CatalogOptions, plan_catalog, run_catalog

    plan = plan_catalog(["nsa.fits"], "checkpoints/dirichlet_nsa", ["posteriors.parquet"],
                        CatalogOptions(n_samples=1000))
    with open_client(load_cluster_config("local")) as client:
        summary = run_catalog(plan, client, progress=True)
    print(summary.format())

How it works
------------
* The driver opens the catalog (:func:`sedscale.io.source.open_catalog`:
  schemas, row counts, the id column when repeated ids must be dropped,
  the first rows as a check; never every row's photometry), loads the
  checkpoint once to validate it, resolves the x-support reference
  (:mod:`sedscale.infer.support`) and hashes everything that determines
  the output (the run identity).
* The catalog is cut into ``partition_size``-row partitions that the
  workers read themselves (:class:`~sedscale.io.source.CatalogPartition`:
  FITS rows, Parquet row groups, seeks into CSV/text files; each reader
  first checks that its file is still the one planned on), and
  :func:`infer_input_partition` runs on each one, a few per worker thread
  at a time (:data:`TASKS_PER_THREAD`): the driver, and the scheduler of a
  local cluster in it, hold a few tasks, not every partition, so its
  memory does not grow with the catalog (beyond the ids).  A worker loads the flow and the support reference once per process
  (cached, never shipped with tasks), checks the inputs
  (:mod:`sedscale.infer.quality`), samples every good galaxy of the
  partition in large batches under ``torch.inference_mode()`` with a per-partition
  time limit on redraws, computes physical and derived quantities of the
  samples in batches, summarizes them (:mod:`sedscale.infer.summaries`),
  and writes the partition's rows as one Parquet file atomically.
* The driver records each finished partition (row count, sha256) in
  ``_manifest.json`` of the work directory as soon as it lands (the file
  is rewritten at most every few seconds when it is large:
  :class:`sedscale.io.runs.ManifestWriter`).  ``resume``
  keeps verified partitions and redoes the rest; partition contents are a
  function of (seed, partition index) only, so a partition recomputed after
  a killed worker is identical and nothing is lost or duplicated.
* The final catalog is assembled from the partition files in input order,
  checked row by row against the input ids, and written as Parquet and/or
  FITS with units and provenance.

The run is split along its concepts: :mod:`~sedscale.infer.catalog_plan`
(options, plan, run identity), :mod:`~sedscale.infer.catalog_worker` (the
Dask task), :mod:`~sedscale.infer.catalog_workdir` (manifest, resume),
:mod:`~sedscale.infer.catalog_output` (assembly, units, provenance),
:mod:`~sedscale.infer.catalog_mcmc` (MCMC galaxies) and this driver, which
also re-exports their public names.

Statuses (``status`` column, one per galaxy; ``reason`` lists every check
that failed, ``;``-separated):

``ok``
    Posterior computed, x inside the training support.
``bad_input``
    Unusable photometry or redshift (:mod:`sedscale.infer.quality`); no posterior.
``sampling_timeout``
    The flow puts so much mass outside the prior box that the galaxy spent
    its budget of flow draws (``max_proposals`` per sample) before all
    samples were accepted (reason
    ``low_acceptance:<accepted>/<wanted>_samples_from_<draws>_draws``), none
    of its first 100 draws landed inside it (``no_samples_in_prior``: x far
    outside the training set), or the partition's time limit ran out
    (``sampling_timeout:<accepted>/<wanted>_samples``); summaries use the
    ``n_samples`` samples accepted (NaN if none).
``out_of_support``
    x lies outside the training support (``support_score`` > 1 or an
    entry outside the training range); the posterior is computed but
    should not be trusted.
``low_is_efficiency``
    With ``importance_proposals`` (``--importance-sampling``,
    :mod:`sedscale.infer.importance`), the importance weights against the
    exact likelihood kept fewer than ``MIN_EFFICIENCY`` of the proposals or
    fewer than ``MIN_ESS`` (100) effective samples.
``mcmc_not_converged``
    With ``--fallback mcmc`` (:mod:`sedscale.infer.catalog_mcmc`), galaxies
    ``out_of_support`` or ``sampling_timeout`` are sampled by MCMC instead
    (``method = "mcmc"``): status ``ok`` when the chains converged, this
    status when they did not within the per-galaxy budget.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.lock import exclusive_run
from ..io.runs import ManifestWriter, remove_temporary_files
from ..io.source import CatalogPartition, ReadSpec, read_partition
from .catalog_mcmc import CatalogMCMC, MCMCOutcome, run_catalog_mcmc
from .catalog_output import (
    CATALOG_FORMAT,
    assembled_parts,
    catalog_metadata,
    column_units,
    fits_header,
    output_units,
    quantity_units,
    write_dataset_metadata,
    write_outputs,
)
from .catalog_plan import (
    DEFAULT_MAX_PROPOSALS_OUTSIDE,
    DEFAULT_MAX_TIME,
    DEFAULT_N_SAMPLES,
    DEFAULT_PARTITION_SIZE,
    SCHEMA_VERSION,
    CatalogOptions,
    CatalogPlan,
    PartitionSpec,
    default_work_dir,
    implausible_flux_scale,
    output_columns_fixed,
    plan_catalog,
    resolve_error_floor,
    resolve_min_snr,
    resolve_support,
    training_z_range,
)
from .catalog_workdir import (
    MANIFEST_NAME,
    check_work_dir,
    clear_work_dir,
    open_work_dir,
    read_run_manifest,
    verify_work_dir,
    write_run_manifest,
)
from .catalog_worker import (
    infer_frame,
    infer_partition,
    load_posterior_cached,
    load_support_cached,
    model_for,
)
from .quality import STATUS_OK

__all__ = [
    "CATALOG_FORMAT",
    "DEFAULT_MAX_PROPOSALS_OUTSIDE",
    "DEFAULT_MAX_TIME",
    "DEFAULT_N_SAMPLES",
    "DEFAULT_PARTITION_SIZE",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "CatalogMCMC",
    "CatalogOptions",
    "CatalogPlan",
    "CatalogSummary",
    "PartitionSpec",
    "assembled_parts",
    "catalog_metadata",
    "check_work_dir",
    "clear_work_dir",
    "column_units",
    "default_work_dir",
    "fits_header",
    "implausible_flux_scale",
    "infer_frame",
    "infer_partition",
    "load_posterior_cached",
    "load_support_cached",
    "model_for",
    "open_work_dir",
    "output_columns_fixed",
    "output_units",
    "plan_catalog",
    "quantity_units",
    "read_run_manifest",
    "resolve_error_floor",
    "resolve_min_snr",
    "resolve_support",
    "run_catalog",
    "training_z_range",
    "verify_work_dir",
    "write_dataset_metadata",
    "write_outputs",
    "write_run_manifest",
]


@dataclass
class CatalogSummary:
    """Outcome of :func:`run_catalog`.

    Attributes
    ----------
    outputs : list of Path
    work_dir : Path
    config_hash : str
    n_rows_read, n_duplicates, n_galaxies : int
        Input rows, rows dropped as repeated ids, galaxies in the catalog.
    n_partitions, partitions_run, partitions_skipped : int
    galaxies_run : int
        Galaxies inferred by this call.
    status_counts, reason_counts : dict of str to int
        Over the whole catalog.
    inference_s, wall_s : float
        Seconds spent on partitions by this call / in total (incl. assembly).
    """

    outputs: list
    work_dir: Path
    config_hash: str
    n_rows_read: int
    n_duplicates: int
    n_galaxies: int
    n_partitions: int
    partitions_run: int = 0
    partitions_skipped: int = 0
    galaxies_run: int = 0
    status_counts: dict = field(default_factory=dict)
    reason_counts: dict = field(default_factory=dict)
    inference_s: float = 0.0
    wall_s: float = 0.0
    mcmc: MCMCOutcome | None = None

    @property
    def galaxies_per_s(self) -> float:
        """Galaxies inferred per second of partition wall time (this call)."""
        return self.galaxies_run / self.inference_s if self.inference_s > 0 else 0.0

    def format(self) -> str:
        """Multi-line human-readable summary."""
        flagged = {k: v for k, v in self.status_counts.items() if k != STATUS_OK}
        lines = [
            f"galaxies in        {self.n_galaxies} ({self.n_rows_read} rows read, {self.n_duplicates} repeated ids dropped)",
            f"with posteriors    {self.status_counts.get(STATUS_OK, 0)} ok",
            "flagged            " + (", ".join(f"{k}: {v}" for k, v in sorted(flagged.items())) or "none"),
            "reasons            " + (", ".join(f"{k}: {v}" for k, v in sorted(self.reason_counts.items())) or "none"),
            (
                f"partitions         {self.partitions_run} run, {self.partitions_skipped} already done, "
                f"{self.n_partitions} in total ({self.work_dir})"
            ),
            (
                f"reused             the finished run in {self.work_dir}: nothing recomputed "
                "(--overwrite recomputes it)"
                if self.partitions_run == 0 and self.partitions_skipped == self.n_partitions else
                f"throughput         {self.galaxies_per_s:,.1f} galaxies/s ({self.galaxies_run} galaxies in "
                f"{self.inference_s:.1f} s); wall {self.wall_s:.1f} s"
            ),
            "written            " + ", ".join(str(o) for o in self.outputs),
        ]
        if self.mcmc is not None:
            lines[-1:-1] = self.mcmc.format()
        return "\n".join(lines)


def run_catalog(
    plan: CatalogPlan,
    client=None,
    *,
    resume: bool = False,
    progress: bool = False,
    on_partition: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> CatalogSummary:
    """Infer every partition still to do, run the MCMC galaxies of ``plan.mcmc``, then assemble and write the catalog.

    Parameters
    ----------
    plan : CatalogPlan
    client : distributed.Client, optional
        Run on this cluster; None runs the partitions one after another here.
    resume : bool
        Continue an unfinished run in the work directory (verified
        partitions are kept).  A finished run is never recomputed.
    progress : bool
        tqdm progress bar over galaxies.
    on_partition : callable, optional
        Called with each finished partition's manifest entry.
    log : callable
        Progress messages (the start of the partitions, the MCMC step).

    Returns
    -------
    CatalogSummary

    Raises
    ------
    SedscaleError
        The work directory holds another or an unfinished run (without
        ``resume``), another process is running in it, or a partition failed.
    """
    with exclusive_run(plan.work_dir, "work directory"):
        return _run_catalog(plan, client, resume, progress, on_partition, log)


def _run_catalog(plan: CatalogPlan, client, resume: bool, progress: bool,
                 on_partition: Callable[[dict], None] | None, log: Callable[[str], None]) -> CatalogSummary:
    start = time.perf_counter()
    work = plan.work_dir
    manifest = open_work_dir(work, plan.config_hash, plan.identity, plan.n_partitions, resume)
    done = manifest["partitions"]
    todo = [i for i in range(plan.n_partitions) if str(i) not in done]
    summary = CatalogSummary(
        outputs=list(plan.outputs), work_dir=work, config_hash=plan.config_hash,
        n_rows_read=plan.source.n_rows_read, n_duplicates=plan.source.n_duplicates,
        n_galaxies=plan.n_galaxies, n_partitions=plan.n_partitions, partitions_skipped=len(done),
    )
    save_manifest = ManifestWriter(work, manifest)
    if todo:
        # Otherwise the bar sits at 0% for the tens of seconds a fresh worker spends loading.
        log(f"{len(todo)} partitions to infer; each worker first loads the flow and builds the forward model's "
            "SSP library (~10-40 s)")
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(_partition_rows(plan, i) for i in todo), unit="gal", desc="posteriors")

    def record(row: dict) -> None:
        entry = {k: row[k] for k in ("file", "rows", "sha256", "bytes", "seconds")}
        entry["status_counts"] = json.loads(row["status_counts"])
        entry["reason_counts"] = json.loads(row["reason_counts"])
        done[str(int(row["partition"]))] = entry
        save_manifest()
        summary.partitions_run += 1
        summary.galaxies_run += int(row["rows"])
        if bar is not None:
            bar.update(int(row["rows"]))
        if on_partition is not None:
            on_partition(entry)

    t0 = time.perf_counter()
    try:
        _execute(plan, todo, client, record)
    finally:
        save_manifest.flush()
        if bar is not None:
            bar.close()
    # Debris of workers killed mid-write during this run (every partition is recorded now).
    remove_temporary_files(plan.work_dir)
    summary.inference_s = time.perf_counter() - t0
    for entry in done.values():
        for key, target in (("status_counts", summary.status_counts), ("reason_counts", summary.reason_counts)):
            for k, v in entry[key].items():
                target[k] = target.get(k, 0) + v
    fallback = None
    if plan.mcmc is not None:
        summary.mcmc = run_catalog_mcmc(plan, manifest, client, plan.mcmc, lambda m: write_run_manifest(work, m), log)
        fallback = summary.mcmc.fallback if plan.mcmc.fallback else None
    write_outputs(plan, manifest, fallback)
    write_dataset_metadata(plan.work_dir, [manifest["partitions"][str(i)]["file"] for i in range(plan.n_partitions)])
    summary.wall_s = time.perf_counter() - start
    return summary


def _partition_rows(plan: CatalogPlan, index: int) -> int:
    size = plan.spec.options.partition_size
    return min(size, plan.n_galaxies - index * size)


#: Catalog partitions on the cluster at a time, per worker thread (see :func:`~sedscale.cluster.execute.run_tasks`).
TASKS_PER_THREAD = 4


def _execute(plan: CatalogPlan, todo: list[int], client, record: Callable[[dict], None]) -> None:
    """Run :func:`infer_input_partition` on the partitions ``todo`` (read by the workers), a few at a time."""
    if not todo:
        return
    from dask import delayed

    from ..cluster.execute import run_tasks

    task = delayed(infer_input_partition, pure=True)
    tasks = (task(plan.partition(i), plan.source.spec, plan.spec,
                  dask_key_name=f"catalog-partition-{i}-{plan.config_hash[:12]}") for i in todo)

    def record_part(_, frame) -> None:
        for row in frame.to_dict("records"):
            record(row)

    run_tasks(tasks, client, record_part, window=TASKS_PER_THREAD)


def infer_input_partition(part: CatalogPartition, read_spec: ReadSpec, spec) -> pd.DataFrame:
    """Dask task: read one input partition (:func:`read_partition`) and infer it (:func:`infer_partition`)."""
    return infer_partition(read_partition(part, read_spec).assign(_partition=np.int64(part.index)), spec)
