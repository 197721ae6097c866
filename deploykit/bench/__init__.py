"""Measurement: runners, latency, cost, accuracy, parity, environment. May use ``export``."""
