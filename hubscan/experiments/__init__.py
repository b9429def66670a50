"""Experiments built on the pipeline (training toy models, surveying them, analyzing the results):
downstream of every room (they use survey, query, correlate and report); the ``jobs/`` files parse
arguments and call them."""
