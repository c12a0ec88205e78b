"""Exception types raised by sedscale.

Every error a user can trigger with bad input or missing data derives from
:class:`SedscaleError`, so that command-line tools can report it in one line
instead of a traceback.
"""


class SedscaleError(Exception):
    """Base class of all sedscale errors."""


class MissingDataError(SedscaleError, FileNotFoundError):
    """External data (SSP grids, NMF bases, filter curves) could not be found."""


class ParameterError(SedscaleError, ValueError):
    """Parameters are malformed or outside the prior support."""


class ConfigError(SedscaleError, ValueError):
    """A configuration file or option is invalid."""


class InputChangedError(SedscaleError):
    """An input file changed (rewritten, replaced, removed) while a run was reading it."""
