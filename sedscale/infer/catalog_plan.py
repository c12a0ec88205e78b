"""What a catalog run computes and on what: options, the partition spec, the plan.

:func:`plan_catalog` opens the catalog (schemas, row counts and, to drop
repeated ids, the id column: never the photometry of every row), loads and
checks the checkpoint, resolves the x-support and hashes everything the
partitions depend on (the run identity), before any cluster starts.  The
pipeline is described in :mod:`sedscale.infer.catalog`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import ConfigError, SedscaleError
from ..io.atomic import check_writable
from ..io.catalog import ColumnMapping, check_fits_strings, load_column_mapping, output_format
from ..io.runs import file_sha256
from ..io.source import CatalogPartition, CatalogSource, open_catalog
from ..observe.filters import SDSS_BANDS
from ..observe.layout import PHOTOMETRY_X_COLUMNS
from ..units import POGSON, nanomaggies_to_mag
from .importance import DEFAULT_PROPOSALS, check_importance_flow
from .posterior import DEFAULT_MAX_PROPOSALS
from .support import XSupport, fit_support_from_simulation, support_path, training_set_mismatch
from .zprior import DEFAULT_Z_PRIOR, check_z_prior

if TYPE_CHECKING:
    from .catalog_mcmc import CatalogMCMC
    from .posterior import Posterior

log = logging.getLogger(__name__)

#: Bump when the partition layout changes incompatibly (part of the run identity).
SCHEMA_VERSION = 4
DEFAULT_PARTITION_SIZE = 250
#: Rows read at planning time to check the flux scale (and that the files read at all).
SAMPLE_ROWS = 10_000
DEFAULT_N_SAMPLES = 1000
#: Seconds a partition may spend redrawing samples that left the prior box
#: (a guard: the per-galaxy draw budgets normally end the redraws first).
DEFAULT_MAX_TIME = 60.0
#: Error floor (mag) of band-masked flows when none is given: the SPS model (no nebular emission) and the
#: surveys' calibration do not reproduce real photometry better than this.  Chosen by measurement on the real
#: catalogs (docs/catalog.md, "The error floor"): with the default flow and the fit check, 0.002 / 0.02 /
#: 0.05 mag leave 10.3 / 7.1 / 3.2% of the NSA Virgo rows, 9.1 / 6.1 / 2.5% of the NSA cluster rows and
#: 34 / 1.7 / 0.1% of the SDSS MGS rows unfit (poor_fit), and put Virgo masses +0.055 / +0.045 / +0.001
#: dex from iSEDfit's (NMAD 0.060 / 0.054 / 0.044).
DEFAULT_ERROR_FLOOR = 0.05
#: Draw budget (flow draws per requested sample) of galaxies already flagged
#: outside the training support: their posterior is flagged anyway, so they
#: are not worth the full budget (docs/catalog.md: measured on the NSA rows).
DEFAULT_MAX_PROPOSALS_OUTSIDE = 5.0


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
        uncertainty, for what the model and the calibration cannot
        reproduce.  None: :data:`DEFAULT_ERROR_FLOOR` (0.05 mag), or the
        smallest uncertainty the flow was trained on (its noise model's
        ``sigma_min``) if larger, so that no band claims more precision than
        the flow has seen.  SEDflow-layout flows take no floor.
    min_snr : float or None
        Band-masked flows: a band measured at a lower S/N (``flux
        sqrt(ivar)``) is masked and named in ``reason`` (``low_snr``).  None:
        the lowest S/N the flow was trained on, ``1.0857 / sigma_max`` of
        its noise model (1.09 for the 1 mag of the survey presets): a
        non-detection's magnitude error (tens of magnitudes) lies outside
        every training row, and the flow cannot use it as an upper limit.
        0 keeps every positive flux.  SEDflow-layout flows mask nothing.
    z_prior : str or None
        Photometric-redshift flows: the redshift prior the samples are
        re-weighted to (:data:`~sedscale.infer.zprior.Z_PRIORS`; None:
        :data:`~sedscale.infer.zprior.DEFAULT_Z_PRIOR`).  Other flows take none.
    importance_proposals : int
        0: the flow's samples.  N >= 10: each usable galaxy's posterior is
        importance-sampled with N proposals, the flow as proposal and the
        exact likelihood of its photometry as target
        (:mod:`sedscale.infer.importance`); columns ``is_ess``,
        ``is_efficiency``, ``log_evidence``, ``log_evidence_err``, and status
        ``low_is_efficiency`` below :data:`~sedscale.infer.importance.MIN_EFFICIENCY` or
        :data:`~sedscale.infer.importance.MIN_ESS` effective samples.
        A galaxy outside the training support whose importance weights pass
        the threshold is served (status ``ok``, ``method = "is"``): the
        weights, not the flow, make its posterior.
    importance_fallback : bool
        Importance-sample only the galaxies outside the training support
        (``--fallback is``), with ``importance_proposals`` proposals
        (default :data:`~sedscale.infer.importance.DEFAULT_PROPOSALS`); the
        others keep the flow's samples.
    fit_check : bool
        Goodness of fit per galaxy (:mod:`sedscale.infer.fit_check`; on by
        default): columns ``model_mag_<band>``, ``chi2_best``,
        ``n_bands_fit``, ``ppc_p``, and status ``poor_fit`` where the
        posterior does not reproduce the galaxy's photometry.  A flow can be
        confidently wrong where every input check passes (10^12 Msun for a
        dwarf whose photometry it cannot fit); this is what catches it.
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
    min_snr: float | None = None
    z_prior: str | None = None
    importance_proposals: int = 0
    importance_fallback: bool = False
    fit_check: bool = True

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
        if self.min_snr is not None and not (np.isfinite(self.min_snr) and self.min_snr >= 0):
            raise ConfigError(f"min_snr must be a finite S/N >= 0, got {self.min_snr!r}")
        if self.z_prior is not None:
            check_z_prior(self.z_prior)
        value = self.importance_proposals
        if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or value >= 10):
            raise ConfigError(f"importance_proposals must be 0 (off) or an integer >= 10, got {value!r}")

    @property
    def n_proposals(self) -> int:
        """Importance-sampling proposals per galaxy of the galaxies it applies to (0: none)."""
        return self.importance_proposals or (DEFAULT_PROPOSALS if self.importance_fallback else 0)

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
    ascii_strings : bool
        A FITS output: the id and kept string columns of every partition must
        be ASCII (checked before its inference).
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
    ascii_strings: bool = False


@dataclass
class CatalogPlan:
    """A configured catalog run (see :func:`plan_catalog`).

    Attributes
    ----------
    source : CatalogSource
        The input catalog, opened for partitioned reading (its rows are read
        by the workers, a partition each).
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
    flux_warning : str
        Non-empty when the fluxes of the first rows look like another unit.
    """

    source: CatalogSource
    posterior: Posterior
    support: XSupport | None
    spec: PartitionSpec
    outputs: list
    identity: dict
    config_hash: str
    mcmc: CatalogMCMC | None = None
    flux_warning: str = ""

    @property
    def n_galaxies(self) -> int:
        return self.source.n_rows

    @property
    def n_partitions(self) -> int:
        return max(1, -(-self.n_galaxies // self.spec.options.partition_size))

    def partition(self, index: int) -> CatalogPartition:
        """Input partition ``index`` (row ranges of the files; read by :func:`~sedscale.io.source.read_partition`)."""
        return self.source.partition(index, self.spec.options.partition_size)

    def read_rows(self, rows) -> pd.DataFrame:
        """Input rows at positions ``rows`` of the catalog, reading only their partitions."""
        return self.source.read_rows(rows, self.spec.options.partition_size)

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
    mapping: ColumnMapping | str | os.PathLike | Sequence[str] | Mapping | None = None,
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
        NSA FITS files, or FITS/Parquet/CSV/text tables with ``mapping``;
        directories and glob patterns expand to their catalog files.
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
    check_forward_model(post)
    if options.n_proposals:
        check_importance_flow(post)
    bands = post.bands.bands
    mapping = load_column_mapping(mapping, bands=bands)
    if post.redshift_input is None and mapping is not None and (mapping.z is None or mapping.z_err is not None):
        raise ConfigError(f"{flow} takes z as a given input: a catalog without redshifts (z: none) or with redshift "
                          "uncertainties (z_err) needs a photometric-redshift flow (--flow photoz_ugriz)")
    keep = tuple(dict.fromkeys(tuple(keep) + (mapping.keep if mapping else ())))
    source = open_catalog(catalog, mapping=mapping, keep=keep, bands=bands)
    if source.kind == "nsa":
        check_nsa_filters(post)
    inputs = {Path(f.path).resolve() for f in source.files}
    for out in outputs:
        if Path(out).resolve() in inputs:
            raise ConfigError(f"the output {out} is an input catalog and would be overwritten; write elsewhere")
    if source.n_rows == 0:
        raise ConfigError(f"catalog {catalog} holds no rows")
    # The first rows, read as a worker will read them: a broken file or a wrong unit stops the run here.
    sample = source.read(max_rows=SAMPLE_ROWS)
    flux_warning = implausible_flux_scale(sample, bands)
    reserved = set(output_columns_fixed(bands)) & {k.lower() for k in keep}
    if reserved:
        raise ConfigError(f"kept column(s) {sorted(reserved)} clash with posterior-catalog columns; rename them")
    fits_output = any(output_format(out) == "fits" for out in outputs)
    if fits_output:
        # FITS strings are ASCII: the ids (when read) and the first rows here, every partition on its worker.
        check_fits_strings({"id": sample["id"] if source.ids is None else source.ids,
                            **{k.lower(): sample[k.lower()] for k in keep}})
    options = replace(options, error_floor=resolve_error_floor(post, options.error_floor),
                      min_snr=resolve_min_snr(post, options.min_snr), z_prior=resolve_z_prior(post, options.z_prior))
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
        absent_bands=tuple(source.absent_bands),
        ascii_strings=fits_output,
    )
    identity = {
        "schema_version": SCHEMA_VERSION,
        "catalog": source.identity(),
        "n_rows": source.n_rows,
        "checkpoint_sha256": spec.flow_sha256,
        "support_sha256": spec.support_sha256,
        "z_range": list(spec.z_range),
        "options": asdict(options),
        "keep": list(spec.keep),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return CatalogPlan(source=source, posterior=post, support=xsupport, spec=spec, outputs=outputs, identity=identity,
                       config_hash=digest, mcmc=mcmc if mcmc is not None and mcmc.active else None,
                       flux_warning=flux_warning)


def check_forward_model(post: Posterior) -> None:
    """Build the checkpoint's forward model here, as every worker will, and check it against the flow.

    A sidecar naming a model that cannot be built, or another model than the
    flow's parameters belong to, is refused before a cluster starts instead of
    failing in every worker.  The model lands in the per-process cache
    (:func:`~sedscale.infer.catalog_worker.model_for`).

    Raises
    ------
    CheckpointError
        The model cannot be built with the recorded options, or its parameters
        are not the flow's.
    """
    from ..train.checkpoint import CheckpointError
    from .catalog_worker import model_for

    try:
        model = model_for(post)
    except SedscaleError as exc:
        raise CheckpointError(f"{post.path}: its metadata's forward model cannot be built: {exc}") from None
    expected = tuple(post.param_names[: post.n_model_params])
    if tuple(model.param_names) != expected:
        raise CheckpointError(
            f"{post.path}: the metadata's model {post.model_name!r} has parameters {', '.join(model.param_names)}, the "
            f"flow was trained for {', '.join(expected)}; the metadata does not belong to these weights"
        )


def check_nsa_filters(post: Posterior) -> None:
    """Refuse a flow whose bands share the NSA's labels through other filters (DECam g r z are not SDSS g r z).

    Raises
    ------
    ConfigError
    """
    from ..io.nsa import NSA_FILTERS

    other = [f"{b} ({f})" for b, f in zip(post.bands.bands, post.bands.filters) if b in NSA_FILTERS and NSA_FILTERS[b] != f]
    if other:
        raise ConfigError(f"{post.path}: the flow's bands {', '.join(other)} are not the NSA's (GALEX and SDSS) "
                          "bands of those names; give a column mapping (--columns) naming the columns measured "
                          "through those filters, or use a flow of SDSS bands")


def resolve_error_floor(post: Posterior, error_floor: float | None) -> float:
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
        return max(DEFAULT_ERROR_FLOOR, float((post.metadata.get("photometric_noise") or {}).get("sigma_min", 0.0)))
    return float(error_floor)


def resolve_min_snr(post: Posterior, min_snr: float | None) -> float:
    """The S/N (``flux sqrt(ivar)``) below which a run masks a band (see :class:`CatalogOptions`).

    Raises
    ------
    ConfigError
        A threshold for a SEDflow-layout checkpoint, which cannot mask a band.
    """
    if not post.band_masked:
        if min_snr:
            raise ConfigError(f"{post.path}: this checkpoint (SEDflow x layout) cannot mask bands; it takes no S/N threshold")
        return 0.0
    if min_snr is None:
        sigma_max = (post.metadata.get("photometric_noise") or {}).get("sigma_max")
        return POGSON / float(sigma_max) if sigma_max else 0.0
    return float(min_snr)


def resolve_z_prior(post: Posterior, z_prior: str | None) -> str | None:
    """The redshift prior of a run with ``post`` (None for flows that take z as an input).

    Raises
    ------
    ConfigError
        A redshift prior for a flow without z among its parameters.
    """
    if post.redshift_input is None:
        if z_prior is not None:
            raise ConfigError(f"{post.path} takes z as an input; a redshift prior (--z-prior) needs a "
                              "photometric-redshift flow")
        return None
    return z_prior or DEFAULT_Z_PRIOR


def training_z_range(metadata: dict) -> tuple[float, float]:
    """Redshift range of a checkpoint's training set (from its metadata)."""
    z = (metadata.get("training_set") or {}).get("redshift") or {}
    try:
        return float(z["low"]), float(z["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("the checkpoint does not record its training redshift range (training_set.redshift)") from None


def resolve_support(post: Posterior, flow, support=None, support_sims=None,
                    cache_dir: Path | None = None) -> tuple[XSupport, Path]:
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
        # Beside the checkpoint itself: ``flow`` may be the name of a shipped checkpoint, not a path.
        path = support_path(post.path)
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
            found = fit_support_from_simulation(sims, post.x_columns, post.metadata.get("photometric_noise"),
                                                post.metadata.get("redshift_input"))
            path = _save_support(found, path, cached)
    if tuple(found.columns) != tuple(post.x_columns):
        raise ConfigError(f"{path}: x-support columns {list(found.columns)} are not the checkpoint's x layout")
    mismatch = training_set_mismatch(found, training_set)
    if mismatch:
        raise ConfigError(f"{path} was built from another training set than the checkpoint's ({mismatch}); "
                          "delete it or pass --support-sims with the checkpoint's training set")
    return found, path


def _save_support(support: XSupport, path: Path, fallback: Path | None) -> Path:
    try:
        return support.save(path)
    except OSError:
        if fallback is None:
            raise
        fallback.parent.mkdir(parents=True, exist_ok=True)
        return support.save(fallback)


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


def output_columns_fixed(bands: Sequence[str] = SDSS_BANDS) -> tuple[str, ...]:
    """Columns every posterior catalog of a flow over ``bands`` starts with (before kept columns and summaries)."""
    return ("id", "z", "z_err", "z_source", *(f"mag_{b}" for b in bands), *(f"sigma_{b}" for b in bands), "bands_used", "status",
            "reason", "support_score", "n_samples", "n_draws", "acceptance")
