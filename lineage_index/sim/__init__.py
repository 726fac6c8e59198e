"""Simulated hub at the sketch level (no weights), for scale benchmarks of the index."""
