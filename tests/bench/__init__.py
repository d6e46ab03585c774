"""Tests of the benchmark harness's own arithmetic (``bench/targets.py``)."""
