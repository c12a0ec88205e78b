"""``sedscale <command> ...``: one entry point for every command-line tool.

Installed as the ``sedscale`` console script, the one name a ``pip install``
puts on the PATH (generic names such as ``run_catalog`` would clash with
other packages'), so that a non-editable install works from any directory;
the ``bin/`` scripts of a source checkout (``bin/run_catalog`` ...) are thin
wrappers of the same functions.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: command -> (module, function, what it does)
COMMANDS = {
    "simulate": ("sedscale.cli.simulate", "main", "simulate a training set on a Dask cluster (bin/run_simulate)"),
    "train": ("sedscale.cli.train", "main", "train a normalizing flow on a training set (bin/run_train)"),
    "validate": ("sedscale.cli.validate", "main", "calibration, verdict and MCMC agreement of a flow (bin/run_validate)"),
    "catalog": ("sedscale.cli.catalog", "main", "posterior catalogs of survey catalogs or spectra (bin/run_catalog)"),
    "compare-masses": ("sedscale.cli.compare", "main", "a catalog's masses against a reference (bin/compare_masses)"),
    "mock-catalog": ("sedscale.cli.catalog", "mock_main", "a MOCK NSA-format catalog with truths (bin/make_mock_catalog)"),
    "flows": ("sedscale.cli.flows", "main", "the trained flows usable by name, and what each serves"),
    "fit-noise-model": ("sedscale.cli.noise", "main", "fit the SEDflow noise model to NSA FITS files (bin/fit_noise_model)"),
    "plot": ("sedscale.cli.plot", "main", "one galaxy's fit (SED, SFH, corner) or a catalog's summary figure"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: sedscale <command> [options]   (sedscale <command> --help for its options; sedscale --version)",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, _, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sedscale <command> [options]``; returns the command's exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .._version import __version__

        print(f"sedscale {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"sedscale: unknown command {name!r}\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    from . import dispatched_as

    with dispatched_as(f"sedscale {name}"):
        return getattr(importlib.import_module(module), function)(rest)
