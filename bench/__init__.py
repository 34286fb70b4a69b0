"""Benchmarks (not part of the test run): `make bench`, or `python -m bench.<name>`."""
