"""Logging: a traceback on the console shows no local variable of its frames (a request's headers
hold the server's API key)."""

import pytest
import structlog

from engine.logging import configure_logging

KEY = "k-in-a-local-8d2e"


@pytest.fixture(autouse=True)
def _restore_structlog():
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.mark.parametrize("json", [False, True])
def test_a_logged_traceback_names_the_error_but_no_local_variable(capsys, json):
    configure_logging(json=json)

    def send(headers):
        raise RuntimeError("the request failed")

    try:
        send({"Authorization": f"Bearer {KEY}"})
    except RuntimeError:
        structlog.get_logger("test").exception("track_error")
    err = capsys.readouterr().err
    assert "RuntimeError: the request failed" in err and "track_error" in err
    assert KEY not in err
