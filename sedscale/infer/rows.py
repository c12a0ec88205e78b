"""Per-galaxy posterior columns, shared by the photometric and spectral catalogs.

Given the flow inputs of a block of galaxies and which of them are usable,
:func:`posterior_rows` checks the training support, samples the posterior,
computes physical and derived quantities, summarizes them and assigns the
status and reason of every galaxy (see :mod:`sedscale.infer.catalog` for
the statuses).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .quality import STATUS_BAD_INPUT, STATUS_OK, STATUS_OUT_OF_SUPPORT, STATUS_TIMEOUT
from .summaries import clip_to_prior, derived_quantities, physical_quantities, summarize

if TYPE_CHECKING:
    from .catalog import CatalogOptions

#: Flow samples per seeded ``Posterior.draw`` call (galaxies x samples); the
#: seeds, hence the samples, depend on it.  The coupling sampler runs the flow
#: in cache-sized passes within a call (``CouplingSampler.ROWS_PER_PASS``).
ROWS_PER_PASS = 8192
#: A galaxy with none of at least this many first draws inside the prior is not redrawn.
MIN_DRAWS_HOPELESS = 100
#: Redshift of the probe that names the derived properties of a block without usable rows.
_PROBE_Z = 0.05


def _chunk_seed(seed: int, partition: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, partition, chunk]).generate_state(1)[0])


def draw_samples(post, x: np.ndarray, options: CatalogOptions, partition: int, started: float | None = None):
    """Sample all galaxies of a partition in batches, sharing one redraw time limit.

    Two passes: every galaxy first gets one draw of ``n_samples`` (samples
    outside the prior box rejected); then only the galaxies still short are
    topped up with the missing samples, under the partition's time limit.
    A galaxy none of whose first ``n_samples >= 100`` draws landed inside
    the prior (the flow returns NaN or leaves the box entirely, as for x
    far outside the training set) is not retried: redrawing cannot help
    and would spend the whole limit.

    Parameters
    ----------
    post : Posterior
    x : ndarray, shape (n, 11)
        Observations of good rows.
    options : CatalogOptions
    partition : int
        Partition index (with ``options.seed``, sets the random seeds).
    started : float, optional
        ``time.perf_counter()`` at which the time limit started (default now).

    Returns
    -------
    samples : ndarray, shape (n, n_samples, d), float32 (NaN where missing)
    n_accepted : ndarray of int, shape (n,)
    acceptance : ndarray, shape (n,)
        Fraction of the first pass's draws inside the prior box.
    hopeless : ndarray of bool, shape (n,)
        No first-pass draw inside the prior (not retried).
    """
    n, s = x.shape[0], options.n_samples
    started = time.perf_counter() if started is None else started
    batch = max(1, ROWS_PER_PASS // s)
    samples = np.full((n, s, len(post.param_names)), np.nan, dtype=np.float32)
    n_accepted = np.zeros(n, dtype=np.int64)
    acceptance = np.full(n, np.nan)
    n_chunks = -(-n // batch)
    for k in range(n_chunks):
        sl = slice(k * batch, (k + 1) * batch)
        res = post.draw(x[sl], s, batch_size=batch, max_time=0.0, seed=_chunk_seed(options.seed, partition, k))
        samples[sl], n_accepted[sl], acceptance[sl] = res.samples, res.n_accepted, res.acceptance
    hopeless = (n_accepted == 0) & (s >= MIN_DRAWS_HOPELESS)
    retry = np.flatnonzero((n_accepted < s) & ~hopeless)
    remaining = None if options.max_time is None else started + options.max_time - time.perf_counter()
    if retry.size and (remaining is None or remaining > 0):
        missing = int((s - n_accepted[retry]).max())
        res = post.draw(x[retry], missing, batch_size=max(1, ROWS_PER_PASS // missing), max_time=remaining,
                        seed=_chunk_seed(options.seed, partition, n_chunks))
        for j, g in enumerate(retry):
            take = min(int(res.n_accepted[j]), s - int(n_accepted[g]))
            samples[g, n_accepted[g] : n_accepted[g] + take] = res.samples[j, :take]
            n_accepted[g] += take
    return samples, n_accepted, acceptance, hopeless


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
        probe = model.derived((post.prior.low + post.prior.high)[None, :] / 2, np.array([_PROBE_Z]))
        derived = {k: np.full((good.size, options.n_derived), np.nan) for k in probe}
    derived = {k: v for k, v in derived.items() if k not in quantities}
    quantities.update(derived)
    stats = summarize(quantities)

    status = np.full(n, STATUS_OK, dtype=object)
    reason = np.asarray(reason, dtype=object).copy()
    status[bad] = STATUS_BAD_INPUT
    for j, i in enumerate(good):
        # A usable row keeps the labels of its masked bands (band-masked flows).
        labels = [reason[i]] if reason[i] else []
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
