"""Hyperparameter sweeps on Ray Tune: the search space, the trial that trains and writes to the database, and
the runner process (`python -m trainer sweeps`) that claims queued sweeps and drives Tune."""
