"""Throughput benchmarks of the preprocessing pipeline and the tf.data readers.

Run them with `python -m benchmarks`; each benchmark rewrites its own section
of `BENCHMARKS.md` (see `benchmarks.report`).
"""
