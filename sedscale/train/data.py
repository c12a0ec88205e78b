"""Streaming access to a simulated training set (partitioned Parquet).

A training set is the output directory of ``bin/run_simulate``: Parquet
partitions listed in ``_manifest.json``, one float32 column per parameter
(``param_names`` order), ``z``, the observation columns
(:mod:`sedscale.observe.layout`) and ``sedscale.*`` key-value metadata
(model, prior, x columns, units, config hash).

Nothing here holds the whole set in memory: rows are read in chunks of
record batches, split into training and validation rows by a seeded hash of
the global row index (stable across epochs, resumes and chunk sizes), and
shuffled through a bounded buffer.  Rows with non-finite values or
parameters outside the prior box are skipped and counted.

Spectral training sets store noiseless spectra (``spec_true``); x is made
when the rows are read (:class:`SpectralSource`): noise and coverage are
drawn by the training's :class:`~sedscale.observe.spectral_noise.SpectralNoiseModel`
and :func:`~sedscale.observe.layout.spectrum_x` normalizes.  Noiseless
photometric sets (``bin/run_simulate --noise-model none``) work the same way
(:class:`PhotometricSource`): uncertainties, noise and band masks are drawn
by a :class:`~sedscale.observe.survey_noise.SurveyNoise`.  Training rows
get fresh noise on every read (the DIGS augmentation, without storing the
copies); validation and normalization rows get the same noise every time
(seeded by the file), so validation losses compare across epochs.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..errors import ConfigError, MissingDataError, SedscaleError
from ..io.runs import MANIFEST_NAME, file_sha256
from ..models.priors import Parameter, Prior, tabulated_marginal
from ..models.redshift_prior import REDSHIFT_PARAMETER, RedshiftParameterPrior
from ..observe.layout import FLUX_TRUE_COLUMNS, REDSHIFT_COLUMN, spectrum_x
from ..observe.redshift_input import REDSHIFT_X_COLUMNS, RedshiftInput, redshift_input
from ..observe.spectral_noise import SpectralNoiseModel, spectral_noise_model
from ..observe.survey_noise import SurveyNoise, photometric_noise_model
from .flows import Normalization, marginal_tensors, pretransform_theta

#: Rows per Parquet read.
CHUNK_ROWS = 65_536
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class TrainingSetError(SedscaleError, ValueError):
    """A training set is unusable (inconsistent partitions, missing columns)."""


def prior_from_dict(d: dict) -> Prior:
    """Inverse of :meth:`sedscale.models.priors.Prior.to_dict` (and of ``PhysicalPrior.to_dict``).

    Raises
    ------
    ConfigError
        Not a BoxUniform or PhysicalPrior description.
    """
    if isinstance(d, dict) and d.get("type") == "RedshiftParameterPrior":
        from ..simulate.redshift import redshift_distribution_from_dict

        return RedshiftParameterPrior(prior_from_dict(d.get("base") or {}),
                                      redshift_distribution_from_dict(d.get("redshift")))
    if isinstance(d, dict) and d.get("type") == "PhysicalPrior":
        from ..models import get_model

        prior = get_model("dirichlet", prior=json.dumps(d.get("density"), sort_keys=True)).prior
        if prior.to_dict() != d:
            raise ConfigError(f"prior description does not round-trip: {str(d)[:200]}")
        return prior
    if not isinstance(d, dict) or d.get("type") != "BoxUniform" or not d.get("parameters"):
        raise ConfigError(f"not a BoxUniform prior description: {str(d)[:200]}")
    try:
        return Prior(
            Parameter(p["name"], float(p["low"]), float(p["high"]), p.get("unit", "")) for p in d["parameters"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed prior description ({exc!r})") from None


def manifest_digest(manifest: dict) -> str:
    """sha256 identifying a simulation's data: its config hash and its partition files.

    Run-specific entries of the manifest (seconds, CPU time) are left out, so
    a re-run of the same configuration, which writes the same files, has the
    same digest.
    """
    files = {k: [e["file"], e["rows"], e["sha256"]] for k, e in manifest["partitions"].items()}
    content = {"config_hash": manifest["config_hash"], "partitions": files}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def validation_mask(row_index: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for rows held out for validation.

    A splitmix64 hash of (row index, seed) is compared with ``fraction``, so
    the assignment of a row never depends on how the rows are read.
    """
    with np.errstate(over="ignore"):
        h = np.asarray(row_index, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & _MASK64
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & _MASK64
        h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


@dataclass(frozen=True)
class SpectralSource:
    """Makes the x of a spectral training set from its noiseless spectra.

    Attributes
    ----------
    column : str
        The list column of noiseless rest-frame L_lambda (Lsun/A).
    wave : ndarray (m,)
        Rest-frame wavelengths (Angstrom).
    noise : SpectralNoiseModel
    """

    column: str
    wave: np.ndarray
    noise: SpectralNoiseModel

    @property
    def columns(self) -> tuple[str, ...]:
        """The Parquet columns x is made from."""
        return (self.column,)

    def x(self, spec: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(x, valid)`` of noiseless spectra (n, m) with noise from ``rng``."""
        noisy = self.noise.apply(spec, rng, self.wave)
        return spectrum_x(noisy.flux, noisy.sigma, noisy.good, self.wave)

    def x_from_batch(self, batch, keep: np.ndarray, rng: np.random.Generator):
        """``(x, valid)`` of the ``keep`` rows of a Parquet record batch."""
        spec = batch.column(self.column).flatten().to_numpy().reshape(batch.num_rows, -1)[keep]
        return self.x(spec, rng)

    def with_noise(self, spectral, photometric) -> SpectralSource:
        return replace(self, noise=spectral_noise_model(spectral))


@dataclass(frozen=True)
class PhotometricSource:
    """Makes the band-masked x of a noiseless photometric training set.

    Attributes
    ----------
    noise : SurveyNoise
    """

    noise: SurveyNoise
    columns: tuple[str, ...] = FLUX_TRUE_COLUMNS + (REDSHIFT_COLUMN,)
    redshift: RedshiftInput | None = None

    def x_from_batch(self, batch, keep: np.ndarray, rng: np.random.Generator):
        """``(x, valid)`` of the ``keep`` rows of a Parquet record batch, noise from ``rng``.

        With ``redshift`` (z a parameter), x ends in the drawn redshift inputs
        instead of the true z.
        """
        values = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False) for c in self.columns])[keep]
        x, valid = self.noise.apply(values[:, :-1], values[:, -1], rng)
        if self.redshift is not None:
            x = np.concatenate([x[:, :-1], self.redshift.draw(values[:, -1], rng)], axis=1)
        return x, valid

    def with_noise(self, spectral, photometric) -> PhotometricSource:
        return replace(self, noise=photometric_noise_model(photometric))


@dataclass(frozen=True)
class TrainingSet:
    """A finished simulation opened for training.

    Attributes
    ----------
    path : Path
    files : tuple of Path
        Partition files in manifest order.
    row_counts : tuple of int
    metadata : dict
        Decoded ``sedscale.*`` Parquet metadata of the partitions.
    param_names, x_columns : tuple of str
    prior : Prior
    manifest_sha256 : str
    source : SpectralSource, PhotometricSource or None
        For spectral and noiseless photometric sets: how x is made (None:
        x are Parquet columns).
    """

    path: Path
    files: tuple[Path, ...]
    row_counts: tuple[int, ...]
    metadata: dict
    param_names: tuple[str, ...]
    x_columns: tuple[str, ...]
    prior: Prior
    manifest_sha256: str
    source: SpectralSource | PhotometricSource | None = None

    @property
    def observable(self) -> str:
        return str(self.metadata.get("observable", "photometry"))

    def with_noise(self, spectral, photometric) -> TrainingSet:
        """This set with x made using the spectral or photometric noise (preset names, dicts or models).

        Sets whose noise is in the data are returned unchanged.
        """
        if self.source is None:
            return self
        return replace(self, source=self.source.with_noise(spectral, photometric))

    @property
    def redshift_input(self) -> RedshiftInput | None:
        """How z is given to a photometric-redshift flow (None: z is an input, not a parameter)."""
        return self.source.redshift if isinstance(self.source, PhotometricSource) else None

    def with_redshift(self, spec) -> TrainingSet:
        """This set with z moved from x into the parameters (``spec``: see
        :func:`~sedscale.observe.redshift_input.redshift_input`; None leaves the set as it is).

        The parameters become ``(*param_names, "z")`` under
        :class:`~sedscale.models.redshift_prior.RedshiftParameterPrior` (the
        simulation's redshift distribution times the model prior), and x ends
        in :data:`~sedscale.observe.redshift_input.REDSHIFT_X_COLUMNS`.

        Raises
        ------
        TrainingSetError
            Not a noiseless photometric set whose x ends in z, or a redshift
            distribution without a density (drawn from a catalog).
        """
        from ..simulate.redshift import redshift_distribution_from_dict

        spec = redshift_input(spec)
        if spec is None or self.redshift_input == spec:
            return self
        if not isinstance(self.source, PhotometricSource) or self.redshift_input is not None \
                or self.x_columns[-1:] != (REDSHIFT_COLUMN,):
            raise TrainingSetError(f"{self.path}: redshift as a parameter needs a noiseless photometric training set "
                                   "(bin/run_simulate --noise-model none) whose x ends in z")
        try:
            distribution = redshift_distribution_from_dict(self.metadata.get("redshift"))
        except ConfigError as err:
            raise TrainingSetError(f"{self.path}: redshift as a parameter needs a uniform or survey redshift "
                                   f"distribution ({err})") from None
        return replace(
            self,
            param_names=(*self.param_names, REDSHIFT_PARAMETER),
            x_columns=(*self.x_columns[:-1], *REDSHIFT_X_COLUMNS),
            prior=RedshiftParameterPrior(self.prior, distribution),
            source=replace(self.source, redshift=spec),
        )

    @property
    def n_rows(self) -> int:
        return int(sum(self.row_counts))

    @property
    def model_name(self) -> str:
        return str(self.metadata.get("model", ""))

    @property
    def x_units(self) -> dict[str, str]:
        units = self.metadata.get("units") or {}
        return {c: units.get(c, "") for c in self.x_columns}

    def describe(self) -> dict:
        """JSON record of the data's identity (stored in checkpoints)."""
        noise = self.metadata.get("noise_model")
        return {
            "path": str(self.path),
            "manifest_sha256": self.manifest_sha256,
            "config_hash": self.metadata.get("config_hash"),
            "n_rows": self.n_rows,
            "n_files": len(self.files),
            "model": self.model_name,
            "seed": self.metadata.get("seed"),
            "redshift": self.metadata.get("redshift"),
            "cosmology": self.metadata.get("cosmology"),
            "filters": self.metadata.get("filters"),
            "noise_model_sha256": (
                hashlib.sha256(json.dumps(noise, sort_keys=True).encode()).hexdigest() if noise else None
            ),
            "sedscale_version": self.metadata.get("version"),
            "observable": self.observable,
            "spectral_noise": self.source.noise.to_dict() if isinstance(self.source, SpectralSource) else None,
            "photometric_noise": self.source.noise.to_dict() if isinstance(self.source, PhotometricSource) else None,
            "redshift_input": None if self.redshift_input is None else self.redshift_input.to_dict(),
        }


#: What to do about a missing or damaged partition of the simulation in ``{path}``.
_RECOMPUTE = ("rerun bin/run_simulate --out {path} --resume, with the options that made it (recorded under "
              "'options' in its " + MANIFEST_NAME + "), to recompute it")


def verified_partitions(path: Path, manifest: dict, checksums: bool) -> tuple[tuple[Path, ...], tuple[int, ...]]:
    """The partition files of a simulation, in partition order, and their row counts, checked against its manifest.

    Every file must exist with the recorded size, a readable Parquet footer
    and the recorded number of rows; with ``checksums``, also with the
    recorded sha256 (reading every byte: about 0.7 s per GB from the page
    cache, less than one training epoch reads).  The cheap checks of all
    files come first.

    Parameters
    ----------
    path : Path
        The simulation directory.
    manifest : dict
        Its manifest (:func:`sedscale.simulate.dataset.finished_manifest`).
    checksums : bool
        Compare the sha256 of every file too.

    Raises
    ------
    MissingDataError
        A partition file is missing.
    TrainingSetError
        A partition file is truncated, unreadable or differs from the one written.
    """
    advice = _RECOMPUTE.format(path=path)
    parts = manifest["partitions"]
    entries = [parts[key] for key in sorted(parts, key=int)]
    files = tuple(path / entry["file"] for entry in entries)
    counts = []
    for file, entry in zip(files, entries):
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise MissingDataError(f"{file}: partition file listed in {MANIFEST_NAME} is missing; {advice}") from None
        if size != entry["bytes"]:
            raise TrainingSetError(f"{file}: {size} bytes, {MANIFEST_NAME} records {entry['bytes']} "
                                   f"(truncated or overwritten); {advice}")
        try:
            rows = pq.ParquetFile(file).metadata.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise TrainingSetError(f"{file}: unreadable Parquet file ({' '.join(str(exc).split())}); {advice}") from None
        if rows != entry["rows"]:
            raise TrainingSetError(f"{file}: {rows} rows, {MANIFEST_NAME} records {entry['rows']}; {advice}")
        counts.append(rows)
    if checksums:
        for file, entry in zip(files, entries):
            if file_sha256(file) != entry["sha256"]:
                raise TrainingSetError(f"{file}: contents differ from those bin/run_simulate wrote "
                                       f"(sha256 mismatch); {advice}")
    return files, tuple(counts)


def open_training_set(path: str | os.PathLike, x_columns=None, *, checksums: bool = False) -> TrainingSet:
    """Open the finished simulation in ``path``.

    The manifest and every partition file are checked first
    (:func:`verified_partitions`), so that a missing or damaged file is
    reported before any work, never in the middle of training.

    Parameters
    ----------
    path : str or PathLike
        Output directory of ``bin/run_simulate``.
    x_columns : sequence of str, optional
        Observation columns; default: the ``x_columns`` recorded in the data.
    checksums : bool
        Compare the sha256 of every partition file with the manifest's
        (reads the whole set once; :func:`~sedscale.train.trainer.train` does).

    Raises
    ------
    MissingDataError
        No manifest, an unfinished simulation, or a missing partition file.
    ConfigError
        A manifest that is not JSON, not a simulation's, or malformed.
    TrainingSetError
        Damaged partition files, partitions of different runs, or missing columns.
    """
    from ..simulate import finished_manifest, read_simulation_metadata

    path = Path(path)
    manifest = finished_manifest(path)
    files, counts = verified_partitions(path, manifest, checksums)
    if not files:
        raise TrainingSetError(f"{path}: the simulation has no partitions")
    metadata = read_simulation_metadata(files[0])
    for key in ("model", "param_names", "prior"):
        if key not in metadata:
            raise TrainingSetError(f"{files[0]}: Parquet metadata lacks 'sedscale.{key}'; not a sedscale training set")
    for f in files[1:]:
        other = read_simulation_metadata(f).get("config_hash")
        if other != metadata.get("config_hash"):
            raise TrainingSetError(f"{f} belongs to another run (config hash {other} != {metadata.get('config_hash')})")
    param_names = tuple(metadata["param_names"])
    prior = prior_from_dict(metadata["prior"])
    if prior.names != param_names:
        raise TrainingSetError(f"{path}: prior parameters {prior.names} differ from param_names {param_names}")
    x_columns = tuple(x_columns or metadata.get("x_columns") or ())
    if not x_columns:
        raise TrainingSetError(f"{path}: no x columns recorded in the data; pass x_columns")
    schema_names = set(pq.read_schema(files[0]).names)
    source: SpectralSource | PhotometricSource | None = None
    read_columns = x_columns
    if metadata.get("observable", "photometry") == "spectrum":
        source_column = metadata.get("x_source", "")
        source = SpectralSource(
            column=source_column,
            wave=np.asarray(metadata.get("wavelength") or [], dtype=float),
            noise=spectral_noise_model("survey"),
        )
        read_columns = source.columns
    elif metadata.get("x_source") == "flux_true":
        bands = metadata.get("bands")
        columns = tuple(f"flux_true_{b}" for b in bands) + (REDSHIFT_COLUMN,) if bands else FLUX_TRUE_COLUMNS + (
            REDSHIFT_COLUMN,)
        source = PhotometricSource(noise=photometric_noise_model("survey"), columns=columns)
        read_columns = source.columns
    missing = [c for c in param_names + read_columns if c not in schema_names]
    if missing:
        raise TrainingSetError(f"{path}: columns {missing} are missing from the Parquet files")
    return TrainingSet(
        path=path,
        files=files,
        row_counts=counts,
        metadata=metadata,
        param_names=param_names,
        x_columns=x_columns,
        prior=prior,
        manifest_sha256=manifest_digest(manifest),
        source=source,
    )


@dataclass(frozen=True)
class Split:
    """Which rows to read: ``part`` is ``"train"`` or ``"val"``."""

    part: str
    val_fraction: float
    seed: int


def _noise_seed(split: Split) -> int:
    """Fixed noise seed of a split's spectra when no generator is given (validation, statistics)."""
    return int(np.random.SeedSequence([split.seed, 0x5EC, split.part == "val"]).generate_state(1)[0])


def read_chunks(ts: TrainingSet, split: Split, file_order=None, rows: int = CHUNK_ROWS, rng=None):
    """Yield ``(theta, x, n_invalid)`` float32 chunks of the rows in ``split``.

    ``n_invalid`` counts the rows of the chunk (in the split) that were
    dropped for non-finite values or parameters outside the prior box.
    For spectral and noiseless photometric sets x is made from the noiseless
    rows with noise from ``rng`` (fresh draws), or, when ``rng`` is None, from
    a generator seeded by the split and the file (the same x on every read).
    """
    offsets = np.concatenate([[0], np.cumsum(ts.row_counts)])
    # A photometric-redshift set reads z once, as a parameter and as the source of x.
    columns = list(dict.fromkeys([*ts.param_names, *(ts.x_columns if ts.source is None else ts.source.columns)]))
    order = range(len(ts.files)) if file_order is None else file_order
    for i in order:
        start = int(offsets[i])
        noise_rng = rng if rng is not None else np.random.default_rng([_noise_seed(split), int(i)])
        for batch in pq.ParquetFile(ts.files[i]).iter_batches(batch_size=rows, columns=columns):
            n = batch.num_rows
            index = np.arange(start, start + n)
            start += n
            keep = validation_mask(index, split.val_fraction, split.seed) == (split.part == "val")
            if not keep.any():
                continue
            theta = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False) for c in ts.param_names])
            theta = theta[keep].astype(np.float32, copy=False)
            if ts.source is not None:
                x, valid = ts.source.x_from_batch(batch, keep, noise_rng)
            else:
                x = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False) for c in ts.x_columns])
                x, valid = x[keep].astype(np.float32, copy=False), True
            good = valid & np.isfinite(theta).all(axis=1) & np.isfinite(x).all(axis=1) & ts.prior.in_support(theta)
            yield theta[good], x[good], int((~good).sum())


