"""Benchmark of posterior training: ``python -m sedscale.bench train``.

For each flow/batch configuration it measures

* training throughput: seconds per epoch per 10^5 simulations, from a short
  run of optimisation steps (wall clock and process CPU time, which is less
  affected by other jobs on a shared machine);
* the validation log-prob reached after a fixed wall-clock budget (a real
  :func:`sedscale.train.train` run with ``max_time``);
* sampling speed of the resulting checkpoint: galaxies per second with
  1000 posterior samples each (:meth:`sedscale.infer.Posterior.draw`).

Without ``--sims`` a training set is simulated first (dirichlet model,
shipped NSA noise model).  Example::

    python -m sedscale.bench train --sims sims/dirichlet_nsa --budget 300
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Name -> (preset, flow overrides, training overrides) of the configurations compared.
CONFIGS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "sedflow/b50": ("sedflow", {}, {}),
    "sedflow/b500": ("sedflow", {}, {"batch_size": 500, "learning_rate": 1e-3}),
    "sedflow/b2000": ("sedflow", {}, {"batch_size": 2000, "learning_rate": 1e-3}),
    "digs/b50": ("digs", {}, {}),
    "maf5x128/b512": ("default", {"kind": "maf", "num_transforms": 5, "hidden_features": 128}, {}),
    "nsf5x64/b256": ("default", {"kind": "nsf", "num_transforms": 5, "hidden_features": 64}, {"batch_size": 256}),
    "nsf5x64/b1024": (
        "default",
        {"kind": "nsf", "num_transforms": 5, "hidden_features": 64},
        {"batch_size": 1024, "learning_rate": 2e-3},
    ),
    "default": ("default", {}, {}),
    "default/b2048": ("default", {}, {"batch_size": 2048, "learning_rate": 2e-3}),
}
DEFAULT_CONFIGS = (
    "sedflow/b50", "sedflow/b500", "sedflow/b2000", "digs/b50", "maf5x128/b512", "nsf5x64/b256", "default",
)


def config_for(name: str):
    """The TrainConfig of a named benchmark configuration."""
    from ..errors import ConfigError
    from ..train.config import resolve_config

    try:
        preset, flow, overrides = CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark configuration {name!r}; choose from {sorted(CONFIGS)}") from None
    return resolve_config(preset, flow=flow, **overrides)


def training_throughput(ts, config, seconds: float) -> dict:
    """Optimisation steps for ``seconds``; rows per second (wall and CPU)."""
    import torch

    from ..train.data import Split, compute_normalization, shuffled_batches
    from ..train.flows import build_flow

    norm, _, marginals = compute_normalization(ts, config.val_fraction, config.seed, config.flow.theta_transform)
    torch.manual_seed(config.seed)
    flow = build_flow(config.flow, ts.prior, norm, marginals).train()
    opt = torch.optim.Adam(flow.parameters(), lr=config.learning_rate)
    split = Split("train", config.val_fraction, config.seed)
    rows, steps = 0, 0
    wall0 = cpu0 = 0.0  # set when the warm-up ends
    for epoch in range(1_000_000):
        rng = np.random.default_rng(epoch)
        for theta, x in shuffled_batches(ts, split, config.batch_size, config.shuffle_buffer, rng):
            loss = -flow.log_prob(torch.from_numpy(theta), torch.from_numpy(x)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 5.0)
            opt.step()
            steps += 1
            if steps == 3:  # warm-up excluded
                wall0, cpu0 = time.perf_counter(), time.process_time()
            elif steps > 3:
                rows += theta.shape[0]
                if time.perf_counter() - wall0 > seconds:
                    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                    return {
                        "rows_per_s": rows / wall,
                        "s_per_epoch_per_1e5": 1e5 * wall / rows,
                        "cpu_s_per_epoch_per_1e5": 1e5 * cpu / rows,
                        "weights": sum(p.numel() for p in flow.parameters()),
                    }
    raise RuntimeError("unreachable")


def sampling_speed(checkpoint: Path, x: np.ndarray, n_samples: int = 1000, seconds: float = 20.0) -> dict:
    """Galaxies per second with ``n_samples`` each (wall and CPU).

    Galaxies are drawn in groups of 10 until ``seconds`` have passed or
    ``x`` is used up, so that slow flows (a big MAF) stay affordable; each
    group may spend ``seconds`` redrawing samples outside the prior (a
    briefly trained z-scored flow rejects many).
    """
    from ..infer import Posterior

    post = Posterior.load(checkpoint)
    post.draw(x[:2], 10)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    done, accepted, timed_out = 0, [], 0
    while done < x.shape[0] and time.perf_counter() - wall0 < seconds:
        result = post.draw(x[done : done + 10], n_samples, seed=done, max_time=seconds)
        accepted.append(result.acceptance)
        timed_out += int(result.timed_out.sum())
        done += result.samples.shape[0]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "galaxies_per_s": done / wall,
        "galaxies_per_cpu_s": done / cpu,
        "acceptance": float(np.nanmean(np.concatenate(accepted))),
        "timed_out": timed_out,
    }


def budget_run(sims, config, budget: float, workdir: Path, x_eval: np.ndarray) -> dict:
    """Train for ``budget`` seconds; best validation log-prob and sampling speed."""
    from dataclasses import replace

    from ..train import train

    result = train(sims, workdir, replace(config, max_time=budget), progress=False, overwrite=True, log=lambda s: None)
    out = {
        "budget_s": budget,
        "epochs": len(result.history),
        "best_val_log_prob": result.best_val_log_prob,
        "prior_log_prob": result.prior_log_prob,
    }
    out.update(sampling_speed(result.checkpoint, x_eval))
    return out


def simulate_set(n: int, out: Path, seed: int = 0) -> Path:
    """A dirichlet training set of ``n`` rows (shipped NSA noise model)."""
    from ..simulate import SimulationConfig, run_simulation

    run_simulation(SimulationConfig(model="dirichlet", n=n, out=out, seed=seed, partition_size=min(n, 10_000)))
    return out


def _eval_observations(ts, n: int) -> np.ndarray:
    from ..train.data import Split, read_chunks

    xs = [x for _, x, _ in read_chunks(ts, Split("val", 0.1, 0))]
    return np.concatenate(xs)[:n]


def format_table(rows: list[dict]) -> str:
    head = (
        f"{'config':16s} {'weights':>9s} {'s/epoch/1e5':>11s} {'cpu-s/ep/1e5':>12s} {'epochs':>6s} "
        f"{'val logp':>9s} {'gal/s':>7s} {'gal/cpu-s':>9s} {'accept':>6s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['config']:16s} {r['weights']:9d} {r['s_per_epoch_per_1e5']:11.1f} "
            f"{r['cpu_s_per_epoch_per_1e5']:12.1f} "
            f"{r.get('epochs', 0):6d} {r.get('best_val_log_prob', float('nan')):9.3f} "
            f"{r.get('galaxies_per_s', float('nan')):7.1f} {r.get('galaxies_per_cpu_s', float('nan')):9.1f} "
            f"{r.get('acceptance', float('nan')):6.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the training benchmark; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m sedscale.bench train", description=__doc__.split("\n")[0])
    p.add_argument("--sims", help="training set (default: simulate --n rows into a temporary directory)")
    p.add_argument("--n", type=int, default=20_000, help="rows to simulate without --sims (default 20000)")
    p.add_argument(
        "--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=sorted(CONFIGS), metavar="NAME",
        help=f"configurations (default: {' '.join(DEFAULT_CONFIGS)}; all: {' '.join(CONFIGS)})",
    )
    p.add_argument("--step-seconds", type=float, default=10.0, help="seconds of steps per throughput figure")
    p.add_argument("--budget", type=float, default=60.0, help="wall-clock training budget per configuration (s)")
    p.add_argument("--galaxies", type=int, default=100, help="galaxies in the sampling-speed figure")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)

    import torch

    from ..train import open_training_set

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sedscale-bench-train-") as tmp_name:
        tmp = Path(tmp_name)
        sims = Path(args.sims) if args.sims else simulate_set(args.n, tmp / "sims")
        ts = open_training_set(sims)
        x_eval = _eval_observations(ts, args.galaxies)
        print(f"training set {sims}: {ts.n_rows} rows; torch threads {args.threads}; budget {args.budget:.0f} s")
        rows = []
        for name in args.configs:
            config = config_for(name)
            row = {"config": name, "flow": config.flow.to_dict(), "batch_size": config.batch_size}
            row.update(training_throughput(ts, config, args.step_seconds))
            if args.budget > 0:
                row.update(budget_run(sims, config, args.budget, tmp / name.replace("/", "_"), x_eval))
            rows.append(row)
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"sims": str(sims), "n_rows": ts.n_rows, "results": rows}, indent=1))
    return 0
