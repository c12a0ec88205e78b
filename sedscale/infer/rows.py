"""Per-galaxy posterior columns, shared by the photometric and spectral catalogs.

Given the flow inputs of a block of galaxies and which of them are usable,
:func:`posterior_rows` checks the training support, samples the posterior,
computes physical and derived quantities, summarizes them and assigns the
status and reason of every galaxy (see :mod:`sedscale.infer.catalog` for
the statuses).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import fields
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa

from .contraction import DERIVED_CONTRACTION, contraction_columns, with_log_ssfr
from .importance import ImportanceResult, importance_sample, trusted
from .posterior import SampleResult
from .quality import (
    METHOD_ANPE,
    METHOD_IS,
    STATUS_BAD_INPUT,
    STATUS_LOW_IS_EFFICIENCY,
    STATUS_OK,
    STATUS_OUT_OF_SUPPORT,
    STATUS_TIMEOUT,
)
from .summaries import clip_to_prior, derived_quantities, physical_quantities, summarize
from .zprior import DEFAULT_Z_PRIOR, reweight_redshift_prior

if TYPE_CHECKING:
    from ..models.base import ForwardModel
    from .catalog_plan import CatalogOptions
    from .posterior import Posterior

#: Flow samples per seeded ``Posterior.draw`` call (galaxies x samples); the
#: seeds, hence the samples, depend on it.  The coupling sampler runs the flow
#: in cache-sized passes within a call (``CouplingSampler.ROWS_PER_PASS``).
ROWS_PER_PASS = 8192
#: Redshift of the probe that names the derived properties of a block without usable rows.
_PROBE_Z = 0.05
#: Third key of the random stream of a partition's redshift-prior resampling (apart from its sampling seeds).
_Z_PRIOR_STREAM = 0x2F


def _chunk_seed(seed: int, partition: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, partition, chunk]).generate_state(1)[0])


def draw_samples(post: Posterior, x: np.ndarray, options: CatalogOptions, partition: int, started: float | None = None,
                 outside: np.ndarray | None = None) -> SampleResult:
    """Sample all galaxies of a partition in seeded chunks, under one redraw time limit.

    Every galaxy gets one draw of ``n_samples`` (draws outside the prior box
    or non-finite rejected), then redraws within its own budget of flow draws
    (``options.max_proposals`` per sample; ``options.max_proposals_outside``
    for galaxies outside the training support), so an un-sampleable galaxy
    stops on its own and the rest of the partition goes on.  The partition's
    ``options.max_time`` remains a wall-clock guard over the redraws.

    Parameters
    ----------
    post : Posterior
    x : ndarray, shape (n, dx)
        Observations of good rows.
    options : CatalogOptions
    partition : int
        Partition index (with ``options.seed``, sets the random seeds).
    started : float, optional
        ``time.perf_counter()`` at which the time limit started (default now).
    outside : ndarray of bool, shape (n,), optional
        Galaxies already flagged outside the training support.

    Returns
    -------
    SampleResult
        Per galaxy: samples (n, n_samples, d) float32 (NaN where missing),
        ``n_accepted``, ``acceptance``, ``n_drawn``, ``n_nonfinite``,
        ``timed_out`` (guard) and ``exhausted`` (budget) flags.
    """
    n, s = x.shape[0], options.n_samples
    started = time.perf_counter() if started is None else started
    batch = max(1, ROWS_PER_PASS // s)
    budget = np.full(n, float(options.max_proposals))
    if outside is not None:
        budget[np.asarray(outside, dtype=bool)] = min(options.max_proposals, options.max_proposals_outside)
    parts = []
    for k in range(-(-n // batch)):
        sl = slice(k * batch, (k + 1) * batch)
        remaining = None if options.max_time is None else max(0.0, started + options.max_time - time.perf_counter())
        parts.append(post.draw(x[sl], s, batch_size=batch, max_time=remaining, max_proposals=budget[sl],
                               seed=_chunk_seed(options.seed, partition, k)))
    if not parts:
        return post.draw(x, s)
    return SampleResult(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(SampleResult)))


class SampleQuantities(NamedTuple):
    """Per-galaxy sample arrays of a block and which of them are what (:func:`sample_quantities`)."""

    values: dict
    derived: list
    assessed: list


def sample_quantities(post: Posterior, model: ForwardModel, theta: np.ndarray, z: np.ndarray, n_derived: int) -> SampleQuantities:
    """Parameters, physical parameters and derived properties of posterior samples.

    Parameters
    ----------
    post : Posterior
    model : ForwardModel
    theta : ndarray, shape (n, n_samples, d)
        Samples inside the prior box (NaN where missing).
    z : ndarray, shape (n,)
        The galaxies' redshifts; ignored by a photometric-redshift flow,
        whose every sample has its own (the last parameter).
    n_derived : int
        Leading samples per galaxy used for the derived properties.

    Returns
    -------
    SampleQuantities
        ``values``: str -> ndarray (n, n_samples or n_derived); ``derived``:
        the derived properties among them (stored as samples with the
        parameters); ``assessed``: the quantities whose posterior contraction
        is reported.
    """
    quantities = {name: theta[:, :, j] for j, name in enumerate(post.param_names)}
    physical = post.to_physical(theta)
    quantities.update(physical_quantities(physical, post.param_names))
    d = post.n_model_params
    sample_z = theta[:, :n_derived, d] if d < theta.shape[2] else z
    derived = derived_quantities(model, theta[:, :n_derived, :d], sample_z)
    if not derived:
        # No sampled galaxy here: NaN columns of the same names keep all blocks' schemas equal.
        probe = model.derived((post.prior.low[:d] + post.prior.high[:d])[None, :] / 2, np.array([_PROBE_Z]))
        derived = {k: np.full((theta.shape[0], n_derived), np.nan) for k in probe}
    derived = with_log_ssfr({k: v for k, v in derived.items() if k not in quantities})
    quantities.update(derived)
    # Physical parameters (not the sampling coordinates of an SFH simplex) and the derived SFR and
    # age; mass is left out: every galaxy's photometry measures it.
    assessed = [p for p in post.param_names if p in physical and p != "log_mass" and np.ndim(physical[p]) == 2]
    assessed += [q for q in DERIVED_CONTRACTION if q in quantities]
    return SampleQuantities(quantities, list(derived), assessed)


def summary_columns(post: Posterior, model: ForwardModel, quantities: SampleQuantities, z: np.ndarray, good: np.ndarray, n: int,
                    n_samples, n_draws, acceptance, save_samples: bool) -> dict[str, pa.Array]:
    """Sampling, summary, contraction and (optionally) sample columns of ``n`` rows, ``good`` of them sampled.

    Parameters
    ----------
    quantities : SampleQuantities
        :func:`sample_quantities` of the ``good`` rows.
    z : ndarray, shape (len(good),)
    good : ndarray of int
        Rows with samples; the others get NaN / 0 / "".
    n_samples, n_draws, acceptance : array_like, shape (len(good),)
        Samples kept, flow draws (or model evaluations) spent, acceptance.
    save_samples : bool
        Add ``samples_<quantity>`` list columns.
    """
    stats = summarize(quantities.values)
    contraction = contraction_columns(
        model, {q: stats[f"{q}_p84"] - stats[f"{q}_p16"] for q in quantities.assessed}, z, stats.get("log_mass_p50"),
    )

    def full(values, dtype=np.float32, fill=np.nan):
        out = np.full(n, fill, dtype=dtype)
        out[good] = values
        return out

    cols: dict[str, pa.Array] = {
        "n_samples": pa.array(full(n_samples, np.int32, 0)),
        "n_draws": pa.array(full(n_draws, np.int32, 0)),
        "acceptance": pa.array(full(acceptance)),
    }
    for name, values in stats.items():
        cols[name] = pa.array(full(values))
    for name, values in contraction.items():
        if name == "unconstrained":
            cols[name] = pa.array(full(values, object, "").tolist(), pa.string())
        else:
            cols[name] = pa.array(full(values))
    if save_samples:
        for name in list(post.param_names) + quantities.derived:
            values = quantities.values[name]
            block = np.full((n, values.shape[1]), np.nan, dtype=np.float32)
            block[good] = values
            cols[f"samples_{name}"] = pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), values.shape[1])
    return cols


def _short_reason(drawn: SampleResult, j: int, n_samples: int) -> str:
    """Why galaxy ``j`` has fewer than ``n_samples`` samples (a ``sampling_timeout`` reason)."""
    if drawn.n_accepted[j] == 0:
        return "no_samples_in_prior"
    got = f"{drawn.n_accepted[j]}/{n_samples}_samples"
    if drawn.exhausted[j] and not drawn.timed_out[j]:
        return f"low_acceptance:{got}_from_{drawn.n_drawn[j]}_draws"
    return f"sampling_timeout:{got}"


#: A posterior "piles up" at a prior bound when this fraction of its samples lie within
#: :data:`EDGE_WIDTH` of the bound (an unconstrained, flat posterior puts ~1% there).
EDGE_MASS = 0.16
#: ... of the prior box's width.
EDGE_WIDTH = 0.01


def edge_labels(theta: np.ndarray, post: Posterior) -> np.ndarray:
    """Per galaxy, ``at_prior_edge:<name>,...`` for the physical parameters whose samples pile up at a prior bound.

    The answer is then shaped by where the prior stops (e.g. the smallest
    mass formed of the photometric flows, 10^7 Msun, for a dwarf), not by
    the data alone.  The unit-cube coordinates of a non-parametric SFH
    (``frac_u*``) and a photometric-redshift flow's z are left out: their
    bounds are ordinary answers.

    Parameters
    ----------
    theta : ndarray, shape (n, n_samples, d)
    post : Posterior

    Returns
    -------
    ndarray of str (object), shape (n,)
        ``""`` where no parameter is at an edge.
    """
    low, high = np.asarray(post.prior.low), np.asarray(post.prior.high)
    margin = EDGE_WIDTH * (high - low)
    with np.errstate(invalid="ignore"):
        at_low = np.mean(theta - low < margin, axis=1) >= EDGE_MASS
        at_high = np.mean(high - theta < margin, axis=1) >= EDGE_MASS
    names = [k for k, name in enumerate(post.param_names[: post.n_model_params]) if not name.startswith("frac_u")]
    out = np.full(theta.shape[0], "", dtype=object)
    for i in np.flatnonzero((at_low | at_high)[:, names].any(axis=1) if names else []):
        out[i] = "at_prior_edge:" + ",".join(
            f"{post.param_names[k]}={'low' if at_low[i, k] else 'high'}" for k in names if at_low[i, k] or at_high[i, k])
    return out


def flag_rows(table: pa.Table, labels: np.ndarray, status: str, over: tuple[str, ...] = (STATUS_OK,)) -> pa.Table:
    """``table`` with ``labels[i]`` (where not empty) appended to row i's ``reason``; its ``status`` becomes
    ``status`` where it was one of ``over``.

    Parameters
    ----------
    table : pyarrow.Table
        Rows with ``status`` and ``reason`` columns.
    labels : ndarray of str (object), shape (n,)
        ``""`` for rows left alone.
    status : str
    over : tuple of str
        The statuses ``status`` replaces (a worse one, e.g. ``bad_input``, stays).
    """
    old_status = np.asarray(table.column("status").to_pylist(), dtype=object)
    reason = np.asarray(table.column("reason").to_pylist(), dtype=object)
    flagged = np.flatnonzero(labels != "")
    for i in flagged:
        reason[i] = ";".join(filter(None, [reason[i], labels[i]]))
    new_status = np.where((labels != "") & np.isin(old_status, over), status, old_status)
    table = table.set_column(table.schema.get_field_index("status"), "status", pa.array(new_status.tolist(), pa.string()))
    return table.set_column(table.schema.get_field_index("reason"), "reason", pa.array(reason.tolist(), pa.string()))


#: Columns of an importance-sampled run (:func:`_importance_corrected`).
IMPORTANCE_COLUMNS = ("is_ess", "is_efficiency", "log_evidence", "log_evidence_err")
_IMPORTANCE_STREAM = 3


def _importance_corrected(post: Posterior, model: ForwardModel, x: np.ndarray, theta: np.ndarray,
                          select: np.ndarray, options, partition: int) -> ImportanceResult:
    """Replace the flow samples ``theta`` (in place) of the ``select`` galaxies by importance-sampled ones.

    Galaxies left without effective samples keep the flow's samples (and
    are flagged by their efficiency, 0).  Returns the per-galaxy results
    (NaN efficiency where not sampled).
    """
    n = theta.shape[0]
    result = ImportanceResult(samples=theta, ess=np.full(n, np.nan), efficiency=np.full(n, np.nan),
                              log_evidence=np.full(n, np.nan), log_evidence_err=np.full(n, np.nan),
                              flow_acceptance=np.full(n, np.nan))
    todo = np.flatnonzero(select)
    if todo.size:
        got = importance_sample(post, model, x[todo], n_samples=options.n_samples,
                                error_floor=options.error_floor or 0.0, n_proposals=options.n_proposals,
                                seed=_chunk_seed(options.seed, partition, _IMPORTANCE_STREAM))
        for name in ("ess", "efficiency", "log_evidence", "log_evidence_err", "flow_acceptance"):
            getattr(result, name)[todo] = getattr(got, name)
        have = todo[got.ess > 0]
        theta[have] = clip_to_prior(got.samples[got.ess > 0], post.prior.low, post.prior.high)
    return result


def posterior_rows(post: Posterior, model: ForwardModel, x, z, bad, reason, support, options, partition: int,
                   started: float | None = None, support_x=None):
    """Status, support, sampling and summary columns of a block of galaxies.

    Parameters
    ----------
    post : Posterior
    model : ForwardModel
        The checkpoint's forward model (derived properties).
    x : ndarray (n, dx)
        Flow inputs (rows where ``bad`` are ignored).
    z : ndarray (n,)
        Redshifts (derived properties cap ages at the age of the universe).
    bad : ndarray of bool (n,)
        Unusable inputs: status ``bad_input``, no posterior.
    reason : ndarray of object (n,)
        Reasons of the bad rows (kept); the others get theirs here.
    support : XSupport or None
    options : CatalogOptions
    partition : int
        Block index (seeds).
    started : float, optional
        ``time.perf_counter()`` when the block's time limit started.
    support_x : ndarray (n, k), optional
        What ``support`` compares, when not x itself.

    Returns
    -------
    table : pyarrow.Table
        ``status``, ``reason``, ``support_score``, ``z_prior_ess`` (photometric-redshift
        flows: effective sample size of the redshift-prior weights), ``n_samples``,
        ``n_draws``, ``acceptance``, summaries ``<quantity>_<stat>`` and, with
        ``options.save_samples``, ``samples_<quantity>`` list columns.
    theta : ndarray (n_good, n_samples, d)
        The samples of the usable rows (clipped to the prior box; NaN where missing).
    """
    started = time.perf_counter() if started is None else started
    n = bad.size
    good = np.flatnonzero(~bad)
    xg = np.asarray(x, dtype=np.float32)[good]
    score = np.full(n, np.nan)
    outside = np.zeros(n, dtype=bool)
    support_reason = np.full(n, "", dtype=object)
    if support is not None and good.size:
        sx = xg if support_x is None else np.asarray(support_x)[good]
        score[good], outside[good], support_reason[good] = support.check(sx)
    drawn = draw_samples(post, xg, options, partition, started, outside[good])
    samples, n_acc, acc = drawn.samples, drawn.n_accepted, drawn.acceptance
    timed_out = n_acc < options.n_samples
    theta = clip_to_prior(samples, post.prior.low, post.prior.high)
    z_good = np.asarray(z, dtype=float)[good]
    prior_ess = None
    if post.training_redshift is not None:
        theta, prior_ess = reweight_redshift_prior(theta, post.training_redshift, options.z_prior or DEFAULT_Z_PRIOR,
                                                   np.random.default_rng([options.seed, partition, _Z_PRIOR_STREAM]))
        # Prior widths (contraction) are read at the posterior-median redshift (NaN without samples).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            z_good = np.nanmedian(theta[:, :, -1], axis=1) if good.size else z_good
    importance = None
    if options.n_proposals:
        select = ~timed_out & (outside[good] if options.importance_fallback else True)
        importance = _importance_corrected(post, model, xg, theta, select, options, partition)
    # The weights, not the flow, make the posterior of an importance-sampled galaxy that passes the threshold.
    served_by_is = np.zeros(good.size, dtype=bool) if importance is None else trusted(importance.efficiency, importance.ess)
    quantities = sample_quantities(post, model, theta, z_good, options.n_derived)

    edges = edge_labels(theta, post) if good.size else np.empty(0, dtype=object)
    status = np.full(n, STATUS_OK, dtype=object)
    reason = np.asarray(reason, dtype=object).copy()
    status[bad] = STATUS_BAD_INPUT
    for j, i in enumerate(good):
        # A usable row keeps the labels of its masked bands (band-masked flows).
        labels = [reason[i]] if reason[i] else []
        if timed_out[j]:
            status[i] = STATUS_TIMEOUT
            labels.append(_short_reason(drawn, j, options.n_samples))
        if outside[i]:
            if not timed_out[j] and not served_by_is[j]:
                status[i] = STATUS_OUT_OF_SUPPORT
            labels.append(support_reason[i])
        if edges[j]:
            labels.append(edges[j])
        if importance is not None and np.isfinite(importance.efficiency[j]) and not served_by_is[j]:
            status[i] = STATUS_LOW_IS_EFFICIENCY
            labels.append(f"low_is_efficiency:{importance.efficiency[j]:.2g},ess={importance.ess[j]:.0f}")
        reason[i] = ";".join(labels)

    method = np.full(n, "", dtype=object)
    method[good] = np.where(served_by_is, METHOD_IS, METHOD_ANPE)
    cols: dict[str, pa.Array] = {
        "status": pa.array(status.tolist(), pa.string()),
        "reason": pa.array(reason.tolist(), pa.string()),
        "method": pa.array(method.tolist(), pa.string()),
        "support_score": pa.array(score.astype(np.float32)),
    }
    if prior_ess is not None:
        ess = np.full(n, np.nan, dtype=np.float32)
        ess[good] = prior_ess
        cols["z_prior_ess"] = pa.array(ess)
    if importance is not None:
        for name in IMPORTANCE_COLUMNS:
            values = np.full(n, np.nan)
            values[good] = getattr(importance, name.removeprefix("is_"))
            cols[name] = pa.array(values.astype(np.float32 if name.startswith("is_") else np.float64))
    cols.update(summary_columns(post, model, quantities, z_good, good, n, n_acc,
                                drawn.n_drawn, acc, options.save_samples))
    return pa.table(cols), theta