def reference_x(ts: TrainingSet, rows: int) -> np.ndarray:
    """At least ``rows`` (when there are) observations x of a training set, for x-support references.

    Read from the rows of a fixed half split (seed 1), files in order; sets
    whose x is made at read time get the same noise on every call.
    """
    xs, total = [], 0
    for _, x, _ in read_chunks(ts, Split("val", 0.5, 1)):
        xs.append(x)
        total += x.shape[0]
        if total >= rows:
            break
    return np.concatenate(xs)


@dataclass(frozen=True)
class SplitCounts:
    """Rows per split after dropping invalid rows."""

    n_train: int
    n_val: int
    n_invalid: int


#: Training rows the tabulated prior CDFs of :func:`parameter_map` are read from.
TABULATE_ROWS = 200_000


def parameter_map(ts: TrainingSet, val_fraction: float, seed: int, rows: int = TABULATE_ROWS) -> tuple:
    """The per-parameter prior marginals of a new ``prior_probit`` flow.

    The prior's closed-form marginals, and for each parameter without one (the
    SFH coordinates of a continuity SFH, whose prior depends on z and on each
    other) its CDF tabulated from the first ``rows`` training rows (files in
    order, so the same set always gives the same map): those rows are prior
    draws at the training redshifts, so the probit of that CDF is close to
    N(0, 1) under the prior, where the logit of a coordinate piled against
    its box edge (continuity ``frac_u1``: median 0.992) leaves a long tail.

    Returns
    -------
    tuple of Marginal
        One per parameter, none of them None (recorded in the checkpoint's
        sidecar as ``theta_marginals``).

    Raises
    ------
    TrainingSetError
        Fewer than 100 valid training rows to tabulate from.
    """
    marginals = list(ts.prior.marginals())
    missing = [j for j, m in enumerate(marginals) if m is None]
    if not missing:
        return tuple(marginals)
    chunks, total = [], 0
    for theta, _, _ in read_chunks(ts, Split("train", val_fraction, seed)):
        chunks.append(theta[:, missing])
        total += theta.shape[0]
        if total >= rows:
            break
    draws = np.concatenate(chunks)[:rows] if chunks else np.empty((0, len(missing)))
    for i, j in enumerate(missing):
        try:
            marginals[j] = tabulated_marginal(draws[:, i], float(ts.prior.low[j]), float(ts.prior.high[j]))
        except ValueError as err:
            raise TrainingSetError(f"{ts.path}: {ts.param_names[j]}: {err}; simulate more rows") from None
    return tuple(marginals)


