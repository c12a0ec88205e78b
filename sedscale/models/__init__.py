"""Forward models: priors, star-formation histories, dust and batched SPS.

Use :func:`get_model` to build a model by name::

    from sedscale.models import get_model
    model = get_model("dirichlet")
    theta = model.prior.sample(1000, np.random.default_rng(0))
    flux = model.photometry(theta, z=np.full(1000, 0.03))   # nanomaggies
"""
from __future__ import annotations

from ..errors import ParameterError
from .base import ZSUN, ForwardModel, StarFormation
from .delayed_tau import DelayedTauModel
from .derived import DERIVED_UNITS
from .dirichlet import DirichletModel
from .priors import Marginal, Parameter, Prior, simplex_to_unit_cube, tabulated_marginal, unit_cube_to_simplex
from .provabgs import ProvabgsModel

MODELS = {m.name: m for m in (DirichletModel, ProvabgsModel, DelayedTauModel)}
#: The embedded default: needs no external data.
DEFAULT_MODEL = "dirichlet"

__all__ = [
    "DERIVED_UNITS",
    "DEFAULT_MODEL",
    "MODELS",
    "ZSUN",
    "DelayedTauModel",
    "DirichletModel",
    "ForwardModel",
    "Marginal",
    "Parameter",
    "Prior",
    "ProvabgsModel",
    "StarFormation",
    "get_model",
    "simplex_to_unit_cube",
    "tabulated_marginal",
    "unit_cube_to_simplex",
]


def get_model(name: str, **kwargs) -> ForwardModel:
    """Instantiate a forward model by registry name.

    Parameters
    ----------
    name : {"dirichlet", "provabgs", "delayed_tau"}
    **kwargs
        Model options (e.g. ``nmf_dir`` for provabgs, ``cosmology``).
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise ParameterError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return cls(**kwargs)
