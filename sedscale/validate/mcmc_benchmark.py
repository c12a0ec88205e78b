"""The ANPE-vs-MCMC benchmark's unit of work, on Dask workers.

:func:`mcmc_task` samples the amortized posterior of one galaxy and runs the
MCMC of :mod:`sedscale.validate.mcmc` on it, timing both with the same clock
in the same process, and compares the marginals; :func:`run_mcmc_benchmark`
maps it over galaxies on a cluster.  Used by ``bin/run_validate --mcmc``,
``python -m sedscale.bench mcmc`` and ``bin/run_catalog --mcmc-subset``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from .mcmc import (
    MCMCConfig,
    PhotometryLogPosterior,
    compare_marginals,
    run_mcmc,
    walkers_from_samples,
)

__all__ = ["BenchmarkResult", "GalaxyObservation", "load_posterior", "mcmc_task", "run_mcmc_benchmark"]

#: MCMC samples kept per galaxy for corner plots.
PLOT_SAMPLES = 20_000


@dataclass(frozen=True)
class GalaxyObservation:
    """What an MCMC task needs about one galaxy (small and picklable).

    Attributes
    ----------
    galaxy_id : int
    flux, flux_sigma : tuple of float
        ugriz fluxes and 1-sigma errors, nanomaggies.
    z : float
    x : tuple of float
        The flow's conditioning vector (the checkpoint's ``x_columns``).
    theta_true : tuple of float or None
        True parameters of a simulated galaxy.
    """

    galaxy_id: int
    flux: tuple
    flux_sigma: tuple
    z: float
    x: tuple
    theta_true: tuple | None = None


@dataclass
class BenchmarkResult:
    """Outcome of :func:`mcmc_task` for one galaxy.

    Attributes
    ----------
    galaxy_id : int
    summary : dict
        MCMC diagnostics (:meth:`MCMCResult.summary`), ANPE timings
        (``anpe_wall_s``, ``anpe_cpu_s``, ``anpe_samples``), ``speedup_cpu``
        and ``speedup_wall`` (MCMC / ANPE), worker name, and comparison
        extremes (``max_abs_delta_median_sigma``, ``min_width_ratio``,
        ``max_width_ratio``, ``min_ks_p``).
    comparison : pandas.DataFrame
        :func:`compare_marginals` of ANPE against MCMC.
    mcmc_samples : ndarray, shape (m, d)
        MCMC samples thinned by the autocorrelation time (independent draws).
    anpe_samples : ndarray, shape (n, d)
    mcmc_plot_samples : ndarray, shape (<= PLOT_SAMPLES, d)
        Evenly thinned post-burn-in MCMC samples for plots (correlated).
    """

    galaxy_id: int
    summary: dict
    comparison: pd.DataFrame
    mcmc_samples: np.ndarray
    anpe_samples: np.ndarray = field(repr=False)
    mcmc_plot_samples: np.ndarray = field(repr=False)


@lru_cache(maxsize=2)
def load_posterior(flow_path: str):
    """The checkpoint and its forward model, loaded once per worker process."""
    from ..infer import Posterior

    return Posterior.load(flow_path)


def mcmc_task(
    galaxy: GalaxyObservation, flow_path: str, config: MCMCConfig, n_anpe_samples: int = 10_000
) -> BenchmarkResult:
    """Amortized and MCMC posterior of one galaxy, timed side by side (runs on a worker).

    The posterior and the forward model are loaded and warmed up (one flow
    sample, one model call) before any clock starts, so both timings are
    steady-state costs per galaxy in this process.

    Parameters
    ----------
    galaxy : GalaxyObservation
    flow_path : str
        Checkpoint directory (readable by the worker).
    config : MCMCConfig
    n_anpe_samples : int
        Amortized-posterior samples drawn (SEDflow: 10,000).
    """
    post = load_posterior(str(flow_path))
    model = post.model
    x = np.asarray(galaxy.x, dtype=np.float32)[None, :]
    post.sample(x, 16, seed=config.seed)
    model.photometry(model.prior.sample(2, np.random.default_rng(0), np.full(2, galaxy.z)), np.full(2, galaxy.z))

    wall0, cpu0 = time.perf_counter(), time.process_time()
    draw = post.draw(x, n_anpe_samples, seed=config.seed)
    anpe_wall, anpe_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    anpe = draw.samples[0].astype(float)

    logpost = PhotometryLogPosterior(model, galaxy.flux, galaxy.flux_sigma, galaxy.z)
    start = None
    if config.init == "anpe":
        start = walkers_from_samples(logpost, anpe, config.n_walkers, np.random.default_rng(config.seed))
    result = run_mcmc(logpost, config, start)
    mcmc = result.independent_samples()
    comparison = compare_marginals(mcmc, anpe, post.param_names)
    summary = {
        "galaxy_id": int(galaxy.galaxy_id),
        "z": float(galaxy.z),
        "worker": _worker_name(),
        **result.summary(),
        "mcmc_init": "anpe" if start is not None else "prior",
        "anpe_samples": int(n_anpe_samples),
        "anpe_complete": bool(draw.complete[0]),
        "anpe_wall_s": anpe_wall,
        "anpe_cpu_s": anpe_cpu,
        "speedup_wall": result.wall_s / anpe_wall if anpe_wall > 0 else float("nan"),
        "speedup_cpu": result.cpu_s / anpe_cpu if anpe_cpu > 0 else float("nan"),
        "max_abs_delta_median_sigma": float(np.nanmax(np.abs(comparison["delta_median_sigma"]))),
        "min_width_ratio": float(np.nanmin(comparison["width_ratio"])),
        "max_width_ratio": float(np.nanmax(comparison["width_ratio"])),
        "min_ks_p": float(np.nanmin(comparison["ks_p"])),
        "n_mcmc_independent": int(mcmc.shape[0]),
    }
    for j, name in enumerate(result.names):
        summary[f"tau_{name}"] = float(result.tau[j])
        summary[f"rhat_{name}"] = float(result.rhat[j])
    step = max(1, -(-result.samples.shape[0] // PLOT_SAMPLES))
    return BenchmarkResult(galaxy.galaxy_id, summary, comparison, mcmc, anpe, result.samples[::step])


def _worker_name() -> str:
    """Address of the Dask worker running this task, else the host name."""
    import socket

    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return socket.gethostname()


def run_mcmc_benchmark(client, galaxies, flow_path: str, config: MCMCConfig, n_anpe_samples: int = 10_000, log=print):
    """Run :func:`mcmc_task` for every galaxy on the Dask workers (one task each).

    Parameters
    ----------
    client : distributed.Client or None
        None runs the galaxies one after another in this process.
    galaxies : sequence of GalaxyObservation
    flow_path : str
        Checkpoint directory, readable by the workers.
    config : MCMCConfig
    n_anpe_samples : int
    log : callable
        Progress messages.

    Returns
    -------
    list of BenchmarkResult
        In the order of ``galaxies``.
    """
    galaxies = list(galaxies)
    if client is None:
        results: list = []
        for g in galaxies:
            results.append(mcmc_task(g, flow_path, config, n_anpe_samples))
            log(_progress_line(results[-1]))
        return results
    from distributed import as_completed

    futures = client.map(
        mcmc_task, galaxies, flow_path=str(flow_path), config=config, n_anpe_samples=n_anpe_samples, pure=False
    )
    index = {f.key: i for i, f in enumerate(futures)}
    results = [None] * len(futures)
    for fut in as_completed(futures):
        res = fut.result()
        results[index[fut.key]] = res
        log(_progress_line(res))
    return results


def _progress_line(res: BenchmarkResult) -> str:
    s = res.summary
    return (
        f"mcmc galaxy {res.galaxy_id}: {s['mcmc_wall_s']:.1f} s wall ({s['evals_per_s']:.0f} evals/s), "
        f"R-hat {s['max_rhat']:.3f}, {s['iter_per_tau']:.1f} iter/tau, converged={s['converged']}; "
        f"ANPE {s['anpe_wall_s']:.3f} s; speed-up {s['speedup_cpu']:.0f}x (CPU)"
    )
