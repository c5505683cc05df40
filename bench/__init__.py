"""Benchmarks of ablate against TRL and a hand-written floor: ``python -m bench`` (see
bench/README.md). Not part of the installed package; run from the repository root."""
