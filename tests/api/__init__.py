"""Tests of the HTTP API (a package, so its conftest does not shadow the root one)."""
