"""Benchmark of the spectral (DIGS) pipeline: spectra simulated per second per core, posteriors per second.

    python -m sedscale.bench spectra [--n 2000] [--flow checkpoints/delayed_tau_spectra] [--n-post 500]

1. **Simulation, one thread.** Noiseless DIGS spectra of the ``delayed_tau``
   model (SPS on the 50 km/s library grid with nebular emission, Calzetti
   dust, 350 km/s smoothing and resampling to 138 elements), float32, after
   a warm-up; split into the rest-frame SPS and the projection.
2. **Posteriors, one thread** (with ``--flow``): ``--n-post`` simulated
   spectra with the checkpoint's noise, 1,000 samples each, then the derived
   properties of the samples: the per-spectrum cost of a catalog.
3. **Spectral catalog on a LocalCluster** (with ``--flow``, ``--workers``):
   the same spectra as a spectra table through ``run_spectral_catalog``
   (reading, x, sampling, derived properties, posterior-predictive chi2).
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..cli import run_guarded
from ..cluster import cluster_config_from_dict, limit_threads, open_client


def simulation_rate(n: int, seed: int = 0) -> dict:
    """Spectra per second of one thread, total and by stage."""
    from ..models import get_model
    from ..simulate.config import load_spectrum_operator

    model = get_model("delayed_tau")
    op = load_spectrum_operator()
    rng = np.random.default_rng(seed)
    theta = model.prior.sample(n, rng)
    z = rng.uniform(0.01, 0.06, n)
    op.model_spectra(model, theta[:64], z[:64])
    t0 = time.perf_counter()
    _, lum = model.rest_spectrum(theta, z, wave_edges=op.wave_edges, dtype=np.float32)
    t1 = time.perf_counter()
    op.project(lum)
    t2 = time.perf_counter()
    return {"n": n, "spectra_per_s": n / (t2 - t0), "sps_s": t1 - t0, "project_s": t2 - t1}


def _test_spectra(post, n: int, seed: int):
    from ..observe.spectral_noise import spectral_noise_model
    from ..validate.spectra import simulate_spectral_test_set, training_redshift

    sigma_star = post.metadata.get("sigma_star_kms")
    return simulate_spectral_test_set(post.model, n, seed, spectral_noise_model(post.metadata["spectral_noise"]),
                                      training_redshift(post.metadata), float(sigma_star[1]) if sigma_star else None)


def posterior_rate(flow: str, n: int, n_samples: int = 1000, seed: int = 1) -> dict:
    """Spectra per second of one thread: flow sampling plus derived properties."""
    from ..infer import Posterior
    from ..infer.summaries import clip_to_prior, derived_quantities
    from ..observe.layout import SPECTRUM_X_COLUMNS

    post = Posterior.load(flow, x_columns=SPECTRUM_X_COLUMNS)
    test = _test_spectra(post, n, seed)
    x = test["x"][test["valid"]]
    post.draw(x[:8], n_samples, seed=0)
    t0 = time.perf_counter()
    res = post.draw(x, n_samples, seed=seed)
    t1 = time.perf_counter()
    theta = clip_to_prior(res.samples, post.prior.low, post.prior.high)
    derived_quantities(post.model, theta, test["z"][test["valid"]])
    t2 = time.perf_counter()
    m = x.shape[0]
    return {"n": m, "per_s": m / (t2 - t0), "sample_ms": 1e3 * (t1 - t0) / m, "derived_ms": 1e3 * (t2 - t1) / m}


def catalog_rate(flow: str, n: int, workers: int, n_samples: int = 1000, seed: int = 2) -> dict:
    """Spectra per second of ``run_spectral_catalog`` on a LocalCluster, from a spectra table."""
    from ..infer import Posterior
    from ..infer.catalog import CatalogOptions
    from ..infer.spectra import read_spectral_inputs, run_spectral_catalog
    from ..io.sdss import SDSSSpectrum, spectra_table
    from ..observe.layout import SPECTRUM_X_COLUMNS
    from ..observe.spectra import observed_flambda

    post = Posterior.load(flow, x_columns=SPECTRUM_X_COLUMNS)
    test = _test_spectra(post, n, seed)
    m = test["spec_true"].shape[1]
    rng = np.random.default_rng(seed)
    # The reader's unit: rest-frame flux, (1 + z) times the observed f_lambda.
    flux = (1 + test["z"])[:, None] * observed_flambda(test["spec_true"], test["z"])
    sigma = 0.01 * np.abs(flux)
    noisy = flux + sigma * rng.standard_normal(flux.shape)
    rows = [
        SDSSSpectrum(id=f"sim{i}", path="", z=test["z"][i], flux=noisy[i], ivar=1 / sigma[i] ** 2,
                     good=np.ones(m, bool))
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spectra.parquet"
        spectra_table(rows).to_parquet(path)
        cluster = cluster_config_from_dict(
            {"type": "local", "n_workers": workers, "threads_per_worker": 1, "dashboard_address": ":0"}
        )
        with open_client(cluster) as client:
            client.wait_for_workers(workers)
            options = CatalogOptions(n_samples=n_samples)
            obs = read_spectral_inputs([path])
            run_spectral_catalog(obs.take(slice(0, 8)), flow, options, client)
            t0 = time.perf_counter()
            table = run_spectral_catalog(read_spectral_inputs([path]), flow, options, client)
            wall = time.perf_counter() - t0
    return {"n": table.num_rows, "workers": workers, "wall_s": wall, "per_s": table.num_rows / wall}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sedscale.bench spectra", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="spectra simulated for the simulation rate (default 2000)")
    p.add_argument("--flow", help="spectral checkpoint for the posterior and catalog rates")
    p.add_argument("--n-post", type=int, default=500, help="spectra for the posterior rates (default 500)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers for the catalog rate (default 2)")
    args = p.parse_args(argv)

    def run(_):
        limit_threads(1)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        print(f"# sedscale.bench spectra  {stamp}  {platform.node()}  {platform.machine()}")
        sim = simulation_rate(args.n)
        print(f"simulation (1 thread, float32): {sim['spectra_per_s']:,.0f} spectra/s "
              f"(SPS {sim['sps_s'] / sim['n'] * 1e3:.2f} ms, projection {sim['project_s'] / sim['n'] * 1e3:.3f} ms per spectrum)")
        if args.flow:
            post = posterior_rate(args.flow, args.n_post)
            print(f"posteriors (1 thread, 1000 samples): {post['per_s']:,.1f} spectra/s "
                  f"(sampling {post['sample_ms']:.1f} ms, derived {post['derived_ms']:.1f} ms per spectrum)")
            cat = catalog_rate(args.flow, args.n_post, args.workers)
            print(f"catalog ({cat['workers']} workers, 1000 samples, PPC chi2): {cat['per_s']:,.1f} spectra/s "
                  f"({cat['n']} spectra in {cat['wall_s']:.1f} s)")
        return 0

    return run_guarded(run, argv, "bench spectra")
