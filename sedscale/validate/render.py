"""Rendering of a validation report: Parquet and Markdown files, tables, ``summary.md``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from ..io.atomic import atomic_write_bytes, write_table
from .diagnostics import verdict


def write_parquet(df: pd.DataFrame, path: Path, metadata: dict | None = None) -> Path:
    """Write a frame as Parquet atomically (temporary file + rename)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    write_table(path, table)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(Path(path), text.encode())
    return Path(path)


def _fmt(v, spec=".3g") -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "-" if not np.isfinite(v) else format(float(v), spec)
    return str(v)


def markdown_table(df: pd.DataFrame, columns, formats=None) -> str:
    """A pipe table of ``columns`` of ``df`` (``formats``: column -> format spec)."""
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], formats.get(c, ".3g")) for c in columns) + " |")
    return "\n".join(lines)


def speedup_table(mcmc: pd.DataFrame) -> pd.DataFrame:
    """The MCMC vs ANPE cost table, one row per galaxy plus the median."""
    cols = ["galaxy_id", "n_walkers", "n_iter", "n_model_evals", "evals_per_s", "evals_per_cpu_s", "mcmc_wall_s", "mcmc_cpu_s",
            "extrapolated_sedflow_wall_s", "anpe_samples", "anpe_wall_s", "anpe_cpu_s", "speedup_cpu", "speedup_wall"]
    table = mcmc[cols].astype({"galaxy_id": str})
    med = table.drop(columns="galaxy_id").median().to_frame().T.assign(galaxy_id="median")
    return pd.concat([table, med[cols]], ignore_index=True)


