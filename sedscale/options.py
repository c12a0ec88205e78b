"""Dataclasses built from option dicts (YAML files, sidecars, CLI): an unknown key is a one-line error."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

from .errors import ConfigError

__all__ = ["check_option_keys"]


def check_option_keys(cls: type, options: Iterable[str], what: str) -> None:
    """Refuse option names that are not fields of the dataclass ``cls``.

    Parameters
    ----------
    cls : dataclass type
    options : iterable of str
        The keys given.
    what : str
        What the options configure, for the message (``"flow"`` -> "unknown flow options [...]").

    Raises
    ------
    ConfigError
        Naming the unknown keys, sorted.
    """
    unknown = set(options) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {what} options {sorted(unknown)}")
