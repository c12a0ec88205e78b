"""Out-of-support detection: is an observation x like the ones the flow was trained on?

An amortized posterior is only trustworthy where the training set has
support in x-space (SEDflow found ~1.7% of NSA galaxies outside it, mostly
galaxies with colours the SPS model + noise cannot produce).  Flows give
q(theta | x), not a density of x, so the support is measured directly on
the training observations:

1. x is whitened with the training mean and covariance (so the strongly
   correlated magnitudes do not dominate and colour offsets count);
2. the score of a galaxy is the distance to its k-th nearest neighbour
   among ``n_reference`` training observations, divided by a threshold;
3. the threshold is the ``quantile`` (default 98.5%) of the same distance
   for ``n_calibration`` *other* training observations, so that about 1.5%
   of fresh simulations from the training distribution score above 1.

A galaxy is out of support when its score exceeds 1 or any of its x
entries lies outside the range spanned by the training observations.

The reference is stored beside the checkpoint as ``x_support.npz``
(:func:`support_path`), built once from the training set by
:func:`fit_support_from_simulation` (``bin/run_catalog`` does it on first
use when the training set is still on disk).
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MissingDataError

SUPPORT_FILE = "x_support.npz"
SUPPORT_FORMAT = "sedscale.x_support"
SUPPORT_VERSION = 1
#: Defaults of :func:`fit_support`.
DEFAULT_K = 10
DEFAULT_REFERENCE = 20_000
DEFAULT_CALIBRATION = 10_000
DEFAULT_QUANTILE = 0.985
#: ``reason`` labels of a galaxy outside the training support (:meth:`XSupport.check`).
LOW_DENSITY, OUTSIDE_RANGE = "low_training_density", "outside_training_range"
SUPPORT_LABELS = (LOW_DENSITY, OUTSIDE_RANGE)


@dataclass(frozen=True, eq=False)
class XSupport:
    """A k-nearest-neighbour model of the training observations.

    Attributes
    ----------
    columns : tuple of str
        x columns, in order.
    mean : ndarray, shape (dx,)
    whiten : ndarray, shape (dx, dx)
        ``(x - mean) @ whiten`` has unit covariance over the training set.
    reference : ndarray, shape (m, dx), float32
        Whitened training observations.
    k : int
    threshold : float
        Whitened k-NN distance that ``1 - quantile`` of held-out training
        observations exceed.
    quantile : float
    x_low, x_high : ndarray, shape (dx,)
        Range of every x column over the training observations read.
    provenance : dict
        Where the reference came from (training-set path, manifest hash, rows).
    """

    columns: tuple
    mean: np.ndarray
    whiten: np.ndarray
    reference: np.ndarray
    k: int
    threshold: float
    quantile: float
    x_low: np.ndarray
    x_high: np.ndarray
    provenance: dict

    @cached_property
    def _tree(self):
        from scipy.spatial import cKDTree

        return cKDTree(self.reference)

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Whitened distance to the k-th nearest reference observation; NaN for non-finite rows."""
        x = np.asarray(x, dtype=np.float64)
        out = np.full(x.shape[0], np.nan)
        good = np.flatnonzero(np.isfinite(x).all(axis=1))
        if good.size:
            d, _ = self._tree.query((x[good] - self.mean) @ self.whiten, k=self.k)
            out[good] = d[:, -1] if d.ndim == 2 else d
        return out

    def score(self, x: np.ndarray) -> np.ndarray:
        """k-NN distance over the threshold: > 1 means out of support."""
        return self.distance(x) / self.threshold

    def outside_range(self, x: np.ndarray) -> np.ndarray:
        """(n, dx) bool: entries outside the training range (NaN counts as outside)."""
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return ~((x >= self.x_low) & (x <= self.x_high))

    def check(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score and flag observations.

        Returns
        -------
        score : ndarray, shape (n,)
        outside : ndarray of bool, shape (n,)
            Score > 1 or an entry outside the training range.
        reason : ndarray of str (object), shape (n,)
            ``"low_training_density"`` and/or ``"outside_training_range:<columns>"``
            joined by ``;``, ``""`` inside the support.
        """
        score = self.score(x)
        off = self.outside_range(x)
        with np.errstate(invalid="ignore"):
            low_density = score > 1
        outside = low_density | off.any(axis=1)
        reason = np.full(score.shape[0], "", dtype=object)
        for i in np.flatnonzero(outside):
            labels = [LOW_DENSITY] if low_density[i] else []
            if off[i].any():
                labels.append(f"{OUTSIDE_RANGE}:" + ",".join(c for c, o in zip(self.columns, off[i]) if o))
            reason[i] = ";".join(labels)
        return score, outside, reason

    def describe(self) -> dict:
        """JSON record for catalog provenance."""
        return {
            "method": "whitened k-NN distance to training x",
            "k": self.k,
            "n_reference": int(self.reference.shape[0]),
            "quantile": self.quantile,
            "threshold": self.threshold,
            "columns": list(self.columns),
            **self.provenance,
        }

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` file atomically."""
        from ..io.atomic import atomic_write

        header = {
            "format": SUPPORT_FORMAT,
            "version": SUPPORT_VERSION,
            "columns": list(self.columns),
            "k": self.k,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "provenance": self.provenance,
        }
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            header=np.array(json.dumps(header)),
            mean=self.mean,
            whiten=self.whiten,
            reference=self.reference,
            x_low=self.x_low,
            x_high=self.x_high,
        )
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> XSupport:
        """Read a file written by :meth:`save`.

        Raises
        ------
        MissingDataError
            No such file.
        ConfigError
            Not a support file, or corrupt.
        """
        path = Path(path)
        if not path.is_file():
            raise MissingDataError(f"x-support file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {k: np.array(data[k]) for k in ("mean", "whiten", "reference", "x_low", "x_high")}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise ConfigError(f"{path}: unreadable x-support file (truncated or corrupt? {exc}); delete it to "
                              "rebuild it from the training set, or pass --support") from None
        if header.get("format") != SUPPORT_FORMAT or header.get("version") != SUPPORT_VERSION:
            raise ConfigError(f"{path}: not a sedscale x-support file (version {SUPPORT_VERSION})")
        return cls(
            columns=tuple(header["columns"]),
            k=int(header["k"]),
            threshold=float(header["threshold"]),
            quantile=float(header["quantile"]),
            provenance=dict(header.get("provenance", {})),
            **arrays,
        )


