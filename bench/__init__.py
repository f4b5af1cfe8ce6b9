"""Benchmarks: real servers, real Postgres, printed figures (never asserted)."""
