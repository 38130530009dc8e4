"""Benchmarks: scripts run as `python bench/<name>.py`; `bench/run_all.py` runs them all."""
