"""Prompt sets shipped with spectra: one folder of YAML per set (format in README.md)."""
