"""Per-galaxy posterior columns, shared by the photometric and spectral catalogs.

Given the flow inputs of a block of galaxies and which of them are usable,
:func:`posterior_rows` checks the training support, samples the posterior,
computes physical and derived quantities, summarizes them and assigns the
status and reason of every galaxy (see :mod:`sedscale.infer.catalog` for
the statuses).
"""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from .quality import STATUS_BAD_INPUT, STATUS_OK, STATUS_OUT_OF_SUPPORT, STATUS_TIMEOUT
from .summaries import clip_to_prior, derived_quantities, physical_quantities, summarize


def posterior_rows(post, model, x, z, bad, reason, support, options, partition: int, started: float | None = None,
                   support_x=None):
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
        ``status``, ``reason``, ``support_score``, ``n_samples``,
        ``acceptance``, summaries ``<quantity>_<stat>`` and, with
        ``options.save_samples``, ``samples_<quantity>`` list columns.
    theta : ndarray (n_good, n_samples, d)
        The samples of the usable rows (clipped to the prior box; NaN where missing).
    """
    from .catalog import draw_samples

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
    samples, n_acc, acc, hopeless = draw_samples(post, xg, options, partition, started)
    timed_out = n_acc < options.n_samples
    theta = clip_to_prior(samples, post.prior.low, post.prior.high)
    quantities = {name: theta[:, :, j] for j, name in enumerate(post.param_names)}
    quantities.update(physical_quantities(post.to_physical(theta), post.param_names))
    derived = derived_quantities(model, theta[:, : options.n_derived], np.asarray(z, dtype=float)[good])
    if not derived:
        # No sampled galaxy here: NaN columns of the same names keep all blocks' schemas equal.
        zmid = np.array([float(np.nanmean(z)) if np.isfinite(z).any() else 0.03])
        probe = model.derived((post.prior.low + post.prior.high)[None, :] / 2, np.clip(zmid, 1e-3, None))
        derived = {k: np.full((good.size, options.n_derived), np.nan) for k in probe}
    derived = {k: v for k, v in derived.items() if k not in quantities}
    quantities.update(derived)
    stats = summarize(quantities)

    status = np.full(n, STATUS_OK, dtype=object)
    reason = np.asarray(reason, dtype=object).copy()
    status[bad] = STATUS_BAD_INPUT
    for j, i in enumerate(good):
        labels = []
        if timed_out[j]:
            status[i] = STATUS_TIMEOUT
            labels.append("no_samples_in_prior" if hopeless[j] else f"sampling_timeout:{n_acc[j]}/{options.n_samples}_samples")
        if outside[i]:
            if not timed_out[j]:
                status[i] = STATUS_OUT_OF_SUPPORT
            labels.append(support_reason[i])
        reason[i] = ";".join(labels)

    def full(values, dtype=np.float32, fill=np.nan):
        out = np.full(n, fill, dtype=dtype)
        out[good] = values
        return out

    cols: dict[str, pa.Array] = {
        "status": pa.array(status.tolist(), pa.string()),
        "reason": pa.array(reason.tolist(), pa.string()),
        "support_score": pa.array(score.astype(np.float32)),
        "n_samples": pa.array(full(n_acc, np.int32, 0)),
        "acceptance": pa.array(full(acc)),
    }
    for name, values in stats.items():
        cols[name] = pa.array(full(values))
    if options.save_samples:
        for name in list(post.param_names) + list(derived):
            values = quantities[name]
            block = np.full((n, values.shape[1]), np.nan, dtype=np.float32)
            block[good] = values
            cols[f"samples_{name}"] = pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), values.shape[1])
    return pa.table(cols), theta
