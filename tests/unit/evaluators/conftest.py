"""The evaluators' command line sets logging up for the process: every test here gets it back as it was."""

import logging

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() sets logging up for the process, on pytest's captured stderr: undo it after each test."""
    config, configured = structlog.get_config(), structlog.is_configured()
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    if configured:
        structlog.configure(**config)
    else:
        structlog.reset_defaults()
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)
