"""Figures of posterior catalogs: one galaxy's fit (:mod:`.galaxy`) and a catalog at a glance (:mod:`.summary`)."""
from .galaxy import GalaxyPosterior, galaxy_posterior, plot_galaxy
from .summary import plot_summary

__all__ = ["GalaxyPosterior", "galaxy_posterior", "plot_galaxy", "plot_summary"]
