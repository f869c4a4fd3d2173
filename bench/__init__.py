"""Benchmarks of clipsearch, each against a baseline from the same run: `python -m bench --help`."""
