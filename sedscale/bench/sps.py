"""Benchmark of the batched SPS forward models: ``python -m sedscale.bench sps``.

Prints photometric models per second on ONE core (BLAS and OpenMP pinned to
one thread) for each model in float32 and float64, and the largest
difference against the slow float64 reference implementation.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date

import numpy as np

from ..models import get_model
from ..models.reference import reference_photometry


def _pin_one_thread() -> None:
    """Limit BLAS/OpenMP to one thread so the figure is per core."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn/sbi
        os.environ["OMP_NUM_THREADS"] = "1"


def _rate(model, theta, z, dtype, repeats: int) -> float:
    model.photometry(theta[:16], z[:16], dtype=dtype)  # builds the library, filters, caches
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.photometry(theta, z, dtype=dtype)
        best = min(best, time.perf_counter() - t0)
    return theta.shape[0] / best


def run(models, n: int, n_ref: int, repeats: int, nmf_dir=None, seed: int = 0) -> list[dict]:
    """Measure every model; returns one dict of figures per model."""
    _pin_one_thread()
    rows = []
    for name in models:
        kwargs = {"nmf_dir": nmf_dir} if name == "provabgs" else {}
        model = get_model(name, **kwargs)
        rng = np.random.default_rng(seed)
        theta = model.prior.sample(n, rng)
        z = rng.uniform(0.01, 0.3, n)
        row = {"model": name}
        for dtype in (np.float32, np.float64):
            row[f"models_per_s_{np.dtype(dtype).name}"] = _rate(model, theta, z, dtype, repeats)
        fast = model.photometry(theta[:n_ref], z[:n_ref])
        ref = np.array([reference_photometry(model, theta[i], z[i]) for i in range(n_ref)])
        row["max_abs_dmag"] = float(np.max(np.abs(2.5 * np.log10(fast / ref))))
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sedscale.bench sps", description=__doc__)
    parser.add_argument("--models", nargs="+", default=["provabgs", "dirichlet", "delayed_tau"])
    parser.add_argument("--n", type=int, default=20000, help="models per timing run")
    parser.add_argument("--n-ref", type=int, default=200, help="draws compared with the reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nmf-dir", default=None, help="PROVABGS NMF tables (else SEDSCALE_PROVABGS_DIR)")
    args = parser.parse_args(argv)
    rows = run(args.models, args.n, args.n_ref, args.repeats, args.nmf_dir)
    print(f"# sedscale.bench sps  {date.today()}  {platform.node()}  {platform.processor() or platform.machine()}")
    print(f"# one thread; n={args.n}; reference comparison on {args.n_ref} prior draws, z in [0.01, 0.3]")
    print(f"{'model':<12} {'float32 models/s':>17} {'float64 models/s':>17} {'max |dmag| vs ref':>18}")
    for r in rows:
        print(
            f"{r['model']:<12} {r['models_per_s_float32']:>17,.0f} {r['models_per_s_float64']:>17,.0f}"
            f" {r['max_abs_dmag']:>18.4f}"
        )
    return 0
