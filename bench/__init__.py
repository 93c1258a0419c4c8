"""Benchmark harness for hridaai-migrate: synthetic HridaAI data, COPY/executemany baselines, timed `migrate` runs.

Run ``python -m bench --help``; see bench/README.md.
"""