def _strata_digest(strata: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (var, b), sub in strata.groupby(["stratum", "bin"], sort=False):
        params = sub[~sub["parameter"].str.startswith("joint_")]
        failed = params.loc[~params["passed"], "parameter"].tolist()
        worst = params.loc[params["max_coverage_error"].idxmax()]
        rows.append(dict(stratum=var, bin=f"[{sub['low'].iloc[0]:.3g}, {sub['high'].iloc[0]:.3g}]",
                         n=int(sub["n"].iloc[0]), passed=f"{len(params) - len(failed)}/{len(params)}",
                         failed=", ".join(failed) or "-",
                         worst=f"{worst['parameter']} ({worst['max_coverage_error']:.3f})"))
    return pd.DataFrame(rows)


def render_summary(info: dict, calib: pd.DataFrame, strata: pd.DataFrame, ppc: dict, mcmc: pd.DataFrame | None,
                   comparison: pd.DataFrame | None) -> str:
    """The markdown summary of a validation run."""
    th = info["thresholds"]
    n_params = int((~calib["parameter"].str.startswith("joint_")).sum())
    n_pass = int(calib.loc[~calib["parameter"].str.startswith("joint_"), "passed"].sum())
    out = [
        f"# Validation of `{info['flow']}`",
        "",
        (f"- model `{info['model']}`, flow `{info['flow_kind']}`, {info['n_params']} parameters; "
        f"x = {', '.join(info['x_columns'])}"),
        (f"- test set: {info['n_test']} fresh simulations (seed {info['seed']}, redshifts {info['redshift']}), "
        f"{info['n_samples']} posterior samples each; {info['n_used']} used "
        f"({info['n_test'] - info['n_used']} dropped: incomplete sampling)"
        + (f"; observed in {', '.join(info['observed_bands'])} only" if info.get("observed_bands") else "")),
        (f"- amortized sampling: {info['anpe_wall_s']:.1f} s wall, {info['anpe_cpu_s_per_galaxy'] * 1e3:.1f} CPU-ms per "
        f"galaxy for {info['n_samples']} samples (batched, {info['workers']})"),
        f"- **Verdict: {verdict(calib, ppc)['text']}**",
        (f"- **{n_pass}/{n_params} parameters pass** (p >= {th['p_value']:g} for the chi2 test of the "
        f"{th['n_bins']}-bin rank histogram, the KS test of the fractional ranks and the KS test of the central "
        "credibility levels; see docs/validation.md)"),
        "",
        "## Calibration per parameter",
        "",
        markdown_table(calib, ["parameter", "n", "contraction", "p_chi2", "p_ks", "p_ks_width", "max_coverage_error", "mean_u",
                               "mean_width_level", "passed", "verdict"]),
        "",
        ("`mean_u` > 0.5: posterior below the truth; `mean_width_level` > 0.5: over-confident (too narrow); "
        "`contraction`: 1 - posterior/prior variance (0: the posterior is the prior, which is calibrated too)."),
        "Plots: `rank_histograms.png`, `pp_plot.png`, `coverage.png`, `true_vs_recovered.png`.",
        "",
        "## Calibration by redshift, magnitude, S/N (and number of bands)",
        "",
        markdown_table(_strata_digest(strata), ["stratum", "bin", "n", "passed", "failed", "worst"]),
        "",
        "Full table: `strata.parquet`; plot: `strata.png` (largest coverage error per bin).",
        "",
        "## Posterior predictive check",
        "",
        (f"chi2 over {ppc['dof']} bands of the posterior-median SED against the observed fluxes: median "
        f"{ppc['median_chi2_median_sed']:.2f} (true SED: {ppc['median_chi2_true_sed']:.2f}; chi2({ppc['dof']}) median "
        f"{stats.chi2.median(ppc['dof']):.2f}); fraction above the chi2({ppc['dof']}) 99th percentile: "
        f"{ppc['frac_above_p99_median_sed']:.3f} (true SED: {ppc['frac_above_p99_true_sed']:.3f}). Plot: `ppc_chi2.png`. "
        "The median SED combines per-parameter medians and misfits when parameters are degenerate (e.g. SFH "
        "fractions that photometry does not constrain)."),
        "",
        (f"Posterior predictive p-value of the chi2 ({ppc['ppc_draws']} posterior draws per galaxy, replicated "
        f"fluxes with the observed errors): mean {ppc['mean_p_ppc']:.3f}, median {ppc['median_p_ppc']:.3f}, "
        f"fraction of galaxies with p < 0.01: {ppc['frac_p_ppc_below_0_01']:.3f}. Over a test set the mean is 0.5 "
        "for the exact posterior; lower means the posterior's SEDs fit the data worse than the truth's."),
    ]
    if mcmc is not None and len(mcmc):
        assert comparison is not None  # the marginal comparison comes with the MCMC results
        cfg = info["mcmc_config"]
        out += [
            "",
            "## MCMC comparison",
            "",
            (f"{cfg['sampler']}: {cfg['n_walkers']} walkers x {cfg['n_iter']} iterations, {cfg['burn_in']} burn-in "
            f"(SEDflow: 30 x 10,000, 2,000), same forward model, prior, Gaussian flux likelihood; one task per "
            f"galaxy ({info['workers']}), amortized posterior ({info['anpe_samples']} samples) timed in the same task. "
            f"Galaxies: {info['mcmc_source']}."),
            "",
            markdown_table(mcmc, ["galaxy_id", "max_rhat", "max_tau", "iter_per_tau", "converged",
                                  "max_abs_delta_median_sigma", "min_width_ratio", "max_width_ratio", "min_ks_p"]),
            "",
            "Per parameter (median over galaxies) of ANPE vs MCMC: (median difference / MCMC sigma, width ratio):",
            "",
            markdown_table(
                comparison.groupby("parameter", sort=False)[["delta_median_sigma", "width_ratio", "ks_p"]]
                .median().reset_index(),
                ["parameter", "delta_median_sigma", "width_ratio", "ks_p"],
            ),
            "",
            "### Speed-up (measured side by side on the same worker)",
            "",
            markdown_table(speedup_table(mcmc), ["galaxy_id", "n_walkers", "n_iter", "n_model_evals", "evals_per_s",
                                                 "evals_per_cpu_s", "mcmc_wall_s", "mcmc_cpu_s", "extrapolated_sedflow_wall_s",
                                                 "anpe_samples", "anpe_wall_s", "anpe_cpu_s", "speedup_cpu"]),
            "",
            "`extrapolated_sedflow_wall_s`: this run's cost per walker-step scaled to 30 walkers x 10,000 iterations.",
            "Corner plots: `corner_<galaxy_id>.png` (black MCMC, blue ANPE, red truth).",
        ]
    return "\n".join(out) + "\n"


def write_summary(out: Path, info, calib, strata, ppc, mcmc_df, comparison) -> None:
    write_text(out / "summary.md", render_summary(info, calib, strata, ppc, mcmc_df, comparison))
    write_text(out / "validation.json", json.dumps(info, indent=1, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
