"""Serving: the /act runtime and its fast path, observation parsing, the policy cache."""
