"""spectra: parallel, speculative LLM reasoning over vLLM OpenAI-compatible servers."""

# The one place the version is written: pyproject.toml reads it, run manifests record it, and
# CHANGES.md says what each version changed for users.
__version__ = "0.2.0"
