"""Driver memory of survey-scale catalogs: ``python -m sedscale.bench driver``.

The driver of ``bin/run_catalog`` opens the catalog without reading its rows
(:mod:`sedscale.io.source`); the workers read their partitions.  This
benchmark checks that its memory does not grow with the catalog:

* ``--rows N1 N2 ...``: for each size, a Parquet dataset of N rows (a mock
  NSA catalog, tiled with new ids, in files of ``--rows-per-file``) runs
  through ``bin/run_catalog`` (local cluster, ``--workers`` processes,
  ``--n-samples`` samples, ``bin/run_catalog``'s partition size, single-file
  Parquet and FITS outputs) in a fresh process, which reports its own peak
  RSS for the whole run, assembly of the outputs included (``VmHWM``; the
  scheduler of the local cluster lives in it), the workers' peak RSS, and
  the wall time;
* ``--plan-rows N``: a dataset of N rows is planned only (files opened, run
  identity hashed, the first rows read), timed, with the planning process's
  peak RSS.

Example (the figures in docs/benchmarks.md)::

    python -m sedscale.bench driver --rows 10000 1000000 --plan-rows 100000000 --n-samples 10
    python -m sedscale.bench driver --rows 10000000 --plan-rows 0 --partition-size 5000
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_REPORT = "SEDSCALE_BENCH_DRIVER"
# Peak RSS from /proc (VmHWM): ru_maxrss survives exec and would report the benchmark's own peak.
_HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
_RUN = f"""
import json, sys, time
t0 = time.perf_counter()
import sedscale.infer.catalog as catalog
from sedscale.cli.catalog import main

workers = []
run_catalog = catalog.run_catalog

def measured(plan, client=None, **kwargs):
    summary = run_catalog(plan, client, **kwargs)
    if client is not None:  # the workers' peaks, before the cluster closes
        workers.extend(client.run(lambda: {_HWM}).values())
    return summary

catalog.run_catalog = measured
rc = main(sys.argv[1:])
print("{_REPORT}", json.dumps({{"rc": rc, "wall_s": time.perf_counter() - t0,
      "maxrss_mib": {_HWM}, "worker_maxrss_mib": max(workers, default=float("nan"))}}))
"""
_PLAN = f"""
import json, sys, time
from sedscale.infer.catalog import CatalogOptions, plan_catalog
t0 = time.perf_counter()
plan = plan_catalog(sys.argv[1], sys.argv[2], [sys.argv[3]], CatalogOptions(partition_size=int(sys.argv[4])),
                    mapping=["id=id", "z=z", "flux=flux_{{band}}", "flux_ivar=flux_ivar_{{band}}", "flux_unit=nanomaggy"])
print("{_REPORT}", json.dumps({{"wall_s": time.perf_counter() - t0, "n_galaxies": plan.n_galaxies,
      "n_partitions": plan.n_partitions, "maxrss_mib": {_HWM}}}))
"""


def build_parser() -> argparse.ArgumentParser:
    from ..infer.catalog_plan import DEFAULT_PARTITION_SIZE
    from ..shipped import default_flow

    p = argparse.ArgumentParser(prog="python -m sedscale.bench driver", description=__doc__.split("\n")[0])
    p.add_argument("--flow", default=default_flow(), help="checkpoint (default: the shipped default flow)")
    p.add_argument("--rows", type=int, nargs="*", default=[10_000, 1_000_000], help="catalog sizes to run")
    p.add_argument("--plan-rows", type=int, default=100_000_000, help="catalog size to plan only (0: skip)")
    p.add_argument("--rows-per-file", type=int, default=1_000_000, help="rows per Parquet file (default 10^6)")
    p.add_argument("--n-samples", type=int, default=10, help="posterior samples per galaxy (default 10)")
    p.add_argument("--partition-size", type=int, default=DEFAULT_PARTITION_SIZE,
                   help=f"rows per partition (default {DEFAULT_PARTITION_SIZE}, as bin/run_catalog)")
    p.add_argument("--formats", nargs="+", choices=("parquet", "fits"), default=["parquet", "fits"],
                   help="single-file outputs the run writes (default both)")
    p.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    p.add_argument("--base-rows", type=int, default=10_000, help="rows of the mock catalog that is tiled")
    p.add_argument("--scratch", help="directory for the datasets (default: a temporary one, removed)")
    p.add_argument("--out", help="write the results as JSON here")
    return p


def write_dataset(base, n_rows: int, rows_per_file: int, folder: Path) -> Path:
    """``n_rows`` rows of ``base`` (a canonical frame) tiled with ids 0..n-1, as Parquet files in ``folder``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    columns = [c for c in base.columns if c != "id"]
    values = {c: base[c].to_numpy() for c in columns}
    for k, start in enumerate(range(0, n_rows, rows_per_file)):
        n = min(rows_per_file, n_rows - start)
        pick = np.arange(start, start + n) % len(base)
        table = pa.table({"id": np.arange(start, start + n, dtype=np.int64), **{c: values[c][pick] for c in columns}})
        pq.write_table(table, folder / f"part-{k:05d}.parquet", row_group_size=100_000)
    return folder


