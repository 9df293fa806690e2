"""The project's scripts: benchmarks (``bench/``), research runs (``research/``) and event tools (``data/``).

Run them as modules from the repository root, e.g. ``python -m scripts.bench.bench_predict``; they share
``scripts.common`` and use only the public names of the ``nowcast`` package.
"""
