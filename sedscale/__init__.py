"""sedscale: survey-scale amortized Bayesian SED modelling.

Pipeline: forward models (:mod:`sedscale.sps`, :mod:`sedscale.models`,
:mod:`sedscale.observe`) -> simulation -> training -> inference ->
validation, with :mod:`sedscale.cluster` and :mod:`sedscale.io` beside them.
"""
from ._version import __version__

__all__ = ["__version__"]
