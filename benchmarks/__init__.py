"""Benchmarks of the engine against a simulated OpenAI-compatible server (see benchmarks/README.md)."""
