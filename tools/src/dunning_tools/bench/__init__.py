"""Benchmarks: `python -m dunning_tools.bench` (`make bench`) measures the whole system (`system`,
with `cancel`); the others measure one service's hot path on its own (`scheduler`, `notifier`,
`ingest_http`, `ingest_process`, `ingest_cpu`, `ingest_consume`), each runnable with `python -m`.
"""
