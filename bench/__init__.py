"""Benchmarks that print numbers (`make bench`); run each as `python bench/<name>.py`."""
