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
* The driver reads the catalog (:func:`sedscale.io.catalog.read_catalog`),
  loads the checkpoint once to validate it, resolves the x-support
  reference (:mod:`sedscale.infer.support`) and hashes everything that
  determines the output (the run identity).
* The catalog becomes a Dask dataframe with ``partition_size`` rows per
  partition; ``map_partitions`` runs :func:`infer_partition` on each one.
  A worker loads the flow and the support reference once per process
  (cached, never shipped with tasks), checks the inputs
  (:mod:`sedscale.infer.quality`), samples every good galaxy of the
  partition in large batches under ``torch.inference_mode()`` with a per-partition
  time limit on redraws, computes physical and derived quantities of the
  samples in batches, summarizes them (:mod:`sedscale.infer.summaries`),
  and writes the partition's rows as one Parquet file atomically.
* The driver records each finished partition (row count, sha256) in
  ``_manifest.json`` of the work directory as soon as it lands.  ``resume``
  keeps verified partitions and redoes the rest; partition contents are a
  function of (seed, partition index) only, so a partition recomputed after
  a killed worker is identical and nothing is lost or duplicated.
* The final catalog is assembled from the partition files in input order,
  checked row by row against the input ids, and written as Parquet and/or
  FITS with units and provenance.

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
``mcmc_not_converged``
    With ``--fallback mcmc`` (:mod:`sedscale.infer.catalog_mcmc`), galaxies
    ``out_of_support`` or ``sampling_timeout`` are sampled by MCMC instead
    (``method = "mcmc"``): status ``ok`` when the chains converged, this
    status when they did not within the per-galaxy budget.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._version import __version__
from ..errors import ConfigError, SedscaleError
from ..io.atomic import atomic_write, atomic_write_bytes, check_writable
from ..io.catalog import (
    META_PREFIX,
    ColumnMapping,
    canonical_columns,
    load_column_mapping,
    output_format,
    read_catalog,
    with_units,
    write_fits,
    write_parquet_stream,
)
from ..io.lock import exclusive_run
from ..models.base import DERIVED_UNITS
from ..observe.filters import SDSS_BANDS
from ..observe.layout import PHOTOMETRY_X_COLUMNS
from ..simulate.manifest import (
    describe_differences,
    file_sha256,
    partition_filename,
    remove_temporary_files,
)
from ..units import nanomaggies_to_mag
from .catalog_mcmc import CatalogMCMC, MCMCOutcome, patched_tables, run_catalog_mcmc
from .posterior import DEFAULT_MAX_PROPOSALS
from .quality import (
    STATUS_OK,
    STATUSES,
    check_photometry,
    reason_labels,
)
from .rows import posterior_rows
from .summaries import PERCENTILES, STAT_NAMES
from .support import XSupport, fit_support_from_simulation, support_path

log = logging.getLogger(__name__)

CATALOG_FORMAT = "sedscale.posterior_catalog"
MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = "sedscale.catalog_run"
MANIFEST_VERSION = 1
#: Bump when the partition layout changes incompatibly (part of the run identity).
SCHEMA_VERSION = 3
DEFAULT_PARTITION_SIZE = 250
DEFAULT_N_SAMPLES = 1000
#: Seconds a partition may spend redrawing samples that left the prior box
#: (a guard: the per-galaxy draw budgets normally end the redraws first).
DEFAULT_MAX_TIME = 60.0
#: Draw budget (flow draws per requested sample) of galaxies already flagged
#: outside the training support: their posterior is flagged anyway, so they
#: are not worth the full budget (docs/catalog.md: measured on the NSA rows).
DEFAULT_MAX_PROPOSALS_OUTSIDE = 5.0

