"""Dispatch ``python -m sedscale.bench <name> [options]`` to ``sedscale.bench.<name>.main``."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence

import sedscale.bench as _package


def available() -> list[str]:
    """Names of the benchmark modules."""
    return sorted(m.name for m in pkgutil.iter_modules(_package.__path__) if not m.name.startswith("_"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark named by ``argv[0]`` with the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    usage = f"usage: python -m sedscale.bench {{{','.join(names)}}} [options]   (<name> --help for options)"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"sedscale.bench: unknown benchmark {name!r}\n{usage}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"sedscale.bench.{name}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
