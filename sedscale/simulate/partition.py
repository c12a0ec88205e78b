"""One simulation partition: draw, forward-model, add noise, write Parquet.

This is the code that runs on the Dask workers.  A partition's content is a
function of (run seed, partition index) and the run's configuration only,
never of the worker, the number of workers or the order of execution:

* randomness comes from ``SeedSequence(seed, spawn_key=(index,))``, split
  into independent streams for parameters, redshifts and noise;
* rows the noise model rejects (flux outside the reference catalog's
  range, sigma <= 0, noisy flux <= 0) are replaced by further draws from the
  same streams, in batches whose sizes depend only on what the partition
  has drawn so far.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import SedscaleError
from ..io.atomic import write_table
from ..observe.layout import (
    FLUX_COLUMNS,
    FLUX_SIGMA_COLUMNS,
    FLUX_TRUE_COLUMNS,
    MAG_COLUMNS,
    MAG_SIGMA_COLUMNS,
    REDSHIFT_COLUMN,
    SPECTRUM_TRUE_COLUMN,
)
from .config import NOISELESS, load_model, load_noise_model, model_spectra
from .manifest import partition_filename
from .redshift import CatalogRedshift, UniformRedshift

#: Global row id: ``partition * partition_size + row``.
ID_COLUMN = "sim_id"
#: A partition gives up when fewer than 1 draw in this many is valid.
MAX_DRAWS_PER_ROW = 200


@dataclass(frozen=True)
class TaskSpec:
    """Everything a worker needs for any partition of one run (small, picklable).

    Attributes
    ----------
    model_key : tuple
        ``(name, sorted options)`` for :func:`sedscale.simulate.config.load_model`.
    noise_model : str or None
        Noise-model JSON path (None: the shipped NSA model; ``"none"``: noiseless).
    redshift : UniformRedshift, SurveyRedshift or CatalogRedshift
    seed, n, partition_size : int
    out : str
        Output directory.
    metadata : dict of str to str
        Parquet key-value metadata written into every file.
    observable : {"photometry", "spectrum"}
    sigma_star_max : float or None
        Spectra: stellar velocity dispersions drawn U(0, max) km/s.
    """

    model_key: tuple
    noise_model: str | None
    redshift: UniformRedshift | CatalogRedshift
    seed: int
    n: int
    partition_size: int
    out: str
    metadata: dict = field(default_factory=dict)
    observable: str = "photometry"
    sigma_star_max: float | None = None

    def rows(self, index: int) -> int:
        return min(self.partition_size, self.n - index * self.partition_size)


def partition_streams(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent (theta, z, noise) generators of partition ``index``."""
    children = np.random.SeedSequence(entropy=seed, spawn_key=(index,)).spawn(3)
    return tuple(np.random.default_rng(c) for c in children)


@dataclass
class Draws:
    """Valid simulations of one partition and the bookkeeping of rejects.

    Attributes
    ----------
    theta : ndarray (rows, d)
    z : ndarray (rows,)
    flux_true : ndarray (rows, 5), nanomaggies
    flux, flux_sigma : ndarray (rows, 5), nanomaggies
    mag, mag_sigma : ndarray (rows, 5), mag
    n_drawn : int
        Forward-model evaluations made (including rejected and surplus draws).
    dropped : dict of str to int
        Rejected draws by reason (up to the last accepted draw).
    """

    theta: np.ndarray
    z: np.ndarray
    flux_true: np.ndarray
    flux: np.ndarray
    flux_sigma: np.ndarray
    mag: np.ndarray
    mag_sigma: np.ndarray
    n_drawn: int
    dropped: dict


def next_batch_size(rows_needed: int, n_kept: int, n_drawn: int) -> int:
    """How many to draw next to fill ``rows_needed`` more rows.

    The first batch assumes half the draws survive (about the rate of the
    NSA noise model on the SEDflow prior), without margin: surplus draws are
    wasted model evaluations, a small second round is cheap.  Later rounds
    use the observed rate with 10% margin.  Capped so that a low acceptance
    costs rounds, not memory.
    """
    if n_drawn == 0:
        want = 2 * rows_needed
    else:
        rate = max(n_kept / n_drawn, 1.0 / MAX_DRAWS_PER_ROW)
        want = int(np.ceil(rows_needed / rate * 1.1)) + 16
    return min(want, 4 * rows_needed + 4096)