def _report(cmd: list[str]) -> dict:
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_REPORT)]
    report = json.loads(lines[-1][len(_REPORT):]) if lines else {}
    if done.returncode or not lines or report.get("rc", 0):
        raise SystemExit(f"benchmark run failed ({done.returncode}, {report}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from ..infer.catalog_plan import training_z_range
    from ..infer.mock import write_mock_nsa
    from ..infer.posterior import Posterior
    from ..io.catalog import read_catalog

    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sedscale-bench-driver-", dir=args.scratch) as tmp_name:
        tmp = Path(tmp_name)
        post = Posterior.load(args.flow)
        lo, hi = training_z_range(post.metadata)
        mock = write_mock_nsa(tmp / "mock_nsa.fits", n=args.base_rows, seed=7, model=post.model_name,
                              z_range=(max(lo, 0.01), min(hi, 0.3)))
        base = read_catalog(mock)
        base = base[[c for c in base.columns if c == "id" or c == "z" or c.startswith("flux_")]]
        mapping = ["id=id", "z=z", "flux=flux_{band}", "flux_ivar=flux_ivar_{band}", "flux_unit=nanomaggy"]
        results: dict = {"machine": platform.node(), "date": time.strftime("%Y-%m-%d"), "runs": []}
        for n in args.rows:
            data = write_dataset(base, n, args.rows_per_file, tmp / f"rows-{n}")
            outputs = [arg for fmt in args.formats for arg in ("--out", str(tmp / f"post-{n}.{fmt}"))]
            r = _report([sys.executable, "-c", _RUN, str(data), "--flow", str(args.flow), *outputs,
                         "--n-samples", str(args.n_samples), "--partition-size",
                         str(args.partition_size), "--cluster", "local", "--n-workers", str(args.workers),
                         "--no-progress", "--columns", *mapping])
            r.update(rows=n, galaxies_per_s=n / r["wall_s"])
            results["runs"].append(r)
            print(f"run  {n:>11,} rows: driver peak RSS {r['maxrss_mib']:7.0f} MiB, worker "
                  f"{r['worker_maxrss_mib']:6.0f} MiB, {r['wall_s']:7.1f} s "
                  f"({r['galaxies_per_s']:.0f} galaxies/s incl. start-up, {args.n_samples} samples)", flush=True)
        if len(results["runs"]) >= 2:
            ratio = results["runs"][-1]["maxrss_mib"] / results["runs"][0]["maxrss_mib"]
            results["rss_ratio"] = ratio
            print(f"driver peak RSS ratio {args.rows[-1]:,} / {args.rows[0]:,} rows: {ratio:.2f} (goal <= 1.5)")
        if args.plan_rows:
            t0 = time.perf_counter()
            data = write_dataset(base, args.plan_rows, args.rows_per_file, tmp / f"plan-{args.plan_rows}")
            written = time.perf_counter() - t0
            r = _report([sys.executable, "-c", _PLAN, str(data), str(args.flow), str(tmp / "plan.parquet"),
                         str(args.partition_size)])
            results["plan"] = dict(r, rows=args.plan_rows, files=len(list(data.glob("*.parquet"))))
            print(f"plan {args.plan_rows:>11,} rows in {results['plan']['files']} files (written in {written:.0f} s): "
                  f"{r['wall_s']:.1f} s, peak RSS {r['maxrss_mib']:.0f} MiB, {r['n_partitions']:,} partitions "
                  "(goal < 60 s, < 1024 MiB)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0
