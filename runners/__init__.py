"""Thin command-line runners, one per reasoning mode (named as in SpecReason and SpecLRM)."""