def draw_valid(model, noise, redshift, rows: int, streams) -> Draws:
    """Draw until ``rows`` simulations pass the noise model.

    Raises
    ------
    SedscaleError
        When fewer than one draw in :data:`MAX_DRAWS_PER_ROW` survives (the
        redshift range or prior does not overlap the noise model's flux range).
    """
    theta_rng, z_rng, noise_rng = streams
    keep: dict[str, list[np.ndarray]] = {k: [] for k in ("theta", "z", "flux_true", "flux", "flux_sigma", "mag", "mag_sigma")}
    dropped: dict[str, int] = {}
    n_kept = n_drawn = 0
    while n_kept < rows:
        if n_drawn >= MAX_DRAWS_PER_ROW * rows:
            raise SedscaleError(
                f"only {n_kept} of {n_drawn} draws passed the noise model (rejected: {dropped}); "
                "the redshift range or prior hardly overlaps the noise model's flux range"
            )
        batch = next_batch_size(rows - n_kept, n_kept, n_drawn)
        z = redshift.sample(batch, z_rng)
        theta = model.prior.sample(batch, theta_rng, z)
        flux_true = model.photometry(theta, z)
        noisy = noise.apply(flux_true, noise_rng)
        n_drawn += batch
        accepted = np.flatnonzero(noisy.valid)[: rows - n_kept]
        # Draws after the last one needed are surplus: neither kept nor counted as dropped.
        considered = accepted[-1] + 1 if n_kept + accepted.size == rows else batch
        reasons, counts = np.unique(noisy.reason[:considered][~noisy.valid[:considered]], return_counts=True)
        for reason, count in zip(reasons.tolist(), counts.tolist()):
            dropped[reason] = dropped.get(reason, 0) + count
        for name, arr in (
            ("theta", theta),
            ("z", z),
            ("flux_true", flux_true),
            ("flux", noisy.flux),
            ("flux_sigma", noisy.flux_sigma),
            ("mag", noisy.mag),
            ("mag_sigma", noisy.mag_sigma),
        ):
            keep[name].append(arr[accepted])
        n_kept += accepted.size
    return Draws(**{k: np.concatenate(v) for k, v in keep.items()}, n_drawn=n_drawn, dropped=dropped)


def draw_spectra(model, redshift, rows: int, streams, sigma_star_max: float | None = None):
    """``rows`` prior draws and their noiseless DIGS spectra.

    Nothing is rejected: spectra get their noise (and coverage) when the
    training set is read, so every draw is a training row.  The third
    stream draws the stellar velocity dispersions (``sigma_star_max``).

    Returns
    -------
    theta : ndarray (rows, d)
    z : ndarray (rows,)
    spec_true : ndarray (rows, 138), float32
        Rest-frame L_lambda in Lsun/A on the DIGS grid.
    sigma_star : ndarray (rows,) or None
        Stellar velocity dispersion (km/s) of each spectrum.
    """
    sigma_star = None if sigma_star_max is None else streams[2].uniform(0.0, sigma_star_max, size=rows)
    theta, z, spec = _noiseless_draws(model, redshift, rows, streams,
                                      lambda m, theta, z: model_spectra(m, theta, z, sigma_star), "spectra")
    return theta, z, spec, sigma_star


