"""Developer tools outside the coach package: fakes for tests, evals and benchmarks."""
