"""Band sets: the filters a photometric flow is trained on, as data.

A :class:`BandSet` names its bands (labels used in every column name:
``flux_<band>``, ``mag_<band>``, ``observed_<band>`` ...) and the astro-sedpy
filter of each.  Sets ship in ``sedscale/data/bands.yaml``; a model built
with ``bands=NAME`` projects its spectra onto that set, and simulation,
training, checkpoints and catalogs follow from the model's set::

    >>> from sedscale.observe.bands import get_band_set
    >>> get_band_set("galex_sdss").bands
    ('fuv', 'nuv', 'u', 'g', 'r', 'i', 'z')
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..errors import ConfigError

__all__ = ["BandSet", "DEFAULT_BAND_SET", "band_set_names", "get_band_set"]

#: The band set of SEDflow and of the default survey flow.
DEFAULT_BAND_SET = "sdss"


@dataclass(frozen=True)
class BandSet:
    """A named, ordered set of photometric bands.

    Attributes
    ----------
    name : str
    bands : tuple of str
        Band labels in x order (lower case; used in column names).
    filters : tuple of str
        astro-sedpy filter names, one per band.
    """

    name: str
    bands: tuple[str, ...]
    filters: tuple[str, ...]

    def __post_init__(self):
        if len(self.bands) != len(self.filters) or len(set(self.bands)) != len(self.bands) or not self.bands:
            raise ConfigError(f"band set {self.name!r} needs distinct band labels, one filter each")

    def __len__(self) -> int:
        return len(self.bands)

    def columns(self, prefix: str) -> tuple[str, ...]:
        """``prefix + band`` for every band, e.g. ``columns("flux_")``."""
        return tuple(f"{prefix}{b}" for b in self.bands)

    @property
    def masked_x_columns(self) -> tuple[str, ...]:
        """Band-masked flow inputs: magnitudes, log sigmas, observed indicators, then ``z``."""
        return self.columns("mag_") + self.columns("log_sigma_") + self.columns("observed_") + ("z",)

    @property
    def masked_x_units(self) -> dict[str, str]:
        return {
            **{c: "mag(AB)" for c in self.columns("mag_")}, **{c: "dex(mag)" for c in self.columns("log_sigma_")},
            **{c: "" for c in self.columns("observed_")}, "z": "",
        }

    def index(self, band: str) -> int:
        """Position of ``band``; a one-line error names the set's bands."""
        try:
            return self.bands.index(band)
        except ValueError:
            raise ConfigError(f"band {band!r} is not in band set {self.name!r} {self.bands}") from None


@lru_cache(maxsize=1)
def _registry() -> dict[str, BandSet]:
    import yaml

    text = resources.files("sedscale.data").joinpath("bands.yaml").read_text()
    return {name: BandSet(name, tuple(spec), tuple(spec.values())) for name, spec in yaml.safe_load(text).items()}


def band_set_names() -> tuple[str, ...]:
    """Names of the shipped band sets."""
    return tuple(_registry())


def get_band_set(name: str | BandSet | None = None) -> BandSet:
    """A shipped band set by name (None: :data:`DEFAULT_BAND_SET`).

    Raises
    ------
    ConfigError
        Unknown name (the message lists the shipped ones).
    """
    if isinstance(name, BandSet):
        return name
    name = DEFAULT_BAND_SET if name in (None, "", "None") else str(name)
    try:
        return _registry()[name]
    except KeyError:
        raise ConfigError(f"unknown band set {name!r}; shipped: {', '.join(band_set_names())}") from None
