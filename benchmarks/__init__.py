"""Benchmark scripts: ``step_time.py`` (harness, contenders, report) and ``end_to_end.py``."""
