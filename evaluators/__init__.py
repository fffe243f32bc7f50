"""Evaluators: turn run folders into accuracy, pass@k, maj@k, cost figures, comparisons and reports.

Modules: `runs` (read run folders), `metrics` (pure numbers), `summary` (one run's
figures), `compare` (runs against a baseline), `tables` and `report` (outputs),
`evaluate` (the command line).
"""
