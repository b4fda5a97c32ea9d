"""Side-by-side benchmarks: ``python -m bench <scenario>`` (A and B in one run, one machine)."""
