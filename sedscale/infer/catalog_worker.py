"""The worker side of a catalog run: one partition of rows -> one Parquet file.

:func:`infer_partition` is the Dask task; :func:`infer_frame` the same work on
a block of rows without Dask.  Checkpoints, x-supports and forward models are
loaded once per worker process.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import ConfigError, SedscaleError
from ..io.atomic import write_table
from ..io.catalog import check_fits_strings
from ..io.runs import file_sha256, partition_filename
from ..units import mag_sigma_to_flux_sigma, mag_to_nanomaggies
from .catalog_plan import CatalogOptions, PartitionSpec
from .fit_check import POOR_FIT_P, fit_check
from .quality import STATUS_OK, STATUS_OUT_OF_SUPPORT, STATUS_POOR_FIT, CheckedPhotometry, check_photometry, reason_counts
from .rows import flag_rows, posterior_rows
from .support import XSupport

if TYPE_CHECKING:
    from ..models.base import ForwardModel
    from .posterior import Posterior


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


def model_for(post: Posterior) -> ForwardModel:
    """The checkpoint's forward model from the per-process model cache.

    Shared with the simulator's cache (:func:`sedscale.simulate.load_model`),
    so a process builds the model's SSP library (seconds) only once.
    """
    from ..simulate import load_model

    options = post.metadata["model"].get("options") or {}
    return load_model((post.model_name, tuple(sorted(options.items()))))


def check_catalog_rows(part: pd.DataFrame, post: Posterior, options: CatalogOptions, z_range,
                       absent: Sequence[str] = ()) -> CheckedPhotometry:
    """Quality flags and flow x of canonical catalog rows, as every consumer of a run must see them.

    One place for the run's conversion options (error floor, S/N threshold), so
    that the partitions, the MCMC fallback and the benchmark condition the flow
    on the same x.

    Parameters
    ----------
    part : pandas.DataFrame
        Canonical rows (``z``, ``z_err``, ``flux_<band>``, ``flux_ivar_<band>`` in nanomaggies).
    post : Posterior
    options : CatalogOptions
        Resolved options (:func:`~sedscale.infer.catalog_plan.plan_catalog`).
    z_range : (float, float)
        Training redshift range.
    absent : sequence of str
        Bands the catalog does not have (masked, not named in reasons).
    """
    bands = post.bands
    return check_photometry(
        part[list(bands.columns("flux_"))].to_numpy(), part[list(bands.columns("flux_ivar_"))].to_numpy(),
        part["z"].to_numpy(), z_range, masked=post.band_masked, error_floor=options.error_floor or 0.0,
        bands=bands.bands, absent=tuple(absent), min_snr=options.min_snr or 0.0,
        z_err=part["z_err"].to_numpy(), redshift=post.redshift_input,
    )


def infer_frame(part: pd.DataFrame, post: Posterior, model: ForwardModel, support: XSupport | None,
                options: CatalogOptions, z_range, partition: int, keep: Sequence[str] = (),
                absent: Sequence[str] = ()) -> pa.Table:
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
    checked = check_catalog_rows(part, post, options, z_range, absent)
    rows, theta = posterior_rows(post, model, checked.x, part["z"].to_numpy(), checked.bad, checked.reason, support,
                                 options, partition, started)
    if options.fit_check:
        rows = with_fit_check(rows, post, model, theta, checked, part["z"].to_numpy())
    cols: dict[str, pa.Array] = {
        "id": pa.array(part["id"].to_numpy()), "z": pa.array(part["z"].to_numpy(np.float64)),
        "z_err": pa.array(part["z_err"].to_numpy(np.float64)), "z_source": pa.array(checked.z_source.tolist(), pa.string()),
    }
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


def with_fit_check(rows: pa.Table, post: Posterior, model: ForwardModel, theta: np.ndarray,
                   checked: CheckedPhotometry, z: np.ndarray) -> pa.Table:
    """``rows`` with the goodness-of-fit columns (:mod:`sedscale.infer.fit_check`); a poorly fit ``ok`` row becomes ``poor_fit``.

    Parameters
    ----------
    rows : pyarrow.Table
        :func:`~sedscale.infer.rows.posterior_rows` of the block.
    theta : ndarray, shape (n_good, n_samples, d)
        Its samples of the usable rows.
    checked : CheckedPhotometry
        The block's photometry as the flow saw it (used bands, magnitudes, errors with the floor).
    z : ndarray, shape (n,)
        Catalog redshifts (photometric-redshift flows: each sample's own).
    """
    good = np.flatnonzero(~checked.bad)
    n, bands = checked.bad.size, post.bands
    # Every measured band, also those masked for low S/N: a model far above a band's upper limit is no fit.
    measured = np.isfinite(checked.mag) & np.isfinite(checked.mag_sigma) & (checked.mag_sigma > 0)
    flux = np.where(measured, mag_to_nanomaggies(checked.mag), np.nan)[good]
    sigma = mag_sigma_to_flux_sigma(flux, checked.mag_sigma[good])
    k = post.n_model_params
    z_fit = theta[:, :, -1] if post.redshift_input is not None else z[good]
    fit = fit_check(model, theta[:, :, :k], z_fit, flux, sigma)
    cols = {f"model_mag_{b}": fit.model_mag[:, j] for j, b in enumerate(bands.bands)}
    cols.update(chi2_best=fit.chi2_best, ppc_p=fit.ppc_p)
    for name, values in cols.items():
        full = np.full(n, np.nan, dtype=np.float32)
        full[good] = values
        rows = rows.append_column(name, pa.array(full))
    n_bands = np.zeros(n, dtype=np.int16)
    n_bands[good] = fit.n_bands_fit
    rows = rows.append_column("n_bands_fit", pa.array(n_bands))
    labels = np.full(n, "", dtype=object)
    labels[good] = [f"poor_fit:p={p:.1e}" if p < POOR_FIT_P else "" for p in fit.ppc_p]
    return flag_rows(rows, labels, STATUS_POOR_FIT, over=(STATUS_OK, STATUS_OUT_OF_SUPPORT))


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
        return summary_frame([])
    indices = part["_partition"].unique()
    if indices.size != 1:
        raise SedscaleError(f"a Dask partition mixes catalog partitions {indices.tolist()}")
    index = int(indices[0])
    if spec.ascii_strings:
        check_fits_strings({name: part[name].to_numpy() for name in ("id", *spec.keep)})
    post = load_posterior_cached(spec.flow, spec.flow_sha256)
    support = load_support_cached(spec.support, spec.support_sha256) if spec.support else None
    table = infer_frame(part, post, model_for(post), support, spec.options, spec.z_range, index, spec.keep,
                        spec.absent_bands)
    written = write_table(Path(spec.work_dir) / partition_filename(index), table)
    status = table.column("status").to_numpy(zero_copy_only=False)
    reasons = reason_counts(table.column("reason").to_pylist())
    values, counts = np.unique(status, return_counts=True)
    return summary_frame([{
        "partition": index,
        **written,
        "status_counts": json.dumps(dict(zip(values.tolist(), counts.tolist())), sort_keys=True),
        "reason_counts": json.dumps(dict(reasons), sort_keys=True),
        "seconds": round(time.perf_counter() - start, 3),
    }])


_SUMMARY_DTYPES = {
    "partition": "int64", "file": "object", "rows": "int64", "sha256": "object", "bytes": "int64",
    "status_counts": "object", "reason_counts": "object", "seconds": "float64",
}


def summary_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(_SUMMARY_DTYPES)).astype(_SUMMARY_DTYPES)
