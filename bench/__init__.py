"""Load benchmarks for Parley (run them as modules: ``python -m bench.<name>``)."""