def compute_normalization(ts: TrainingSet, val_fraction: float, seed: int, theta_transform: str):
    """The fixed maps of a new flow: its parameter map, then one pass over the data for the
    z-scoring statistics of the training rows.

    Returns
    -------
    Normalization
        Of the transformed parameters and of x (a column with zero spread
        gets std 1).
    SplitCounts
    tuple of Marginal or None
        ``prior_probit``: the parameter map (:func:`parameter_map`); else None.

    Raises
    ------
    TrainingSetError
        Fewer than two valid training rows or no validation row.
    """
    low = torch.as_tensor(ts.prior.low, dtype=torch.float64)
    high = torch.as_tensor(ts.prior.high, dtype=torch.float64)
    marginals = parameter_map(ts, val_fraction, seed) if theta_transform == "prior_probit" else None
    tensors = None if marginals is None else marginal_tensors(marginals)
    d = len(ts.param_names)
    sums = np.zeros(d + len(ts.x_columns))
    squares = np.zeros_like(sums)
    n_train = n_val = n_invalid = 0
    for part in ("train", "val"):
        for theta, x, bad in read_chunks(ts, Split(part, val_fraction, seed)):
            n_invalid += bad
            if part == "val":
                n_val += theta.shape[0]
                continue
            t, _ = pretransform_theta(torch.as_tensor(theta, dtype=torch.float64), low, high, theta_transform,
                                      tensors)
            values = np.concatenate([t.numpy(), x.astype(np.float64)], axis=1)
            sums += values.sum(axis=0)
            squares += (values**2).sum(axis=0)
            n_train += theta.shape[0]
    if n_train < 2 or n_val < 1:
        raise TrainingSetError(
            f"{ts.path}: {n_train} training and {n_val} validation rows after dropping {n_invalid} invalid ones; "
            "simulate more rows or change val_fraction"
        )
    mean = sums / n_train
    std = np.sqrt(np.maximum(squares / n_train - mean**2, 0.0) * n_train / (n_train - 1))
    std = np.where(std > 1e-8 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    norm = Normalization(theta_mean=mean[:d], theta_std=std[:d], x_mean=mean[d:], x_std=std[d:])
    return norm, SplitCounts(n_train=n_train, n_val=n_val, n_invalid=n_invalid), marginals


def _augmented_chunks(ts: TrainingSet, split: Split, rows: int, rng: np.random.Generator, augment: int):
    """The split's chunks ``augment`` times, files in random order, fresh spectral noise each time."""
    for _ in range(augment):
        yield from read_chunks(ts, split, rng.permutation(len(ts.files)), rows=rows, rng=rng)


def shuffled_batches(
    ts: TrainingSet, split: Split, batch_size: int, buffer_rows: int, rng: np.random.Generator, augment: int = 1
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Minibatches ``(theta, x)`` of one epoch in shuffled order.

    Files are visited in random order; rows collect in a buffer of
    ``buffer_rows`` that is permuted and emitted in batches, the remainder
    carried over.  A split that fits in the buffer is shuffled exactly.
    The last batch of the epoch may be smaller than ``batch_size``.
    Spectral sets pass over the rows ``augment`` times with new noise
    (photometric sets have their noise in the data: ``augment`` must be 1).
    """
    if augment != 1 and ts.source is None:
        raise TrainingSetError("augment applies to spectral training sets only (photometric noise is in the data)")
    held_theta: list[np.ndarray] = []
    held_x: list[np.ndarray] = []
    held = 0
    chunk = max(batch_size, min(CHUNK_ROWS, buffer_rows))
    for theta, x, _ in _augmented_chunks(ts, split, chunk, rng, augment):
        held_theta.append(theta)
        held_x.append(x)
        held += theta.shape[0]
        if held >= buffer_rows:
            theta_all, x_all = np.concatenate(held_theta), np.concatenate(held_x)
            perm = rng.permutation(held)
            n_full = held // batch_size * batch_size
            for s in range(0, n_full, batch_size):
                idx = perm[s : s + batch_size]
                yield theta_all[idx], x_all[idx]
            rest = perm[n_full:]
            held_theta, held_x, held = [theta_all[rest]], [x_all[rest]], rest.size
    if held:
        theta_all, x_all = np.concatenate(held_theta), np.concatenate(held_x)
        perm = rng.permutation(held)
        for s in range(0, held, batch_size):
            idx = perm[s : s + batch_size]
            yield theta_all[idx], x_all[idx]
