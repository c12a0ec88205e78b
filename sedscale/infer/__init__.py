"""Inference with a trained amortized posterior.

:class:`Posterior` loads a checkpoint written by ``bin/run_train``
(:mod:`sedscale.train`) and samples q(theta | x) for many galaxies at once.
"""
from .posterior import Posterior, SampleResult

__all__ = ["Posterior", "SampleResult"]
