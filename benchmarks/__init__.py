"""Benchmarks: ``python -m benchmarks [NAME ...]`` runs the ``bench_*`` modules."""
