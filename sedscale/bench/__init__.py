"""Benchmarks (not tests): ``python -m sedscale.bench <name> [options]``.

Each benchmark is a module ``sedscale.bench.<name>`` with a
``main(argv) -> int``; ``python -m sedscale.bench`` lists them.
"""
