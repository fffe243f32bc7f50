"""spectra: parallel, speculative LLM reasoning over vLLM OpenAI-compatible servers."""

__version__ = "0.1.0"
