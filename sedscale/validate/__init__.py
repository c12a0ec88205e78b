"""Validation of amortized posteriors: calibration diagnostics and the MCMC benchmark.

* :mod:`.calibration` -- SBC ranks, p-p / expected coverage (marginal
  central intervals, joint HPD, TARP), uniformity tests, pass/fail tables,
  stratification (pure functions on arrays).
* :mod:`.toy` -- a linear-Gaussian problem with an exact posterior.
* :mod:`.mcmc` -- zeus MCMC of single galaxies with the same forward model
  and prior, convergence diagnostics, comparison with the flow, the Dask
  work unit of the benchmark.
* :mod:`.report` -- ``bin/run_validate``: test set, report directory.

Example::

    from sedscale.validate import ValidationConfig, run_validation
    run_validation(ValidationConfig(flow="checkpoints/dirichlet_nsa", out="reports/dirichlet_nsa"))
"""
from .calibration import (
    Calibration,
    CalibrationThresholds,
    compute_calibration,
    coverage_table,
    expected_coverage,
    stratified_summary,
    summarize_calibration,
)
from .mcmc import (
    MCMCConfig,
    MCMCResult,
    PhotometryLogPosterior,
    compare_marginals,
    run_mcmc,
)
from .report import ValidationConfig, run_validation

__all__ = [
    "Calibration",
    "CalibrationThresholds",
    "MCMCConfig",
    "MCMCResult",
    "PhotometryLogPosterior",
    "ValidationConfig",
    "compare_marginals",
    "compute_calibration",
    "coverage_table",
    "expected_coverage",
    "run_mcmc",
    "run_validation",
    "stratified_summary",
    "summarize_calibration",
]
