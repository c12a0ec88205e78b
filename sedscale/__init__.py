"""sedscale: survey-scale amortized Bayesian SED modelling.

Pipeline: forward models (:mod:`sedscale.sps`, :mod:`sedscale.models`,
:mod:`sedscale.observe`) -> simulation -> training -> inference ->
validation, with :mod:`sedscale.cluster` and :mod:`sedscale.io` beside them.

From a notebook: :func:`fit` (posteriors for an in-memory table),
:class:`Posterior` (a trained flow: ``Posterior.load("dirichlet_dwarf")``),
:func:`plot_galaxy` and :func:`plot_summary` (figures of a posterior catalog).
"""
from ._version import __version__

__all__ = ["Posterior", "__version__", "fit", "plot_galaxy", "plot_summary"]

#: Public names imported on first use: ``import sedscale`` stays light (no torch, no matplotlib).
_LAZY = {"fit": ("sedscale.api", "fit"), "Posterior": ("sedscale.infer.posterior", "Posterior"),
         "plot_galaxy": ("sedscale.plots.galaxy", "plot_galaxy"), "plot_summary": ("sedscale.plots.summary", "plot_summary")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'sedscale' has no attribute {name!r}")