# --------------------------------------------------------------------------- options and plan
@dataclass(frozen=True)
class CatalogOptions:
    """What to compute for every galaxy.

    Parameters
    ----------
    n_samples : int
        Posterior samples per galaxy.
    partition_size : int
        Galaxies per Dask partition (one task, one Parquet file each).
    save_samples : bool
        Store the samples (parameters and derived properties) as
        fixed-size list columns ``samples_<quantity>``.
    seed : int
        Partition ``i`` samples with seeds derived from ``(seed, i)``.
    max_time : float or None
        Seconds a partition may spend redrawing samples rejected for
        leaving the prior box; galaxies still short are flagged
        ``sampling_timeout``.  None: no limit.  A wall-clock guard: the
        draw budgets below normally stop the redraws first.
    max_proposals : float
        Flow draws a galaxy may spend per requested sample (K); a galaxy
        whose draws land in the prior box less often than 1/K stops short,
        flagged, so it costs at most ~K times a normal galaxy.
    max_proposals_outside : float
        The same for galaxies flagged outside the training support (never
        more than ``max_proposals``).
    derived_samples : int or None
        Samples per galaxy (the first ones) for the derived properties;
        None: all.  For the dirichlet model derived properties cost about a
        tenth of sampling per sample (closed-form bin integrals); for models
        without a binned SFH (node weights) about as much as sampling.
        Fewer trade percentile precision for speed.
    check_support : bool
        Score every galaxy against the training x distribution.
    error_floor : float or None
        Band-masked flows: magnitudes added in quadrature to every
        uncertainty (calibration; users often add 0.02-0.05).  None: the
        smallest uncertainty the flow was trained on (its noise model's
        ``sigma_min``), so that no band claims more precision than the flow
        has seen.  SEDflow-layout flows take no floor.
    """

    n_samples: int = DEFAULT_N_SAMPLES
    partition_size: int = DEFAULT_PARTITION_SIZE
    save_samples: bool = False
    seed: int = 0
    max_time: float | None = DEFAULT_MAX_TIME
    max_proposals: float = DEFAULT_MAX_PROPOSALS
    max_proposals_outside: float = DEFAULT_MAX_PROPOSALS_OUTSIDE
    derived_samples: int | None = None
    check_support: bool = True
    error_floor: float | None = None

    def __post_init__(self):
        for name in ("n_samples", "partition_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.max_time is not None and not self.max_time >= 0:
            raise ConfigError(f"max_time must be >= 0 seconds or None, got {self.max_time!r}")
        for name in ("max_proposals", "max_proposals_outside"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (np.isfinite(value) and value >= 1):
                raise ConfigError(f"{name} must be a number >= 1 (flow draws per sample), got {value!r}")
        if self.derived_samples is not None and (
            isinstance(self.derived_samples, bool) or not isinstance(self.derived_samples, int) or self.derived_samples < 1
        ):
            raise ConfigError(f"derived_samples must be a positive integer or None, got {self.derived_samples!r}")
        if self.error_floor is not None and not (np.isfinite(self.error_floor) and 0 <= self.error_floor <= 1):
            raise ConfigError(f"error_floor must be in [0, 1] mag, got {self.error_floor!r}")

    @property
    def n_derived(self) -> int:
        """Samples per galaxy used for derived properties."""
        return min(self.derived_samples or self.n_samples, self.n_samples)


@dataclass(frozen=True)
class PartitionSpec:
    """Everything a worker needs for any partition of a run (small and picklable).

    Attributes
    ----------
    flow : str
        Checkpoint weights path; ``flow_sha256`` its hash (checked on load).
    support : str or None
        x-support file; ``support_sha256`` its hash.
    z_range : (float, float)
        Training redshift range (outside: ``bad_input``).
    options : CatalogOptions
    work_dir : str
        Where partition files go.
    keep : tuple of str
        Extra input columns carried into the output.
    absent_bands : tuple of str
        Bands of the flow the catalog does not have (masked, not named in reasons).
    """

    flow: str
    flow_sha256: str
    support: str | None
    support_sha256: str | None
    z_range: tuple
    options: CatalogOptions
    work_dir: str
    keep: tuple = ()
    absent_bands: tuple = ()


@dataclass
class CatalogPlan:
    """A configured catalog run (see :func:`plan_catalog`).

    Attributes
    ----------
    catalog : pandas.DataFrame
        Canonical input rows (``attrs``: sources, n_rows_read, n_duplicates).
    posterior : Posterior
    support : XSupport or None
    spec : PartitionSpec
    outputs : list of Path
    identity : dict
    config_hash : str
    mcmc : CatalogMCMC or None
        Galaxies sent to MCMC once the partitions are done (a benchmark
        subset, the fallback); not part of ``identity``: adding them to a
        finished run recomputes no partition.
    """

    catalog: pd.DataFrame
    posterior: object
    support: XSupport | None
    spec: PartitionSpec
    outputs: list
    identity: dict
    config_hash: str
    mcmc: CatalogMCMC | None = None

    @property
    def n_partitions(self) -> int:
        return max(1, -(-len(self.catalog) // self.spec.options.partition_size))

    @property
    def work_dir(self) -> Path:
        return Path(self.spec.work_dir)


def default_work_dir(out: str | os.PathLike) -> Path:
    """Partition directory of an output file: ``<out>.parts``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def plan_catalog(
    catalog: str | os.PathLike | Sequence[str | os.PathLike],
    flow: str | os.PathLike,
    outputs: str | os.PathLike | Sequence[str | os.PathLike],
    options: CatalogOptions | None = None,
    *,
    mapping: ColumnMapping | str | os.PathLike | Sequence[str] | None = None,
    keep: Sequence[str] = (),
    support: str | os.PathLike | None = None,
    support_sims: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    mcmc: CatalogMCMC | None = None,
) -> CatalogPlan:
    """Read the catalog, load and check the checkpoint, resolve the x-support, hash the run.

    Parameters
    ----------
    catalog : path or sequence of paths
        NSA FITS files, or FITS/Parquet/CSV tables with ``mapping``.
    flow : path
        Checkpoint directory (or its ``.pt``/``.json``) of a photometric flow.
    outputs : path or sequence of paths
        ``.parquet`` and/or ``.fits`` files to write.
    options : CatalogOptions, optional
    mapping : ColumnMapping, YAML path or ``key=value`` strings, optional
        Column mapping of non-NSA catalogs; strings are parsed for the
        checkpoint's band set (``{band}`` expands to its bands).
    keep : sequence of str
        Extra input columns to carry into the output.
    support : path, optional
        x-support file; default ``x_support.npz`` beside the checkpoint.
    support_sims : path, optional
        Training set to build the x-support from when there is none yet
        (default: the training-set path recorded in the checkpoint).
    work_dir : path, optional
        Partition directory; default ``<first output>.parts``.
    mcmc : CatalogMCMC, optional
        A benchmark subset and/or the fallback sent to MCMC after the partitions.

    Raises
    ------
    SedscaleError
        Unreadable catalog, incompatible checkpoint, no x-support, bad outputs.
    """
    from . import Posterior

    options = options or CatalogOptions()
    outputs = [Path(outputs)] if isinstance(outputs, (str, os.PathLike)) else [Path(o) for o in outputs]
    if not outputs:
        raise ConfigError("give at least one output file (.parquet or .fits)")
    for out in outputs:
        output_format(out)
        check_writable(out)
    check_writable(Path(work_dir) if work_dir else default_work_dir(outputs[0]), "work directory")
    post = Posterior.load(flow)
    if tuple(post.x_columns) != PHOTOMETRY_X_COLUMNS and not post.band_masked:
        raise ConfigError(
            f"{flow} is not a photometric checkpoint (x: {', '.join(post.x_columns[:3])}, ...); "
            "spectral checkpoints take SDSS spectra, not photometric catalogs"
        )
    bands = post.bands.bands
    mapping = load_column_mapping(mapping, bands=bands)
    keep = tuple(dict.fromkeys(tuple(keep) + (mapping.keep if mapping else ())))
    df = read_catalog(catalog, mapping=mapping, keep=keep, bands=bands)
    if len(df) == 0:
        raise ConfigError(f"catalog {catalog} holds no rows")
    df.attrs["flux_warning"] = implausible_flux_scale(df, bands)
    reserved = set(output_columns_fixed(bands)) & {k.lower() for k in keep}
    if reserved:
        raise ConfigError(f"kept column(s) {sorted(reserved)} clash with posterior-catalog columns; rename them")
    options = replace(options, error_floor=resolve_error_floor(post, options.error_floor))
    work = Path(work_dir) if work_dir else default_work_dir(outputs[0])
    xsupport, support_file = (None, None)
    if options.check_support:
        xsupport, support_file = resolve_support(post, flow, support, support_sims, cache_dir=work)
    spec = PartitionSpec(
        flow=str(Path(post.path).resolve()),
        flow_sha256=post.metadata["weights"]["sha256"],
        support=str(support_file.resolve()) if support_file else None,
        support_sha256=file_sha256(support_file) if support_file else None,
        z_range=training_z_range(post.metadata),
        options=options,
        work_dir=str(work.resolve()),
        keep=tuple(k.lower() for k in keep),
        absent_bands=tuple(df.attrs.get("absent_bands", ())),
    )
    identity = {
        "schema_version": SCHEMA_VERSION,
        "catalog_sha256": catalog_digest(df, bands),
        "n_rows": len(df),
        "checkpoint_sha256": spec.flow_sha256,
        "support_sha256": spec.support_sha256,
        "z_range": list(spec.z_range),
        "options": asdict(options),
        "keep": list(spec.keep),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return CatalogPlan(catalog=df, posterior=post, support=xsupport, spec=spec, outputs=outputs, identity=identity,
                       config_hash=digest, mcmc=mcmc if mcmc is not None and mcmc.active else None)


def resolve_error_floor(post, error_floor: float | None) -> float:
    """The error floor (mag) a run uses with checkpoint ``post`` (see :class:`CatalogOptions`).

    Raises
    ------
    ConfigError
        A floor for a SEDflow-layout checkpoint, whose x has no place for it.
    """
    if not post.band_masked:
        if error_floor:
            raise ConfigError(f"{post.path}: this checkpoint (SEDflow x layout) takes no error floor")
        return 0.0
    if error_floor is None:
        return float((post.metadata.get("photometric_noise") or {}).get("sigma_min", 0.0))
    return float(error_floor)


def training_z_range(metadata: dict) -> tuple[float, float]:
    """Redshift range of a checkpoint's training set (from its metadata)."""
    z = (metadata.get("training_set") or {}).get("redshift") or {}
    try:
        return float(z["low"]), float(z["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("the checkpoint does not record its training redshift range (training_set.redshift)") from None


def catalog_digest(df: pd.DataFrame, bands: Sequence[str] = SDSS_BANDS) -> str:
    """sha256 of the canonical input columns of ``bands`` (identifies the catalog content)."""
    cols = list(canonical_columns(bands))
    hashed = pd.util.hash_pandas_object(df[cols], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def resolve_support(post, flow, support=None, support_sims=None, cache_dir: Path | None = None) -> tuple[XSupport, Path]:
    """Load (or build once) the x-support reference of a checkpoint.

    Order: ``support`` if given; ``x_support.npz`` beside the checkpoint;
    else it is fitted to ``support_sims`` or to the training set recorded in
    the checkpoint and saved beside the checkpoint (or in ``cache_dir`` when
    that is read-only).

    Raises
    ------
    ConfigError
        No reference can be found or built, or it belongs to another
        training set than the checkpoint's.
    """
    training_set = post.metadata.get("training_set") or {}
    if support is not None:
        path = Path(support)
        found = XSupport.load(path)
    else:
        path = support_path(flow)
        cached = (cache_dir / path.name) if cache_dir else None
        if not path.is_file() and cached is not None and cached.is_file():
            path = cached
        if path.is_file():
            found = XSupport.load(path)
        else:
            sims = Path(support_sims) if support_sims else Path((post.metadata.get("training_set") or {}).get("path", ""))
            if not (sims / "_manifest.json").is_file():
                raise ConfigError(
                    f"no x-support reference for {flow} ({path} does not exist) and its training set "
                    f"{str(sims) or '(unrecorded)'} is not on this machine: pass --support FILE or --support-sims DIR "
                    "(the training simulation), or --no-support-check to skip out-of-support detection"
                )
            log.info("fitting the x-support reference to %s", sims)
            found = fit_support_from_simulation(sims, post.x_columns, post.metadata.get("photometric_noise"))
            path = _save_support(found, path, cached)
    if tuple(found.columns) != tuple(post.x_columns):
        raise ConfigError(f"{path}: x-support columns {list(found.columns)} are not the checkpoint's x layout")
    # The simulation is a deterministic function of its configuration, so an equal
    # config hash is the same training set even when the manifest digest (older
    # checkpoints hashed run times too) differs.
    for key in ("config_hash", "manifest_sha256"):
        have, expected = found.provenance.get(key), training_set.get(key)
        if have and expected:
            if have != expected:
                raise ConfigError(
                    f"{path} was built from another training set ({key} {have[:12]}) than the checkpoint's "
                    f"({expected[:12]}); delete it or pass --support-sims with the checkpoint's training set"
                )
            break
    return found, path


def _save_support(support: XSupport, path: Path, fallback: Path | None) -> Path:
    try:
        return support.save(path)
    except OSError:
        if fallback is None:
            raise
        fallback.parent.mkdir(parents=True, exist_ok=True)
        return support.save(fallback)


# --------------------------------------------------------------------------- worker side
@lru_cache(maxsize=2)
def load_posterior_cached(path: str, sha256: str, x_columns: tuple | None = None):
    """The checkpoint at ``path`` (weights sha256 ``sha256``, x layout ``x_columns`` if given), loaded once per process."""
    from . import Posterior

    post = Posterior.load(path, x_columns=x_columns)
    if post.metadata["weights"]["sha256"] != sha256:
        raise ConfigError(f"{path} changed since the run was planned (weights sha256 differs)")
    return post


@lru_cache(maxsize=2)
def load_support_cached(path: str, sha256: str) -> XSupport:
    """The x-support file at ``path``, loaded once per process."""
    if file_sha256(path) != sha256:
        raise ConfigError(f"{path} changed since the run was planned (sha256 differs)")
    return XSupport.load(path)


def model_for(post):
    """The checkpoint's forward model from the per-process model cache.

    Shared with the simulator's cache (:func:`sedscale.simulate.load_model`),
    so a process builds the model's SSP library (seconds) only once.
    """
    from ..simulate import load_model

    options = post.metadata["model"].get("options") or {}
    return load_model((post.model_name, tuple(sorted(options.items()))))


def quantity_units(post) -> dict[str, str]:
    """Unit of every summarized quantity: parameters (prior), derived (model), others dimensionless."""
    units = {p.name: p.unit for p in post.prior.parameters}
    units.update({k: v for k, v in DERIVED_UNITS.items() if k not in units})
    units["log_ssfr_100myr"] = "dex(1/yr)"
    return units


#: Median AB magnitudes outside this range suggest fluxes read in the wrong unit (galaxy
#: surveys: ~14-24 mag; the survey flows were trained on 5-27 mag).
PLAUSIBLE_MEDIAN_MAG = (10.0, 26.0)


def implausible_flux_scale(df: pd.DataFrame, bands: Sequence[str]) -> str:
    """A warning when the catalog's median magnitude is far from any galaxy survey's (a wrong flux unit?), else ''."""
    mag = nanomaggies_to_mag(df[[f"flux_{b}" for b in bands]].to_numpy(dtype=float))
    mag = mag[np.isfinite(mag)]
    if not mag.size:
        return ""
    median = float(np.median(mag))
    lo, hi = PLAUSIBLE_MEDIAN_MAG
    if lo <= median <= hi:
        return ""
    return (f"the median magnitude of the catalog is {median:.1f} with fluxes in {df.attrs.get('flux_unit', '?')}, far "
            f"outside {lo:g}-{hi:g} mag: is the flux unit right?")


def infer_frame(part: pd.DataFrame, post, model, support: XSupport | None, options: CatalogOptions, z_range,
                partition: int, keep: Sequence[str] = (), absent: Sequence[str] = ()) -> pa.Table:
    """Posterior-catalog rows of a block of canonical catalog rows (the work of one partition).

    Parameters
    ----------
    part : pandas.DataFrame
        Canonical rows (``id``, ``z``, fluxes, ivars, kept columns).
    post : Posterior
    model : ForwardModel
        The checkpoint's forward model (derived properties).
    support : XSupport or None
    options : CatalogOptions
    z_range : (float, float)
        Training redshift range.
    partition : int
        Partition index (seeds).
    keep : sequence of str
        Kept input columns to copy.
    absent : sequence of str
        Bands the catalog does not have (masked, not named in reasons).

    Returns
    -------
    pyarrow.Table
        The rows in input order (columns: :func:`output_columns_fixed`,
        kept columns, summaries, optional samples).
    """
    started = time.perf_counter()
    bands = post.bands
    checked = check_photometry(
        part[list(bands.columns("flux_"))].to_numpy(), part[list(bands.columns("flux_ivar_"))].to_numpy(),
        part["z"].to_numpy(), z_range, masked=post.band_masked, error_floor=options.error_floor or 0.0,
        bands=bands.bands, absent=tuple(absent),
    )
    rows, _ = posterior_rows(post, model, checked.x, part["z"].to_numpy(), checked.bad, checked.reason, support,
                             options, partition, started)
    cols: dict[str, pa.Array] = {"id": pa.array(part["id"].to_numpy()), "z": pa.array(part["z"].to_numpy(np.float64))}
    for name in keep:
        cols[name] = pa.array(part[name].to_numpy())
    for k, name in enumerate(bands.columns("mag_")):
        cols[name] = pa.array(checked.mag[:, k].astype(np.float32))
    for k, name in enumerate(bands.columns("sigma_")):
        cols[name] = pa.array(checked.mag_sigma[:, k].astype(np.float32))
    cols["bands_used"] = pa.array(checked.bands_used.tolist(), pa.string())
    for name in rows.column_names:
        cols[name] = rows.column(name)
    return pa.table(cols)


def output_columns_fixed(bands: Sequence[str] = SDSS_BANDS) -> tuple[str, ...]:
    """Columns every posterior catalog of a flow over ``bands`` starts with (before kept columns and summaries)."""
    return ("id", "z", *(f"mag_{b}" for b in bands), *(f"sigma_{b}" for b in bands), "bands_used", "status",
            "reason", "support_score", "n_samples", "n_draws", "acceptance")


def infer_partition(part: pd.DataFrame, spec: PartitionSpec) -> pd.DataFrame:
    """Dask task: infer one catalog partition and write ``part-NNNNNN.parquet`` atomically.

    Returns
    -------
    pandas.DataFrame
        One row: ``partition``, ``file``, ``rows``, ``sha256``, ``bytes``,
        ``status_counts`` and ``reason_counts`` (JSON), ``seconds``.
    """
    start = time.perf_counter()
    if len(part) == 0:
        return _summary_frame([])
    indices = part["_partition"].unique()
    if indices.size != 1:
        raise SedscaleError(f"a Dask partition mixes catalog partitions {indices.tolist()}")
    index = int(indices[0])
    post = load_posterior_cached(spec.flow, spec.flow_sha256)
    support = load_support_cached(spec.support, spec.support_sha256) if spec.support else None
    table = infer_frame(part, post, model_for(post), support, spec.options, spec.z_range, index, spec.keep,
                        spec.absent_bands)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    name = partition_filename(index)
    atomic_write_bytes(Path(spec.work_dir) / name, data)
    status = table.column("status").to_numpy(zero_copy_only=False)
    reasons: dict[str, int] = {}
    for r in table.column("reason").to_pylist():
        for label in reason_labels(r):
            reasons[label] = reasons.get(label, 0) + 1
    values, counts = np.unique(status, return_counts=True)
    return _summary_frame([{
        "partition": index,
        "file": name,
        "rows": table.num_rows,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "status_counts": json.dumps(dict(zip(values.tolist(), counts.tolist())), sort_keys=True),
        "reason_counts": json.dumps(reasons, sort_keys=True),
        "seconds": round(time.perf_counter() - start, 3),
    }])


_SUMMARY_DTYPES = {
    "partition": "int64", "file": "object", "rows": "int64", "sha256": "object", "bytes": "int64",
    "status_counts": "object", "reason_counts": "object", "seconds": "float64",
}


def _summary_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(_SUMMARY_DTYPES)).astype(_SUMMARY_DTYPES)


# --------------------------------------------------------------------------- manifest
def read_run_manifest(work_dir: str | os.PathLike) -> dict | None:
    """The manifest of a catalog run's work directory, or None."""
    path = Path(work_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: corrupt manifest ({exc}); move the directory aside") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{path}: not a sedscale catalog-run manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ConfigError(f"{path}: manifest version {manifest.get('version')!r}, this sedscale reads {MANIFEST_VERSION}")
    return manifest


def write_run_manifest(work_dir: str | os.PathLike, manifest: dict) -> None:
    """Write the manifest atomically (partitions sorted by index)."""
    manifest = dict(manifest)
    manifest["partitions"] = {k: manifest["partitions"][k] for k in sorted(manifest["partitions"], key=int)}
    atomic_write_bytes(Path(work_dir) / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())


def check_work_dir(plan: CatalogPlan, resume: bool) -> tuple[dict | None, dict]:
    """Check that ``plan`` may use its work directory (read-only); see :func:`verify_work_dir`."""
    return verify_work_dir(plan.work_dir, plan.config_hash, plan.identity, plan.n_partitions, resume)


def verify_work_dir(work: Path, config_hash: str, identity: dict, n_partitions: int,
                    resume: bool) -> tuple[dict | None, dict]:
    """Check that a run (``config_hash``) may use the work directory ``work`` (read-only).

    Returns
    -------
    manifest : dict or None
        The existing manifest of this run (None for a new run).
    verified : dict
        Its partition entries whose files exist with the recorded sha256.

    Raises
    ------
    ConfigError
        The directory holds another run or foreign files, or an unfinished
        run of this configuration and ``resume`` is False.
    """
    if work.exists() and not work.is_dir():
        raise ConfigError(f"work directory {work} exists and is not a directory")
    manifest = read_run_manifest(work) if work.is_dir() else None
    if manifest is None:
        foreign = [p for p in work.iterdir() if not p.name.endswith(".tmp") and p.name != "x_support.npz"] \
            if work.is_dir() else []
        if foreign:
            raise ConfigError(f"work directory {work} is not empty and holds no {MANIFEST_NAME}; "
                              "choose another --out or --work-dir")
        return None, {}
    if manifest["config_hash"] != config_hash:
        raise ConfigError(
            f"work directory {work} holds a different run (config {manifest['config_hash'][:12]} != "
            f"{config_hash[:12]}: {describe_differences(manifest.get('identity', {}), identity)}); "
            "nothing was overwritten: choose another --out / --work-dir or rerun with the original options"
        )
    good = {
        k: e for k, e in manifest["partitions"].items()
        if (work / e["file"]).is_file() and file_sha256(work / e["file"]) == e["sha256"]
    }
    if len(good) < n_partitions and not resume:
        raise ConfigError(
            f"work directory {work} holds an unfinished run of this configuration "
            f"({len(good)}/{n_partitions} partitions); pass --resume to continue it"
        )
    return manifest, good


def clear_work_dir(work: str | os.PathLike) -> int:
    """Delete a catalog run's manifest and partitions (``--overwrite``); returns the files removed.

    Only a directory holding a catalog-run manifest, partition files,
    temporary files and a cached x-support is touched; the x-support (which
    a plan may already point to) is kept, and the directory is removed when
    nothing else is left.

    Raises
    ------
    ConfigError
        ``work`` holds anything else (nothing is deleted then).
    """
    work = Path(work)
    if not work.exists():
        return 0
    if not work.is_dir():
        raise ConfigError(f"work directory {work} exists and is not a directory; not removed")
    read_run_manifest(work)  # refuses a foreign manifest
    ours = re.compile(r"^(_manifest\.json|_metadata|part-\d{6}\.parquet|mcmc-(subset|fallback)-\d{9}\.parquet|"
                      r"x_support\.npz|\..*\.tmp)$")
    files = list(work.iterdir())
    foreign = [p.name for p in files if not (p.is_file() and ours.match(p.name))]
    if foreign:
        raise ConfigError(f"work directory {work} holds files that are not a catalog run's ({', '.join(foreign[:5])}); "
                          "not removed")
    removed = [p for p in files if p.name != "x_support.npz"]
    for path in removed:
        path.unlink()
    if len(removed) == len(files):
        work.rmdir()
    return len(removed)


def open_work_dir(work: Path, config_hash: str, identity: dict, n_partitions: int, resume: bool) -> dict:
    """Create or reopen a run's work directory; the manifest, holding only verified partitions.

    Raises
    ------
    ConfigError
        As :func:`verify_work_dir`.
    """
    manifest, good = verify_work_dir(work, config_hash, identity, n_partitions, resume)
    if manifest is None:
        work.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "config_hash": config_hash,
            "identity": identity,
            "n_partitions": n_partitions,
            "partitions": {},
        }
    manifest["partitions"] = good
    write_run_manifest(work, manifest)
    remove_temporary_files(work)
    return manifest


# --------------------------------------------------------------------------- driver
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
        Progress messages of the MCMC step.

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
        n_rows_read=int(plan.catalog.attrs.get("n_rows_read", len(plan.catalog))),
        n_duplicates=int(plan.catalog.attrs.get("n_duplicates", 0)),
        n_galaxies=len(plan.catalog), n_partitions=plan.n_partitions, partitions_skipped=len(done),
    )
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(_partition_rows(plan, i) for i in todo), unit="gal", desc="posteriors")

    def record(row: dict) -> None:
        entry = {k: row[k] for k in ("file", "rows", "sha256", "bytes", "seconds")}
        entry["status_counts"] = json.loads(row["status_counts"])
        entry["reason_counts"] = json.loads(row["reason_counts"])
        done[str(int(row["partition"]))] = entry
        write_run_manifest(work, manifest)
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
    return min(size, len(plan.catalog) - index * size)


def _execute(plan: CatalogPlan, todo: list[int], client, record: Callable[[dict], None]) -> None:
    """Map :func:`infer_partition` over the Dask dataframe partitions ``todo``."""
    if not todo:
        return
    import dask.dataframe as dd

    size = plan.spec.options.partition_size
    frame = plan.catalog.copy()
    frame["_partition"] = np.arange(len(frame)) // size
    ddf = dd.from_pandas(frame, chunksize=size, sort=False)
    if ddf.npartitions != plan.n_partitions:
        raise SedscaleError(f"Dask split the catalog into {ddf.npartitions} partitions, expected {plan.n_partitions}")
    results = ddf.partitions[todo].map_partitions(infer_partition, plan.spec, meta=_summary_frame([]))
    parts = results.to_delayed()
    if client is None:
        for part in parts:
            for row in part.compute(scheduler="synchronous").to_dict("records"):
                record(row)
        return
    from distributed import as_completed

    futures = client.compute(parts)
    try:
        for future in as_completed(futures):
            for row in future.result().to_dict("records"):
                record(row)
    finally:
        # On error or interrupt, stop queued partitions; finished ones are in the manifest.
        client.cancel(futures)


def assembled_parts(plan: CatalogPlan, manifest: dict) -> Iterator[pa.Table]:
    """The partition tables in order, each checked against its slice of the input ids.

    One partition is in memory at a time, so catalogs of any size (and with
    samples) are assembled in bounded memory.

    Raises
    ------
    SedscaleError
        A partition is missing, or rows are lost, duplicated or out of order.
    """
    parts = manifest["partitions"]
    missing = [i for i in range(plan.n_partitions) if str(i) not in parts]
    if missing:
        raise SedscaleError(f"partitions {missing[:10]} are not finished; rerun with --resume")
    expected = plan.catalog["id"].to_numpy()
    offset = 0
    for i in range(plan.n_partitions):
        table = pq.read_table(plan.work_dir / parts[str(i)]["file"]).replace_schema_metadata(None)
        ids = table.column("id").to_numpy(zero_copy_only=False)
        if not np.array_equal(ids, expected[offset : offset + len(ids)]):
            raise SedscaleError(
                f"partition {i} ({parts[str(i)]['file']}) does not hold input rows {offset}..{offset + len(ids) - 1} "
                f"in order; delete {plan.work_dir} and rerun"
            )
        offset += len(ids)
        yield table
    if offset != expected.size:
        raise SedscaleError(f"the partitions hold {offset} rows, the catalog {expected.size}; delete {plan.work_dir} and rerun")


def write_outputs(plan: CatalogPlan, manifest: dict, fallback: dict | None = None) -> None:
    """Assemble the partitions into every output file (Parquet streamed, FITS in memory), with units and provenance.

    ``fallback`` (row -> MCMC columns, :func:`~sedscale.infer.catalog_mcmc.run_catalog_mcmc`)
    replaces those rows and adds the ``method`` and ``mcmc_*`` columns.
    """
    first = pq.read_schema(plan.work_dir / manifest["partitions"]["0"]["file"]).empty_table().replace_schema_metadata(None)
    if fallback is not None:
        first = next(patched_tables(iter([first]), {}))
    schema = with_units(first, column_units(plan, first.column_names), catalog_metadata(plan)).schema

    def parts() -> Iterator[pa.Table]:
        tables = assembled_parts(plan, manifest)
        return patched_tables(tables, fallback) if fallback is not None else tables

    for out in plan.outputs:
        if output_format(out) == "parquet":
            write_parquet_stream((t.cast(schema) for t in parts()), out, schema)
        else:
            write_fits(pa.concat_tables(parts()).cast(schema), out, fits_header(plan))


def write_dataset_metadata(work: Path, files: Sequence[str]) -> Path:
    """``_metadata`` of the partition files: the work directory opens as one table, in input order.

    ``pandas.read_parquet(work)``, ``pyarrow.dataset.dataset(work)`` and
    ``dask.dataframe.read_parquet(work)`` then read the partitions of a
    survey-size run without assembling a single file (files starting with
    ``_``, such as the run manifest, are not data).
    """
    collected = []
    schema = None
    for name in files:
        parquet = pq.ParquetFile(work / name)
        schema = schema or parquet.schema_arrow
        meta = parquet.metadata
        meta.set_file_path(name)
        collected.append(meta)
    path = work / "_metadata"
    atomic_write(path, lambda tmp: pq.write_metadata(schema, tmp, metadata_collector=collected))
    return path


def column_units(plan: CatalogPlan, columns: Sequence[str]) -> dict[str, str]:
    """Unit of every output column (``""`` where dimensionless or unknown)."""
    bands = plan.posterior.bands
    base = {**{c: "mag(AB)" for c in bands.columns("mag_")}, **{c: "mag" for c in bands.columns("sigma_")}}
    return output_units(plan.posterior, columns, base)


def output_units(post, columns: Sequence[str], base: dict[str, str]) -> dict[str, str]:
    """Units of output columns: ``base`` ones as given; summaries and samples carry their quantity's unit."""
    qunits = quantity_units(post)
    units = {}
    for col in columns:
        if col in base:
            units[col] = base[col]
            continue
        stem = col.removeprefix("samples_")
        for stat in STAT_NAMES:
            if stem.endswith("_" + stat):
                stem = stem[: -len(stat) - 1]
                break
        units[col] = qunits.get(stem, "")
    return units


def catalog_metadata(plan: CatalogPlan) -> dict[str, str]:
    """Provenance stored with the catalog (Parquet ``sedscale.*`` keys)."""
    meta = plan.posterior.metadata
    training_set = meta.get("training_set") or {}
    entries = {
        "format": CATALOG_FORMAT,
        "version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(plan.posterior.path),
        "checkpoint_sha256": plan.spec.flow_sha256,
        "training_set_sha256": training_set.get("manifest_sha256") or "",
        "training_set_config_hash": training_set.get("config_hash") or "",
        "model": meta["model"]["name"],
        "flow": json.dumps(meta["flow"], sort_keys=True),
        "prior": json.dumps(meta["prior"], sort_keys=True),
        "param_names": json.dumps(list(plan.posterior.param_names)),
        "x_columns": json.dumps(list(plan.posterior.x_columns)),
        "z_range": json.dumps(list(plan.spec.z_range)),
        "options": json.dumps(asdict(plan.spec.options), sort_keys=True),
        "percentiles": json.dumps(list(PERCENTILES)),
        "stats": json.dumps(list(STAT_NAMES)),
        "statuses": json.dumps(list(STATUSES)),
        "support": json.dumps(plan.support.describe() if plan.support else None, sort_keys=True),
        "catalog_sources": json.dumps(list(plan.catalog.attrs.get("sources", []))),
        "flux_unit": str(plan.catalog.attrs.get("flux_unit", "")),
        "catalog_sha256": plan.identity["catalog_sha256"],
        "config_hash": plan.config_hash,
        "mcmc": json.dumps(plan.mcmc.identity() if plan.mcmc else None, sort_keys=True),
    }
    return {META_PREFIX + k: v for k, v in entries.items()}


def fits_header(plan: CatalogPlan) -> dict[str, object]:
    """FITS keywords carrying the same provenance as the Parquet metadata."""
    meta = plan.posterior.metadata
    training_set = meta.get("training_set") or {}
    opts = plan.spec.options
    return {
        "ORIGIN": "sedscale",
        "SEDSCVER": (__version__, "sedscale version"),
        "CATFMT": (CATALOG_FORMAT, "file format"),
        "MODEL": (meta["model"]["name"], "forward model"),
        "FLOWKIND": (meta["flow"]["kind"], "flow architecture"),
        "CKPTPATH": (str(plan.posterior.path), "checkpoint"),
        "CKPTHASH": (plan.spec.flow_sha256, "sha256 of the checkpoint weights"),
        "TRAINHSH": (training_set.get("manifest_sha256") or "", "sha256 of the training-set manifest"),
        "CATHASH": (plan.identity["catalog_sha256"], "sha256 of the input photometry"),
        "FLUXUNIT": (str(plan.catalog.attrs.get("flux_unit", ""))[:60], "unit the input fluxes were read in"),
        "RUNHASH": (plan.config_hash, "catalog run identity"),
        "NSAMPLE": (opts.n_samples, "posterior samples per galaxy"),
        "NDERIVED": (opts.n_derived, "samples per galaxy for derived properties"),
        "SEED": (opts.seed, "sampling seed"),
        "ERRFLOOR": (opts.error_floor or 0.0, "[mag] error floor added in quadrature"),
        "ZMIN": (plan.spec.z_range[0], "training redshift range, low"),
        "ZMAX": (plan.spec.z_range[1], "training redshift range, high"),
        "SUPPTHR": (plan.support.threshold if plan.support else -1.0, "x-support k-NN distance threshold"),
        "SUPPK": (plan.support.k if plan.support else 0, "x-support k"),
        "STATS": (",".join(STAT_NAMES), "column suffixes: percentiles, mean"),
        "PARAMS": json.dumps(list(plan.posterior.param_names)),
        "PRIOR": json.dumps(meta["prior"], sort_keys=True),
    }