def draw_photometry(model, redshift, rows: int, streams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` prior draws and their noiseless fluxes in the model's bands (nanomaggies).

    Nothing is rejected: uncertainties, noise and band masks are drawn when
    the training set is read (:class:`~sedscale.observe.survey_noise.SurveyNoise`).
    The third stream (noise) is not used.
    """
    return _noiseless_draws(model, redshift, rows, streams, lambda m, theta, z: m.photometry(theta, z), "fluxes")


def _noiseless_draws(model, redshift, rows: int, streams, forward, what: str):
    """``rows`` prior draws (z first: priors may depend on it) and ``forward(model, theta, z)``, checked finite."""
    theta_rng, z_rng, _ = streams
    z = redshift.sample(rows, z_rng)
    theta = model.prior.sample(rows, theta_rng, z)
    out = forward(model, theta, z)
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out).all(axis=1)).sum())
        raise SedscaleError(f"{bad} of {rows} model {what} are not finite; the model or its prior is broken")
    return theta, z, out


def spectrum_column(spec: np.ndarray) -> pa.FixedSizeListArray:
    """A (rows, m) float32 array as a fixed-size list<float32>[m] column."""
    spec = np.ascontiguousarray(spec, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(spec.ravel()), spec.shape[1])


def _columns_table(columns: dict, derived: dict, metadata: dict, lists: dict | None = None) -> pa.Table:
    """Scalar columns as float32 (ids int64), derived properties after them, then list columns."""
    for name in sorted(derived):
        if name not in columns:
            columns[name] = derived[name]
        elif not np.array_equal(np.float32(columns[name]), np.float32(derived[name])):
            raise SedscaleError(f"derived property {name!r} differs from the column of the same name")
        # else: a parameter reported again as a derived property (dust optical depths): stored once.
    arrays = {
        name: pa.array(col if name == ID_COLUMN else np.asarray(col, dtype=np.float32)) for name, col in columns.items()
    }
    arrays.update(lists or {})
    return pa.table(arrays).replace_schema_metadata(metadata)


def build_spectrum_table(param_names, theta, z, spec, derived: dict, first_id: int, metadata: dict) -> pa.Table:
    """The Parquet table of one spectral partition.

    Column order: ``sim_id``, parameters, ``z``, derived properties, then
    ``spec_true`` (fixed-size list<float32>[138], Lsun/A).
    """
    columns: dict[str, np.ndarray] = {ID_COLUMN: np.arange(first_id, first_id + z.size, dtype=np.int64)}
    columns.update({name: theta[:, j] for j, name in enumerate(param_names)})
    columns[REDSHIFT_COLUMN] = z
    return _columns_table(columns, derived, metadata, {SPECTRUM_TRUE_COLUMN: spectrum_column(spec)})


def build_noiseless_table(param_names, theta, z, flux_true, derived: dict, first_id: int, metadata: dict,
                          flux_columns=FLUX_TRUE_COLUMNS) -> pa.Table:
    """The Parquet table of one noiseless photometric partition.

    Column order: ``sim_id``, parameters, ``z``, true fluxes (nanomaggies;
    ``flux_columns``, one per band of the model's band set), derived properties.
    """
    columns: dict[str, np.ndarray] = {ID_COLUMN: np.arange(first_id, first_id + z.size, dtype=np.int64)}
    columns.update({name: theta[:, j] for j, name in enumerate(param_names)})
    columns[REDSHIFT_COLUMN] = z
    columns.update({name: flux_true[:, k] for k, name in enumerate(flux_columns)})
    return _columns_table(columns, derived, metadata)


def build_table(param_names, draws: Draws, derived: dict, first_id: int, metadata: dict) -> pa.Table:
    """The Parquet table of one partition (float32 columns, int64 ids).

    Column order: ``sim_id``, parameters (``param_names`` order), ``z``,
    true fluxes, noisy fluxes, flux sigmas, magnitudes, magnitude sigmas,
    derived properties (sorted by name; one equal to a parameter is not
    repeated).
    """
    n = draws.z.size
    columns: dict[str, np.ndarray] = {ID_COLUMN: np.arange(first_id, first_id + n, dtype=np.int64)}
    columns.update({name: draws.theta[:, j] for j, name in enumerate(param_names)})
    columns[REDSHIFT_COLUMN] = draws.z
    for names, arr in (
        (FLUX_TRUE_COLUMNS, draws.flux_true),
        (FLUX_COLUMNS, draws.flux),
        (FLUX_SIGMA_COLUMNS, draws.flux_sigma),
        (MAG_COLUMNS, draws.mag),
        (MAG_SIGMA_COLUMNS, draws.mag_sigma),
    ):
        columns.update({name: arr[:, k] for k, name in enumerate(names)})
    return _columns_table(columns, derived, metadata)


def simulate_partition(index: int, spec: TaskSpec) -> dict:
    """Simulate partition ``index`` and write its Parquet file atomically.

    Returns
    -------
    dict
        ``index``, ``file``, ``rows``, ``drawn`` (model evaluations),
        ``dropped`` (reason -> count), ``sha256``, ``bytes``, ``seconds``
        (wall) and ``cpu_seconds`` (CPU time of the executing thread: the
        cost free of contention from other processes).
    """
    start, cpu_start = time.perf_counter(), time.thread_time()
    model = load_model(spec.model_key)
    streams = partition_streams(spec.seed, index)
    first_id = index * spec.partition_size
    dropped: dict[str, int]
    if spec.observable == "spectrum":
        theta, z, spectra, sigma_star = draw_spectra(model, spec.redshift, spec.rows(index), streams,
                                                     spec.sigma_star_max)
        derived = model.derived(theta, z)
        if sigma_star is not None:
            derived["sigma_star"] = sigma_star
        table = build_spectrum_table(model.param_names, theta, z, spectra, derived, first_id, spec.metadata)
        n_drawn, dropped = theta.shape[0], {}
    elif spec.noise_model == NOISELESS:
        theta, z, flux_true = draw_photometry(model, spec.redshift, spec.rows(index), streams)
        derived = model.derived(theta, z)
        table = build_noiseless_table(model.param_names, theta, z, flux_true, derived, first_id, spec.metadata,
                                      model.bands.columns("flux_true_"))
        n_drawn, dropped = theta.shape[0], {}
    else:
        noise = load_noise_model(spec.noise_model)
        draws = draw_valid(model, noise, spec.redshift, spec.rows(index), streams)
        derived = model.derived(draws.theta, draws.z)
        table = build_table(model.param_names, draws, derived, first_id, spec.metadata)
        n_drawn, dropped = draws.n_drawn, draws.dropped
    record = write_table(Path(spec.out) / partition_filename(index), table)
    return {
        "index": index,
        "file": record["file"],
        "rows": record["rows"],
        "drawn": n_drawn,
        "dropped": dict(sorted(dropped.items())),
        "sha256": record["sha256"],
        "bytes": record["bytes"],
        "seconds": round(time.perf_counter() - start, 3),
        "cpu_seconds": round(time.thread_time() - cpu_start, 3),
    }