def training_set_mismatch(support: XSupport, training_set: dict) -> str:
    """Which training-set digest of ``support`` differs from a checkpoint's, or '' (same, or not recorded).

    The simulation is a deterministic function of its configuration, so an
    equal config hash is the same training set even when the manifest digest
    (older checkpoints hashed run times too) differs.
    """
    for key in ("config_hash", "manifest_sha256"):
        have, expected = support.provenance.get(key), training_set.get(key)
        if have and expected:
            return "" if have == expected else f"{key} {have[:12]}, the checkpoint's {expected[:12]}"
    return ""


def fit_support(
    x: np.ndarray,
    columns,
    *,
    k: int = DEFAULT_K,
    n_reference: int = DEFAULT_REFERENCE,
    n_calibration: int = DEFAULT_CALIBRATION,
    quantile: float = DEFAULT_QUANTILE,
    seed: int = 0,
    provenance: dict | None = None,
) -> XSupport:
    """Fit an :class:`XSupport` to training observations.

    Parameters
    ----------
    x : ndarray, shape (N, dx)
        Training observations (rows with non-finite entries are skipped).
    columns : sequence of str
    k, n_reference, n_calibration, quantile, seed
        See the module docstring.  Reference and calibration rows are
        disjoint random subsets; with fewer rows than both, the rows are
        split in proportion.
    provenance : dict, optional

    Raises
    ------
    ConfigError
        Too few rows (fewer than 10 k) or bad options.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x).all(axis=1)]
    if not 0 < quantile < 1:
        raise ConfigError(f"quantile must be in (0, 1), got {quantile}")
    if x.shape[0] < 10 * k:
        raise ConfigError(f"need at least {10 * k} finite training observations to fit the x-support, got {x.shape[0]}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(x.shape[0])
    if x.shape[0] < n_reference + n_calibration:
        n_reference = int(x.shape[0] * n_reference / (n_reference + n_calibration))
    ref, cal = x[order[:n_reference]], x[order[n_reference : n_reference + n_calibration]]
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False)
    # Inverse Cholesky factor: (x - mean) @ W has identity covariance.
    whiten = np.linalg.inv(np.linalg.cholesky(cov)).T
    support = XSupport(
        columns=tuple(columns),
        mean=mean,
        whiten=whiten,
        reference=((ref - mean) @ whiten).astype(np.float32),
        k=int(k),
        threshold=1.0,
        quantile=float(quantile),
        x_low=x.min(axis=0),
        x_high=x.max(axis=0),
        provenance=dict(provenance or {}, n_rows=int(x.shape[0])),
    )
    threshold = float(np.quantile(support.distance(cal), quantile))
    return replace(support, threshold=threshold)


def support_path(checkpoint_dir: str | os.PathLike) -> Path:
    """Where the x-support of a checkpoint lives (a directory or a file inside it)."""
    path = Path(checkpoint_dir)
    return (path if path.is_dir() else path.parent) / SUPPORT_FILE


def training_set_provenance(sims: str | os.PathLike) -> dict:
    """The digests :func:`training_set_mismatch` compares, for an x-support fitted to the simulation at ``sims``.

    Raises
    ------
    MissingDataError
        No finished simulation at ``sims``.
    """
    from ..simulate import read_manifest
    from ..train.data import manifest_digest

    manifest = read_manifest(Path(sims))
    if manifest is None:
        raise MissingDataError(f"no finished simulation at {sims} to build the x-support from")
    return {"training_set": str(sims), "manifest_sha256": manifest_digest(manifest),
            "config_hash": manifest["config_hash"]}


def fit_support_from_simulation(sims: str | os.PathLike, columns, photometric_noise=None, redshift_input=None,
                                **kwargs) -> XSupport:
    """Fit the x-support to the observations of a finished simulation (``bin/run_simulate`` output).

    For noiseless photometric sets, x is made with ``photometric_noise``
    (the checkpoint's) from validation rows (fixed draws), at most
    ``n_reference + n_calibration`` of them; with ``redshift_input`` (a
    photometric-redshift checkpoint's), x ends in the drawn redshift inputs.

    Raises
    ------
    MissingDataError
        No finished simulation at ``sims``.
    """
    from ..simulate import read_simulation
    from ..train.data import open_training_set, reference_x

    sims = Path(sims)
    provenance = training_set_provenance(sims)
    ts = open_training_set(sims)
    if ts.source is None:
        table = read_simulation(sims, columns=list(columns))
        x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns])
        return fit_support(x, columns, provenance=provenance, **kwargs)
    wanted = kwargs.get("n_reference", DEFAULT_REFERENCE) + kwargs.get("n_calibration", DEFAULT_CALIBRATION)
    x = reference_x(ts.with_noise(None, photometric_noise).with_redshift(redshift_input), wanted)
    return fit_support(x, columns, provenance=provenance, **kwargs)
